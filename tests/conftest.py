import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Every test session gets its own cache: no state leaks from a user's machine."""
    previous = os.environ.get("DEFAX_CACHE")
    os.environ["DEFAX_CACHE"] = str(tmp_path_factory.mktemp("defax_cache"))
    yield
    if previous is None:
        os.environ.pop("DEFAX_CACHE", None)
    else:
        os.environ["DEFAX_CACHE"] = previous


@pytest.fixture(scope="session")
def demo_root():
    """The default demo dataset, generated once per test session."""
    from defax_keras.data.demo import demo_dataset

    return demo_dataset()


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory):
    """A small demo set for tests that only need a few images."""
    from defax_keras.data.demo import demo_dataset

    return demo_dataset(
        tmp_path_factory.mktemp("tiny_demo") / "demo",
        per_class={"train": 16, "valid": 8, "test": 8},
        image_size=48,
    )
