"""Explanations: explain models, Grad-CAM (tf-keras-vis and keras.ops on every backend), LIME, attention, faithfulness, CLI."""

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import demo_test_images, numpy_attention_scores, run_on_backend

from defax_keras.data import load_source, make_dataset
from defax_keras.errors import DefaxError
from defax_keras.explain import faithfulness as faith
from defax_keras.explain.cam import keras_grad_cam, map_gradients, normalize_maps, tf_keras_vis_cam, upsample
from defax_keras.explain.explain import Explainer, resolve_methods
from defax_keras.explain.lime import BatchedClassifier, lime_explanation
from defax_keras.explain.model import attention_model, build_explain_model, explain_targets, resolve_targets
from defax_keras.models import build_model
from defax_keras.models.baselines import BackboneClassifier


@pytest.fixture(scope="module")
def defax_nano():
    """An untrained defax_nano whose cross-attention is peaked (shares 0.001 to 0.1), as a trained one's is.

    The untrained EfficientNet's map is ~1e-4 in size, so its attention is uniform to 1e-4; scaling
    the key projection makes every region's share matter in the tests below.
    """
    keras.utils.set_random_seed(1)
    model = build_model("defax_nano")
    keys = model.get_layer("fusion").attention.key_dense
    keys.kernel.assign(3e4 * keys.kernel)
    return model


@pytest.fixture(scope="module")
def demo_images(demo_root):
    return demo_test_images(demo_root, 4, 112)


@pytest.fixture(scope="module")
def trained_cnn(demo_root, tmp_path_factory):
    """simple_cnn_nano trained on the demo set (~88% test accuracy after 8 epochs, under a minute)."""
    keras.utils.set_random_seed(0)
    model = build_model("simple_cnn_nano")
    model.compile()
    source = load_source(demo_root)
    model.fit(make_dataset(source, "train", image_size=112, batch_size=32, shuffle=True, seed=0), epochs=8, verbose=0)
    path = tmp_path_factory.mktemp("explain_model") / "simple_cnn_nano.keras"
    model.save(path)
    return path, model


# --------------------------------------------------------------------------- explain models


@pytest.mark.parametrize(
    "name, targets, grid",
    [
        ("defax_nano", ("local", "global"), (7, 7)),
        ("gsu_tfr_nano", ("global",), (7, 7)),
        ("facevit_nano", ("global",), (7, 7)),
        ("resnet50_nano", ("local",), (4, 4)),
        ("simple_cnn_nano", ("local",), (14, 14)),
    ],
)
def test_explain_model_reproduces_the_detector_and_exposes_its_map(name, targets, grid):
    keras.utils.set_random_seed(0)
    model = build_model(name)
    images = np.random.default_rng(0).uniform(0, 255, (2, 112, 112, 3)).astype("float32")
    expected = model.predict(images, verbose=0)
    assert explain_targets(model) == targets
    for target in targets:
        logits = build_explain_model(model, target).predict(images, verbose=0)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.ops.softmax(logits)), expected, atol=1e-5)
        offset_model = build_explain_model(model, target, offset=True)
        logits, feature_map = offset_model.predict([images, np.zeros((2, *grid, offset_model.inputs[1].shape[-1]), "float32")], verbose=0)
        assert feature_map.shape[1:3] == grid
        np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.ops.softmax(logits)), expected, atol=1e-5)


def test_models_without_a_map_or_target_get_one_line_errors():
    tokens = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Reshape((96, 32)), keras.layers.Dense(8)], name="backbone")
    model = BackboneClassifier(tokens, pooling="avg", name="odd_tokens")
    assert explain_targets(model) == ()
    with pytest.raises(DefaxError, match="no spatial feature map.*lime"):
        resolve_targets(model, "both")
    with pytest.raises(DefaxError, match="has no local feature map; it can be explained at: global"):
        resolve_targets(build_model("gsu_tfr_nano"), "local")
    with pytest.raises(DefaxError, match="no cross-attention"):
        attention_model(build_model("resnet50_nano"))
    with pytest.raises(DefaxError, match="unknown method 'gradcamm'"):
        resolve_methods(build_model("resnet50_nano"), ["gradcamm"], "both")
    # `all` keeps what the model supports: LIME only, no error
    assert resolve_methods(model, ["all"], "both") == [("lime", None)]


# --------------------------------------------------------------------------- Grad-CAM


def test_grad_cam_matches_a_numpy_reference_and_tf_keras_vis(trained_cnn, demo_images):
    _, model = trained_cnn
    _, images = demo_images
    classes = [0, 1, 1, 0, 1, 0, 1, 1]
    explain_model = build_explain_model(model, "local")
    offset_model = build_explain_model(model, "local", offset=True)
    reference = tf_keras_vis_cam("gradcam", explain_model, images, classes)
    ours = keras_grad_cam(offset_model, images, classes)
    assert reference.shape == ours.shape == (8, 14, 14)
    assert reference.min() >= 0 and reference.max() > 0
    np.testing.assert_allclose(upsample(ours, 112), upsample(reference, 112), atol=1e-4)
    # the channel weights (mean gradients) against finite differences of the logit
    feature_model = keras.Model(explain_model.inputs, explain_model.get_layer("feature_map").output)
    features = feature_model.predict(images[:1], verbose=0)
    head = keras.Model(offset_model.inputs, offset_model.outputs[0])
    rng = np.random.default_rng(0)
    weights_true = []
    channels = rng.choice(features.shape[-1], 3, replace=False)
    step = 1e-3  # central differences: a one-sided step across ReLU kinks was off by up to 6%
    for channel in channels:
        delta = np.zeros_like(features)
        delta[..., channel] = step
        up, down = (head.predict([images[:1], sign * delta], verbose=0)[0, classes[0]] for sign in (1, -1))
        weights_true.append((up - down) / (2 * step * 14 * 14))
    _, gradients = map_gradients(offset_model, images[:1], classes[:1])
    np.testing.assert_allclose(gradients[0].mean(axis=(0, 1))[channels], weights_true, rtol=0.05, atol=1e-6)


def test_maps_have_the_image_shape_and_range_and_follow_the_image(defax_nano, demo_images):
    _, images = demo_images
    explainer = Explainer(defax_nano, batch_size=8)
    for method, target in [("gradcam", "local"), ("gradcam", "global"), ("gradcam++", "local"), ("scorecam", "global"), ("attention", None)]:
        raw = explainer.raw_maps(method, target, images[:2], [1, 1])
        assert raw.shape == (2, 7, 7) and np.isfinite(raw).all() and raw.min() >= 0
        heat = explainer.heat(method, raw, 112)
        assert heat.shape == (2, 112, 112) and heat.min() >= 0 and heat.max() <= 1
        # Different images, different maps: by far more than float32 noise (~1e-7 of the map's size), in the
        # picture a user sees, and in their pattern.
        assert np.abs(raw[0] - raw[1]).max() > 1e-2 * raw.max(), f"{method}-{target} ignores the image"
        assert np.abs(heat[0] - heat[1]).max() > 0.2, f"{method}-{target} draws the same map for different images"
        assert np.corrcoef(raw[0].ravel(), raw[1].ravel())[0, 1] < 0.9, f"{method}-{target} draws one pattern for every image"
    shifted = explainer.raw_maps("gradcam", "local", np.roll(images[:1], 40, axis=1), [1])
    assert not np.allclose(shifted[0], explainer.raw_maps("gradcam", "local", images[:1], [1])[0])


def test_attention_map_is_the_fusion_scores_averaged_over_heads_and_queries(defax_nano, demo_images):
    """The attention map against the cross-attention equations in NumPy, on the branch outputs."""
    _, images = demo_images
    model = defax_nano
    shares = np.asarray(attention_model(model)(images[:2], training=False))
    x = model.get_layer("normalize")(images[:2])
    swin_tokens = keras.ops.convert_to_numpy(model.swin(x))  # [B, N, Cs]: the queries
    local_map = keras.ops.convert_to_numpy(model.efficientnet(x))  # [B, h, w, Ce]: the keys, row by row
    batch, height, width, channels = local_map.shape
    scores = numpy_attention_scores(model.get_layer("fusion").attention, swin_tokens, local_map.reshape(batch, -1, channels))
    expected = scores.mean(axis=(1, 2)).reshape(batch, height, width)
    assert shares.shape == (2, height, width)
    assert expected.max() > 3 / (height * width)  # peaked: a uniform, transposed or shuffled map cannot pass the next line
    np.testing.assert_allclose(shares, expected, atol=1e-6)


PARITY_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import keras, numpy as np
    import defax_keras.models
    from defax_keras.errors import DefaxError
    from defax_keras.explain.cam import keras_grad_cam
    from defax_keras.explain.explain import resolve_methods
    from defax_keras.explain.model import build_explain_model

    model = keras.saving.load_model(sys.argv[1], safe_mode=True)
    data = np.load(sys.argv[2])
    maps = {t: keras_grad_cam(build_explain_model(model, t, offset=True), data["images"], data["classes"]) for t in ("local", "global")}
    np.savez(sys.argv[3], **maps)
    try:
        resolve_methods(model, ["gradcam++"], "both")
        error = None
    except DefaxError as exc:
        error = str(exc)
    print(json.dumps({"backend": keras.backend.backend(), "error": error, "all": resolve_methods(model, ["all"], "both")}))
    """
)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_grad_cam_on_jax_and_torch_equals_tf_keras_vis(backend, demo_root, tmp_path):
    keras.utils.set_random_seed(3)
    model = build_model("defax_nano")
    # At random init EfficientNet's tokens are ~1e-3, so the keys are flat, the cross-attention is uniform
    # and the global branch, which acts only through it, gets gradients of ~1e-7. Scale the keys so the
    # attention depends on the image and both maps carry a signal worth comparing.
    key = model.get_layer("fusion").attention._key_dense.kernel
    key.assign(key * 1000.0)
    model.save(tmp_path / "model.keras")
    _, images = demo_test_images(demo_root, 2, 112)
    classes = np.array([0, 1, 1, 0])
    np.savez(tmp_path / "inputs.npz", images=images, classes=classes)
    report = run_on_backend(backend, PARITY_SCRIPT, str(tmp_path / "model.keras"), str(tmp_path / "inputs.npz"), str(tmp_path / "maps.npz"))
    assert report["backend"] == backend
    assert "needs the TensorFlow backend" in report["error"]
    assert [tuple(c) for c in report["all"]] == [
        ("gradcam", "local"), ("gradcam", "global"), ("eigencam", "local"), ("eigencam", "global"), ("lime", None), ("attention", None),
    ]
    theirs = np.load(tmp_path / "maps.npz")
    for target in ("local", "global"):
        reference = tf_keras_vis_cam("gradcam", build_explain_model(model, target), images, classes)
        assert upsample(reference, 112).std() > 0.1, f"{target} map is flat; the comparison would be meaningless"
        difference = np.abs(upsample(theirs[target], 112) - upsample(reference, 112)).max()
        assert difference < 1e-4, f"{backend} {target}: max |diff| {difference}"


# --------------------------------------------------------------------------- LIME


def test_lime_batches_its_perturbed_images_through_the_model(trained_cnn, demo_images):
    _, model = trained_cnn
    _, images = demo_images
    classifier = BatchedClassifier(model)
    weights, top = lime_explanation(model, images[5], 1, num_samples=40, batch_size=16, top_k=3, classifier=classifier)
    assert classifier.images == 40 and classifier.calls == math.ceil(40 / 16)
    assert weights.shape == top.shape == (112, 112)
    assert top.any() and not top.all()
    assert weights[top].min() > 0 and weights[top].min() >= weights[~top].max() - 1e-12


# --------------------------------------------------------------------------- faithfulness


def test_perturbation_paths_and_areas():
    image = np.random.default_rng(0).uniform(0, 255, (16, 16, 3)).astype("float32")
    saliency = np.zeros((16, 16))
    saliency[:4] = 1.0  # the top quarter first
    deletion, insertion = faith.perturbation_batches(image, saliency, steps=4, baseline="black")
    assert deletion.shape == insertion.shape == (5, 16, 16, 3)
    np.testing.assert_array_equal(deletion[0], image)
    np.testing.assert_array_equal(deletion[1][:4], 0)
    np.testing.assert_array_equal(deletion[1][4:], image[4:])
    np.testing.assert_array_equal(insertion[4], image)
    np.testing.assert_array_equal(insertion[0], 0)
    assert faith.area_under_curve([1, 1, 1]) == pytest.approx(1.0)
    assert faith.area_under_curve([1, 0.5, 0]) == pytest.approx(0.5)
    order = faith.pixel_order(saliency)
    assert set(order[:64]) == set(range(64))  # ties broken inside the top region only


def test_grad_cam_is_more_faithful_than_a_random_map_on_a_trained_model(trained_cnn, demo_root):
    _, model = trained_cnn
    _, images = demo_test_images(demo_root, 8, 112)
    explainer = Explainer(model, batch_size=16)
    classes = (explainer.predict(images)[:, 1] >= 0.5).astype(int)
    cam = explainer.heat("gradcam", explainer.raw_maps("gradcam", "local", images, classes), 112)
    curves = {"gradcam": [], "random": []}
    for i, image in enumerate(images):
        curves["gradcam"].append(faith.perturbation_curves(explainer.predict, image, cam[i], classes[i], seed=i))
        curves["random"].append(faith.perturbation_curves(explainer.predict, image, faith.random_map((14, 14), 112, i), classes[i], seed=i))
    summary = faith.summarize(curves)
    assert summary["gradcam"]["beats_random_deletion"], summary["gradcam"]["deletion_auc"]
    assert summary["gradcam"]["beats_random_insertion"], summary["gradcam"]["insertion_auc"]
    # and a map that points at the least important pixels first is worse than random
    inverted = [faith.perturbation_curves(explainer.predict, image, 1 - cam[i], classes[i], seed=i) for i, image in enumerate(images)]
    assert np.mean([c["deletion_auc"] for c in inverted]) > summary["random"]["deletion_auc"]


# --------------------------------------------------------------------------- command line


def test_explain_command_writes_overlays_maps_grid_and_faithfulness(trained_cnn, demo_root, tmp_path):
    path, _ = trained_cnn
    test = Path(demo_root) / "real_vs_fake" / "real-vs-fake" / "test"
    images = tmp_path / "images"
    for cls in ("real", "fake"):
        (images / cls).mkdir(parents=True)
        for source in sorted((test / cls).iterdir())[:2]:
            (images / cls / source.name).write_bytes(source.read_bytes())
    (images / "fake" / "broken.jpg").write_bytes(b"not a jpeg at all")
    (images / "notes.txt").write_text("ignored")
    output = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "defax_keras.cli", "explain", "-m", str(path), "-i", str(images), "-o", str(output),
         "--method", "gradcam,lime", "--method", "gradcam++", "--lime-samples", "20", "--faithfulness"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((output / "summary.json").read_text())
    assert summary["columns"] == ["gradcam-local", "lime", "gradcam++-local"]
    assert [Path(r["path"]).parent.name for r in summary["images"]] == ["fake", "fake", "real", "real"]
    assert [s["path"] for s in summary["skipped"]] == [str(images / "fake" / "broken.jpg")]
    assert summary["ignored_files"] == 1
    for record in summary["images"]:
        assert record["group"] in ("fake-correct", "fake-misclassified", "real-correct", "real-misclassified")
        assert record["explained_class"] == record["predicted"]
        for column in summary["columns"]:
            assert (output / record["files"][column]).is_file()
        assert np.load(output / record["folder"] / "gradcam-local.npy").shape == (14, 14)
        assert np.load(output / record["folder"] / "lime.npy").shape == (112, 112)
    assert (output / "grid.png").stat().st_size > 10_000
    report = json.loads((output / "faithfulness.json").read_text())
    assert set(report["all"]) == {"gradcam-local", "lime", "gradcam++-local", "random"}
    assert len(report["all"]["random"]["deletion"]) == faith.STEPS + 1
    assert "Faithfulness" in result.stdout and (output / "faithfulness.png").is_file()


def test_explain_command_errors_are_one_line(tmp_path):
    path = tmp_path / "simple_cnn_nano.keras"
    build_model("simple_cnn_nano").save(path)

    def run(*args):
        result = subprocess.run([sys.executable, "-m", "defax_keras.cli", "explain", "-m", str(path), *args], capture_output=True, text=True, timeout=300)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("defax: error: "), result.stderr
        return lines[0]

    assert "no such file or folder" in run("-i", str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    assert "no image files" in run("-i", str(tmp_path / "empty"))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    assert "none of the 1 image files could be read" in run("-i", str(tmp_path / "bad.png"))
    assert "no cross-attention" in run("-i", str(tmp_path / "bad.png"), "--method", "attention")
    assert "no global feature map" in run("-i", str(tmp_path / "bad.png"), "--target", "global")


def test_normalize_maps_matches_tf_keras_vis():
    from tf_keras_vis.utils import normalize

    maps = np.random.default_rng(0).normal(size=(3, 5, 5)).astype("float32")
    np.testing.assert_allclose(normalize_maps(maps), normalize(maps), atol=1e-7)


# --------------------------------------------------------------------------- faces


@pytest.fixture(scope="module")
def face_model(tmp_path_factory):
    """An untrained simple_cnn_nano, saved: explaining faces needs a model, not a good one."""
    keras.utils.set_random_seed(3)
    path = tmp_path_factory.mktemp("face_model") / "simple_cnn_nano.keras"
    build_model("simple_cnn_nano").save(path)
    return path


@pytest.fixture(scope="module")
def face_photos(tmp_path_factory):
    from helpers import face_photo_folder

    return face_photo_folder(tmp_path_factory.mktemp("explain_faces") / "photos")


def test_each_face_of_a_photo_is_explained_on_its_aligned_crop(face_model, face_photos, tmp_path):
    from photos import iou
    from PIL import Image

    from defax_keras.data.pipeline import eval_pixels
    from defax_keras.explain.explain import explain, write_explanations
    from defax_keras.faces import FaceDetector, align_face

    root, boxes = face_photos
    two = root / "real" / "two.jpg"
    result = explain(face_model, [str(two)], methods=["gradcam"])
    assert [r["folder"] for r in result.records] == ["000_two_face0", "001_two_face1"]
    assert [r["face"] for r in result.records] == [0, 1] and all(r["path"] == str(two) for r in result.records)
    for record in result.records:
        assert max(iou(record["box"], box) for box in boxes[str(two)]) > 0.5
        assert set(record["landmarks"]) == {"left_eye", "right_eye", "nose", "mouth_left", "mouth_right"}
    # The maps are of the aligned crops the model scores, computed here without the face scorer.
    image = np.asarray(Image.open(two).convert("RGB"))
    found = FaceDetector().detect(image)
    crops = np.stack([np.asarray(eval_pixels(align_face(image, face, 256, "ffhq"), 112)) for face in found])
    np.testing.assert_allclose(result.pixels, crops, atol=1e-4)
    model = keras.saving.load_model(face_model)
    expected = model.predict(crops, verbose=0)[:, 1]
    np.testing.assert_allclose([r["p_fake"] for r in result.records], expected, atol=1e-5)
    assert result.heat_maps["gradcam-local"].shape == (2, 112, 112)

    output = write_explanations(result, tmp_path / "out")
    summary = json.loads((output / "summary.json").read_text())
    for record in summary["images"]:
        assert (output / record["files"]["gradcam-local"]).is_file() and record["box"] and record["face"] in (0, 1)
    photo = summary["faces"]["photos"][0]
    assert photo["path"] == str(two) and [f["folder"] for f in photo["faces"]] == ["000_two_face0", "001_two_face1"]
    assert photo["p_fake"] == pytest.approx(max(expected), abs=1e-5) and (output / photo["figure"]).stat().st_size > 10_000
    assert summary["faces"]["no_face"] == [] and summary["faces"]["settings"]["mode"] == "auto"
    assert (output / "grid.png").is_file()


def test_faceless_photos_are_reported_not_explained(face_model, face_photos, tmp_path):
    root, _ = face_photos
    empty = root / "fake" / "empty.jpg"
    output = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "defax_keras.cli", "explain", "-m", str(face_model), "-i", str(empty), str(root / "fake" / "astronaut.jpg"), "-o", str(output)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "astronaut.jpg face0" in result.stdout and "empty.jpg" in result.stdout and "without a face" in result.stdout
    summary = json.loads((output / "summary.json").read_text())
    assert [r["folder"] for r in summary["images"]] == ["000_astronaut_face0"]
    assert summary["faces"]["no_face"] == [{"path": str(empty), "label": 1}]
    # Only a faceless photo: nothing to explain, said so, and summary.json still written.
    alone = subprocess.run(
        [sys.executable, "-m", "defax_keras.cli", "explain", "-m", str(face_model), "-i", str(empty), "-o", str(tmp_path / "alone")],
        capture_output=True, text=True, timeout=600,
    )
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert "No face to explain" in alone.stdout
    summary = json.loads((tmp_path / "alone" / "summary.json").read_text())
    assert summary["images"] == [] and summary["faces"]["no_face"][0]["path"] == str(empty)


def test_faces_off_and_auto_on_aligned_crops_explain_exactly_as_before(face_model, demo_root, face_photos, tmp_path):
    from defax_keras.explain.explain import explain, write_explanations
    from defax_keras.faces import FaceSettings

    paths, _ = demo_test_images(demo_root, 2, 112)
    paths = [str(p) for p in paths]
    off = explain(face_model, paths, methods=["gradcam", "eigencam"], faces=FaceSettings(mode="off"))
    auto = explain(face_model, paths, methods=["gradcam", "eigencam"])
    assert auto.records == off.records and auto.summary() == off.summary() and "faces" not in auto.summary()
    np.testing.assert_array_equal(auto.pixels, off.pixels)
    for name in off.columns:
        np.testing.assert_array_equal(auto.raw_maps[name], off.raw_maps[name])
    write_explanations(auto, tmp_path / "auto")
    assert not (tmp_path / "auto" / "photos").exists()
    # off on a photo: the whole photo, as before faces existed
    root, _ = face_photos
    whole = explain(face_model, [str(root / "real" / "two.jpg")], methods=["gradcam"], faces=FaceSettings(mode="off"))
    assert [r["folder"] for r in whole.records] == ["000_two"] and "face" not in whole.records[0]
