"""The public Python API: `import defax_keras as dk` reaches every name, each is documented, its example runs.

The examples in the docstrings are executed here with `doctest`, on a small
trained model and the tiny demo set (the names `data`, `run_dir`,
`model_path`, `images` and `workdir` are given to them), so an example
that drifts from the code fails the suite.
"""

import doctest
import inspect

import pytest

import defax_keras as dk

PUBLIC = (
    "build_model",
    "list_models",
    "load_model",
    "load_source",
    "make_dataset",
    "train",
    "evaluate",
    "explain",
    "calibrate",
    "export",
    "load_predictor",
    "compare",
)


@pytest.mark.parametrize("name", PUBLIC)
def test_public_function_is_documented_with_args_returns_and_an_example(name):
    assert name in dk.__all__
    doc = inspect.getdoc(getattr(dk, name))
    for section in ("Args:", "Returns:", "Example:"):
        assert section in doc, f"dk.{name} docstring lacks {section}"
    assert ">>> " in doc


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'fit_everything'"):
        dk.fit_everything  # noqa: B018


@pytest.fixture(scope="module")
def example_globals(tiny_demo, tmp_path_factory):
    """What the examples refer to: a finished run of simple_cnn_nano on the tiny demo set, and images."""
    import keras

    workdir = tmp_path_factory.mktemp("examples")
    keras.utils.set_random_seed(0)
    result = dk.train("simple_cnn_nano", data=str(tiny_demo), epochs=1, output=str(workdir / "fixture-run"), verbose=0)
    images = sorted((tiny_demo / "real_vs_fake" / "real-vs-fake" / "test" / "fake").glob("*.jpg"))[:2]
    return {
        "data": str(tiny_demo),
        "run_dir": str(result.run_dir),
        "model_path": str(result.model_path),
        "images": [str(p) for p in images],
        "workdir": workdir,
    }


def _documented_modules():
    import importlib
    import pkgutil

    for info in pkgutil.walk_packages(dk.__path__, "defax_keras."):
        if info.name.endswith("__main__"):
            continue  # running it is the command line
        yield importlib.import_module(info.name)


def _examples():
    finder = doctest.DocTestFinder()
    found = {}
    for module in _documented_modules():
        for test in finder.find(module, module.__name__):
            if test.examples and test.name not in found:
                found[test.name] = test
    return found


def test_every_public_function_has_an_example_that_runs_here():
    names = set(_examples())
    for name in PUBLIC:
        function = getattr(dk, name)
        assert f"{function.__module__}.{function.__qualname__}" in names, f"dk.{name}'s example is not collected"


def test_every_docstring_example_in_the_package_runs(example_globals, monkeypatch):
    """All `>>>` examples of the package, the public functions' included, against a real run (no +SKIP)."""
    monkeypatch.chdir(example_globals["workdir"])
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    examples = _examples()
    assert len(examples) >= len(PUBLIC)
    for test in examples.values():
        assert not any(example.options.get(doctest.SKIP) for example in test.examples), f"{test.name} skips an example"
        test.globs.update(example_globals)
        runner.run(test)
    assert runner.failures == 0, f"{runner.failures} docstring example(s) failed (output above)"


def test_explain_and_export_stay_functions_after_their_subpackages_are_imported():
    import defax_keras.explain.explain  # noqa: F401  (sets the subpackage on its parent)
    import defax_keras.export.convert  # noqa: F401

    assert callable(dk.explain) and dk.explain.__name__ == "explain" and dk.explain.__module__ == "defax_keras.explain.explain"
    assert callable(dk.export) and dk.export.__module__ == "defax_keras.export.convert"
    from defax_keras.export import export_saved_model  # the subpackages themselves still import

    assert callable(export_saved_model)
