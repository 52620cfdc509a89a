"""EigenCAM (keras.ops, every backend) against a NumPy SVD reference, and blank maps that say so (figure, summary, CLI)."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import blank_gradcam_model, demo_test_images, run_on_backend
from PIL import Image

from defax_keras.explain.cam import blank_maps, eigen_cam
from defax_keras.explain.explain import Explainer, explain, resolve_methods, write_explanations
from defax_keras.explain.figures import blank_notice
from defax_keras.models import build_model


def numpy_eigen_cam(features) -> np.ndarray:
    """The reference: per image, centred [h*w, C] activations onto their first right singular vector
    (np.linalg.svd, float64), flipped when |min| > |max|, then ReLU."""
    features = np.asarray(features, np.float64)
    maps = []
    for activations in features:
        height, width, channels = activations.shape
        matrix = activations.reshape(-1, channels)
        matrix = matrix - matrix.mean(axis=0)
        _, _, vt = np.linalg.svd(matrix, full_matrices=False)
        projection = matrix @ vt[0]
        if abs(projection.min()) > abs(projection.max()):
            projection = -projection
        maps.append(np.maximum(projection, 0).reshape(height, width))
    return np.stack(maps)


@pytest.fixture(scope="module")
def defax_nano():
    keras.utils.set_random_seed(1)
    return build_model("defax_nano")


def _relative_close(ours, reference, tolerance=1e-4):
    scale = np.abs(reference).reshape(len(reference), -1).max(axis=1).reshape(-1, 1, 1)
    assert (scale > 0).all()
    difference = np.abs(ours - reference) / scale
    assert difference.max() < tolerance, difference.max()


# --------------------------------------------------------------------------- EigenCAM


def test_eigen_cam_equals_a_numpy_svd_reference_on_both_defax_branches(defax_nano, demo_root):
    _, images = demo_test_images(demo_root, 2, 112)
    explainer = Explainer(defax_nano, batch_size=8)
    for target in ("local", "global"):  # EfficientNet's map and Swin's tokens as a grid
        features = keras.ops.convert_to_numpy(explainer.feature_model(target)(images, training=False))
        raw = explainer.raw_maps("eigencam", target, images, [0, 1, 1, 0])
        assert raw.shape == (4, 7, 7) and raw.min() >= 0
        _relative_close(raw, numpy_eigen_cam(features))
        # the map is the image's own, and a heat map in [0, 1]
        assert np.abs(raw[0] / raw[0].max() - raw[1] / raw[1].max()).max() > 1e-3
        heat = explainer.heat("eigencam", raw, 112)
        assert heat.shape == (4, 112, 112) and heat.min() >= 0 and heat.max() <= 1


def test_eigen_cam_fixes_the_sign_the_svd_leaves_open():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(3, 5, 6, 8)).astype("float32")
    features[0, 1, 2] += 40.0  # one strong position: the dominant side of the component is where it is
    features[1, 3, 4] -= 40.0  # the same, with the activations pointing the other way
    ours = keras.ops.convert_to_numpy(eigen_cam(features))
    _relative_close(ours, numpy_eigen_cam(features))
    assert np.unravel_index(ours[0].argmax(), ours[0].shape) == (1, 2)
    assert np.unravel_index(ours[1].argmax(), ours[1].shape) == (3, 4)
    # either sign of the singular vector gives the same map: negating the activations changes nothing
    np.testing.assert_allclose(keras.ops.convert_to_numpy(eigen_cam(-features)), ours, rtol=1e-4, atol=1e-4 * ours.max())
    # and without the sign rule the reference map would be the other side for one of them
    matrix = features[0].reshape(-1, 8).astype(np.float64)
    matrix -= matrix.mean(axis=0)
    projection = matrix @ np.linalg.svd(matrix)[2][0]
    assert abs(projection.max()) != pytest.approx(abs(projection.min()))


def test_eigen_cam_is_in_all_and_needs_no_gradient_method(defax_nano):
    columns = resolve_methods(defax_nano, ["all"], "both")
    assert ("eigencam", "local") in columns and ("eigencam", "global") in columns
    assert resolve_methods(build_model("facevit_nano"), ["eigencam"], "both") == [("eigencam", "global")]


EIGEN_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import keras, numpy as np
    import defax_keras.models
    from defax_keras.explain.explain import Explainer, resolve_methods

    model = keras.saving.load_model(sys.argv[1], safe_mode=True)
    images = np.load(sys.argv[2])["images"]
    explainer = Explainer(model, batch_size=8)
    maps = {t: explainer.raw_maps("eigencam", t, images, [0] * len(images)) for t in ("local", "global")}
    np.savez(sys.argv[3], **maps)
    print(json.dumps({"backend": keras.backend.backend(), "columns": resolve_methods(model, ["eigencam"], "both")}))
    """
)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_eigen_cam_on_jax_and_torch_equals_the_numpy_reference(backend, defax_nano, demo_root, tmp_path):
    _, images = demo_test_images(demo_root, 1, 112)
    defax_nano.save(tmp_path / "model.keras")
    np.savez(tmp_path / "inputs.npz", images=images)
    report = run_on_backend(backend, EIGEN_SCRIPT, str(tmp_path / "model.keras"), str(tmp_path / "inputs.npz"), str(tmp_path / "maps.npz"))
    assert report["backend"] == backend
    assert [tuple(c) for c in report["columns"]] == [("eigencam", "local"), ("eigencam", "global")]
    theirs = np.load(tmp_path / "maps.npz")
    explainer = Explainer(defax_nano, batch_size=8)
    for target in ("local", "global"):
        features = keras.ops.convert_to_numpy(explainer.feature_model(target)(images, training=False))
        _relative_close(theirs[target], numpy_eigen_cam(features), tolerance=1e-3)


# --------------------------------------------------------------------------- blank maps


@pytest.fixture(scope="module")
def blank_model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("blank") / "simple_cnn_nano.keras"
    blank_gradcam_model().save(path)
    return path


def _copy_images(demo_root, folder: Path, per_class: int = 1) -> Path:
    test = Path(demo_root) / "real_vs_fake" / "real-vs-fake" / "test"
    for cls in ("real", "fake"):
        (folder / cls).mkdir(parents=True)
        for source in sorted((test / cls).iterdir())[:per_class]:
            (folder / cls / source.name).write_bytes(source.read_bytes())
    return folder


def test_blank_maps_are_flagged_in_the_result_summary_and_figures(blank_model_path, demo_root, tmp_path):
    images = _copy_images(demo_root, tmp_path / "images")
    result = explain(blank_model_path, [images], methods=["gradcam", "eigencam"], explained_class="fake")
    assert not result.raw_maps["gradcam-local"].any()
    assert blank_maps(result.raw_maps["gradcam-local"]).all() and not blank_maps(result.raw_maps["eigencam-local"]).any()
    output = write_explanations(result, tmp_path / "out")
    summary = json.loads((output / "summary.json").read_text())
    notice = blank_notice("fake")
    assert notice == "no positive evidence for fake: the map is all zero"
    for record in summary["images"]:
        assert record["blank"] == ["gradcam-local"]
        assert record["notes"] == {"gradcam-local": notice}
        blank_png = Image.open(output / record["files"]["gradcam-local"])
        assert blank_png.text.get("Description") == notice  # the notice drawn on the figure, also in its metadata
        assert "Description" not in Image.open(output / record["files"]["eigencam-local"]).text


def test_explain_command_notes_blank_maps_and_reports_eigencam_faithfulness(blank_model_path, demo_root, tmp_path):
    images = _copy_images(demo_root, tmp_path / "images")
    output = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "defax_keras.cli", "explain", "-m", str(blank_model_path), "-i", str(images), "-o", str(output),
         "--method", "gradcam,eigencam", "--faithfulness"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((output / "summary.json").read_text())
    notes = [line for line in result.stderr.splitlines() if line.startswith("note: ")]
    assert len(notes) == 2, result.stderr
    for record in summary["images"]:
        expected = f"note: gradcam-local of {Path(record['path']).name}: {blank_notice(record['explained_class'])}"
        assert expected in notes
        assert record["blank"] == ["gradcam-local"]
    report = json.loads((output / "faithfulness.json").read_text())
    assert set(report["all"]) == {"gradcam-local", "eigencam-local", "random"}
    assert "eigencam-local" in result.stdout
