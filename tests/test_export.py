"""SavedModel export (TF Serving signatures, REST body, versions), TFLite, ONNX, JAX export, and `defax predict`."""

import base64
import csv
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import encode, pattern, run_on_backend, write, write_image

from defax_keras.cli.predict import format_results
from defax_keras.data.files import load_image
from defax_keras.errors import DefaxError
from defax_keras.evaluation.calibration import with_temperature
from defax_keras.export import export_saved_model, next_version
from defax_keras.export.convert import _unsupported_ops, check_pixels, export
from defax_keras.inference import load_predictor, predict_files
from defax_keras.models import build_model


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = build_model("simple_cnn_nano")
    path = tmp_path_factory.mktemp("export_model") / "simple_cnn_nano.keras"
    model.save(path)
    return path, model


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    """JPEG and PNG files of several sizes and aspect ratios (so resize and centre crop are exercised)."""
    root = tmp_path_factory.mktemp("export_images")
    files = []
    for i, (width, height) in enumerate([(160, 120), (112, 112), (90, 200), (300, 256)]):
        files.append(write_image(root / f"photo{i}.jpg", "JPEG", seed=i, size=(width, height), quality=90))
        files.append(write_image(root / f"photo{i}.png", "PNG", seed=10 + i, size=(width, height)))
    return files


def _python_p_fake(model, files):
    """The Python predict path: evaluation decoding, then the Keras model."""
    return model.predict(np.stack([load_image(f, model.image_size) for f in files]), verbose=0)[:, 1]


def _serve(path, payloads):
    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    return {k: v.numpy() for k, v in signature(image_bytes=tf.constant(payloads)).items()}


# --------------------------------------------------------------------------- SavedModel


def test_serving_signature_matches_the_python_predict_path(cnn, image_files, tmp_path):
    _, model = cnn
    path = export_saved_model(model, tmp_path / "export")
    assert path == tmp_path / "export" / "1" and (path / "saved_model.pb").is_file()
    outputs = _serve(path, [f.read_bytes() for f in image_files])
    expected = _python_p_fake(model, image_files)
    assert outputs["probabilities"].shape == (len(image_files), 2)
    np.testing.assert_allclose(outputs["p_fake"], expected, atol=1e-4)
    np.testing.assert_allclose(outputs["probabilities"].sum(axis=1), 1.0, atol=1e-6)
    assert [x.decode() for x in outputs["label"]] == ["fake" if p >= 0.5 else "real" for p in outputs["p_fake"]]
    pixels = np.stack([load_image(f, 112) for f in image_files])
    direct = tf.saved_model.load(str(path)).signatures["predict_pixels"](pixels=tf.constant(pixels))
    np.testing.assert_allclose(direct["p_fake"].numpy(), expected, atol=1e-5)


def test_rest_body_as_a_tf_serving_client_sends_it(cnn, image_files, tmp_path):
    _, model = cnn
    path = export_saved_model(model, tmp_path / "export", threshold=0.3)
    # What `curl -d @request.json .../v1/models/defax:predict` sends ...
    body = json.dumps({"signature_name": "serving_default", "instances": [{"b64": base64.b64encode(f.read_bytes()).decode("ascii")} for f in image_files]})
    # ... and what TF Serving's JSON decoder hands the signature: {"b64": s} becomes the bytes of s.
    instances = json.loads(body)["instances"]
    outputs = _serve(path, [base64.b64decode(instance["b64"]) for instance in instances])
    np.testing.assert_allclose(outputs["p_fake"], _python_p_fake(model, image_files), atol=1e-4)
    assert [x.decode() for x in outputs["label"]] == ["fake" if p >= 0.3 else "real" for p in outputs["p_fake"]]


def test_saved_model_cli_lists_both_signatures(cnn, tmp_path):
    _, model = cnn
    path = export_saved_model(model, tmp_path / "export")
    cli = Path(sys.executable).with_name("saved_model_cli")
    result = subprocess.run([str(cli), "show", "--all", "--dir", str(path)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout
    serving = text.split("signature_def['serving_default']")[1]
    pixels = text.split("signature_def['predict_pixels']")[1].split("signature_def[")[0]
    for name in ("inputs['image_bytes']", "DT_STRING", "outputs['probabilities']", "outputs['p_fake']", "outputs['label']"):
        assert name in serving
    for name in ("inputs['pixels']", "(-1, 112, 112, 3)", "outputs['probabilities']", "outputs['p_fake']"):
        assert name in pixels


def test_versions_follow_tf_serving_layout(cnn, tmp_path):
    _, model = cnn
    base = tmp_path / "export"
    assert next_version(base) == 1
    assert export_saved_model(model, base).name == "1"
    assert export_saved_model(model, base).name == "2"
    assert export_saved_model(model, base, version=7).name == "7"
    assert next_version(base) == 8
    with pytest.raises(DefaxError, match="already exists"):
        export_saved_model(model, base, version=2)


def test_calibrated_defax_keeps_its_temperature(tmp_path, image_files):
    keras.utils.set_random_seed(0)
    model = with_temperature(build_model("defax_nano"), 3.0)
    path = export_saved_model(model, tmp_path / "export")
    outputs = _serve(path, [f.read_bytes() for f in image_files[:4]])
    expected = _python_p_fake(model, image_files[:4])
    np.testing.assert_allclose(outputs["p_fake"], expected, atol=1e-4)
    assert model.get_layer("temperature").temperature == 3.0


JAX_EXPORT = textwrap.dedent(
    """
    import json, sys
    import keras
    import defax_keras.models
    from defax_keras.export import export_saved_model
    model = keras.saving.load_model(sys.argv[1], safe_mode=True)
    print(json.dumps({"backend": keras.backend.backend(), "path": str(export_saved_model(model, sys.argv[2]))}))
    """
)


def test_jax_exports_through_jax2tf(cnn, image_files, tmp_path):
    path, model = cnn
    report = run_on_backend("jax", JAX_EXPORT, str(path), str(tmp_path / "export"))
    assert report["backend"] == "jax"
    outputs = _serve(report["path"], [f.read_bytes() for f in image_files])
    np.testing.assert_allclose(outputs["p_fake"], _python_p_fake(model, image_files), atol=1e-4)


def test_torch_backend_gets_a_clear_message(cnn, tmp_path):
    path, _ = cnn
    script = JAX_EXPORT.replace('print(json.dumps({"backend"', 'from defax_keras.errors import DefaxError\ntry:\n    export_saved_model(model, sys.argv[2])\nexcept DefaxError as e:\n    print(json.dumps({"error": str(e)}))\nraise SystemExit\nprint(json.dumps({"backend"')
    report = run_on_backend("torch", script, str(path), str(tmp_path / "export"))
    assert "needs the TensorFlow or JAX backend, not torch" in report["error"]


# --------------------------------------------------------------------------- TFLite and ONNX


def test_tflite_float16_and_int8_match_keras(cnn, tmp_path):
    _, model = cnn
    paths = export(model, tmp_path, "tflite").paths
    assert [p.name for p in paths] == ["simple_cnn_nano_float16.tflite", "simple_cnn_nano_int8.tflite"]
    pixels = check_pixels(112, seed=5)
    expected = model.predict(pixels, verbose=0)[:, 1]
    for path, tolerance in zip(paths, (1e-3, 0.05)):
        interpreter = tf.lite.Interpreter(model_path=str(path))
        p_fake = interpreter.get_signature_runner("predict_pixels")(pixels=pixels)["p_fake"]
        np.testing.assert_allclose(p_fake, expected, atol=tolerance)
    assert paths[1].stat().st_size < 0.6 * paths[0].stat().st_size  # 1-byte weights against 2-byte ones


def test_converter_errors_name_the_ops():
    message = "Some ops are not supported by the native TFLite runtime\nDetails:\n\ttf.Roll(tensor<?x14x14x64xf32>) -> ()\n\ttf.Roll(tensor<?x7x7xf32>)"
    assert _unsupported_ops(RuntimeError(message)) == ["tf.Roll"]
    assert _unsupported_ops(RuntimeError("no ops here"), "log: tf.Erfc(x)") == ["tf.Erfc"]


@pytest.mark.parametrize("name", ["simple_cnn_nano", "defax_nano"])
def test_onnx_matches_keras(name, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    keras.utils.set_random_seed(0)
    model = build_model(name)
    (path,) = export(model, tmp_path, "onnx").paths
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["pixels"]
    assert sorted(o.name for o in session.get_outputs()) == ["p_fake", "probabilities"]
    pixels = check_pixels(112, seed=5)
    probabilities, p_fake = session.run(["probabilities", "p_fake"], {"pixels": pixels})
    np.testing.assert_allclose(probabilities, model.predict(pixels, verbose=0), atol=1e-4)
    np.testing.assert_allclose(p_fake, probabilities[:, 1], atol=1e-7)


# --------------------------------------------------------------------------- defax predict


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict_images")
    write_image(root / "a.jpg", "JPEG", seed=1, size=(130, 120))
    write_image(root / "b.png", "PNG", seed=2, size=(120, 140))
    write_image(root / "nested" / "deeper" / "c.bmp", "BMP", seed=3)
    write_image(root / "nested" / "d.tiff", "TIFF", seed=4)
    write_image(root / "nested" / "e.webp", "WEBP", seed=5)
    write(root / "fake_jpeg.jpg", b"this is text, not a JPEG")
    write(root / "truncated.jpg", encode(pattern(64, 64), "JPEG")[:300])
    write(root / "notes.txt", b"not an image")
    write(root / "nested" / "data.csv", b"a,b\n")
    return root


def _run_predict(*args):
    return subprocess.run([sys.executable, "-m", "defax_keras.cli", "predict", *args], capture_output=True, text=True, timeout=300)


def test_predict_walks_folders_reports_bad_files_and_pipes_json(cnn, mixed_folder):
    path, model = cnn
    result = _run_predict("-m", str(path), str(mixed_folder), "--format", "json", "--batch-size", "2", "--faces", "off")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(result.stdout)  # stdout is the JSON alone
    names = [os.path.relpath(r["path"], mixed_folder) for r in rows]
    # sorted, a folder's files before its subfolders (os.walk order)
    assert names == ["a.jpg", "b.png", "fake_jpeg.jpg", "truncated.jpg", "nested/d.tiff", "nested/e.webp", "nested/deeper/c.bmp"]
    good = [r for r in rows if "error" not in r]
    bad = {os.path.basename(r["path"]): r for r in rows if "error" in r}
    assert set(bad) == {"fake_jpeg.jpg", "truncated.jpg"}
    assert all(set(r) == {"path", "error"} for r in bad.values())
    assert "not an image" in bad["fake_jpeg.jpg"]["error"] and "truncated" in bad["truncated.jpg"]["error"]
    expected = _python_p_fake(model, [r["path"] for r in good])
    np.testing.assert_allclose([r["p_fake"] for r in good], expected, atol=1e-5)
    for r in good:
        assert r["p_real"] + r["p_fake"] == pytest.approx(1.0, abs=1e-5)
        assert r["label"] == ("fake" if r["p_fake"] >= 0.5 else "real")
    assert "2 file(s) without an image extension skipped" in result.stderr
    assert "2 of 7 file(s) could not be read" in result.stderr


def test_predict_csv_output_file_verbose_and_saved_model(cnn, mixed_folder, tmp_path):
    path, model = cnn
    export_dir = export_saved_model(model, tmp_path / "export")
    out = tmp_path / "results.csv"
    result = _run_predict("-m", str(tmp_path / "export"), str(mixed_folder / "a.jpg"), str(mixed_folder / "nested"), "--format", "csv", "-o", str(out), "--verbose", "--threshold", "0", "--faces", "off")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout == ""
    assert f"skipped (not an image extension): {mixed_folder / 'nested' / 'data.csv'}" in result.stderr
    rows = list(csv.DictReader(out.open()))
    assert [os.path.basename(r["path"]) for r in rows] == ["a.jpg", "d.tiff", "e.webp", "c.bmp"]
    assert all(r["label"] == "fake" and r["error"] == "" for r in rows)  # threshold 0: everything is fake
    expected = _python_p_fake(model, [r["path"] for r in rows])
    np.testing.assert_allclose([float(r["p_fake"]) for r in rows], expected, atol=1e-4)
    assert load_predictor(export_dir).image_size == 112


def test_predict_table_and_errors(cnn, mixed_folder, tmp_path):
    path, model = cnn
    rows = predict_files(load_predictor(path), [str(mixed_folder / "a.jpg"), str(mixed_folder / "truncated.jpg")])
    table = format_results(rows, "table")
    assert "a.jpg" in table.splitlines()[1] and "error: truncated JPEG" in table.splitlines()[2]
    for args, message in [
        (["-m", str(path), str(tmp_path / "missing")], "no such file or folder"),
        (["-m", str(tmp_path), str(mixed_folder)], "holds no SavedModel"),
        (["-m", str(path), str(mixed_folder), "--threshold", "2"], "--threshold must be in [0, 1]"),
    ]:
        result = _run_predict(*args)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], result.stderr


def test_export_command_writes_versions_and_reports_parity(cnn, tmp_path):
    path, _ = cnn
    for expected in ("1", "2"):
        result = subprocess.run([sys.executable, "-m", "defax_keras.cli", "export", "-m", str(path), "-o", str(tmp_path / "base")], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        assert f"Exported {tmp_path / 'base' / expected}" in result.stdout
        assert "max |P(fake) - Keras|" in result.stderr
    result = subprocess.run([sys.executable, "-m", "defax_keras.cli", "export", "-m", str(path), "-o", str(tmp_path / "base"), "--version", "1"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [f"defax: error: {tmp_path / 'base' / '1'} already exists; TF Serving versions are immutable: choose another --version"]


# --------------------------------------------------------------------------- ONNX int8 and .onnx models


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "defax_keras.cli", *args], capture_output=True, text=True, timeout=600)


def test_onnx_int8_export_is_calibrated_checked_and_served_by_predict(cnn, mixed_folder, tmp_path):
    """`--quantize int8` writes a QDQ int8 file next to the float32 one, reports its agreement on held-out
    demo images, and `defax predict` runs both files through ONNX Runtime."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    path, model = cnn
    out = tmp_path / "onnx"
    result = _cli("export", "-m", str(path), "-o", str(out), "--format", "onnx", "--quantize", "int8", "--calibration", "demo", "--calibration-images", "32")
    assert result.returncode == 0, result.stderr[-2000:]
    float_file, int8_file = out / "simple_cnn_nano.onnx", out / "simple_cnn_nano.int8.onnx"
    assert result.stdout.splitlines() == [f"Exported {float_file}", f"Exported {int8_file}"]
    assert "simple_cnn_nano.int8.onnx: labels agree with float32 on" in result.stderr and "of 32 held-out images" in result.stderr
    ops = {node.op_type for node in onnx.load(str(int8_file)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops  # int8 activations and weights around the convolutions

    good = [str(mixed_folder / name) for name in ("a.jpg", "b.png", "nested/d.tiff")]
    expected = _python_p_fake(model, good)
    for file, tolerance in ((float_file, 1e-4), (int8_file, 0.05)):
        predictor = load_predictor(file)
        assert predictor.image_size == 112
        rows = predict_files(predictor, [*good, str(mixed_folder / "truncated.jpg")], batch_size=2)
        np.testing.assert_allclose([r["p_fake"] for r in rows[:3]], expected, atol=tolerance)
        assert "error" in rows[3]

    # `defax serve` takes the .onnx file too (verdicts without Grad-CAM, which needs the Keras model)
    from defax_keras.web.app import create_app
    from defax_keras.web.server import build_service

    service = build_service(int8_file, batching=False, max_batch=4)
    try:
        client = create_app(service).test_client()
        assert client.get("/api/info").json["explain"] == []
        data = {"files": [(io.BytesIO(Path(good[0]).read_bytes()), "a.jpg")]}
        (row,) = client.post("/api/predict?faces=off", data=data, content_type="multipart/form-data").json["results"]
        assert row["p_fake"] == pytest.approx(expected[0], abs=0.05)
    finally:
        service.close()


def test_onnx_options_and_bad_onnx_files_give_one_line_errors(cnn, tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    path, _ = cnn
    other = onnx.helper.make_model(
        onnx.helper.make_graph(
            [onnx.helper.make_node("Relu", ["x"], ["y"])],
            "other",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])],
        )
    )
    onnx.save(other, tmp_path / "other.onnx")
    write(tmp_path / "broken.onnx", b"not a protobuf at all")
    write_image(tmp_path / "images" / "a.png", "PNG", seed=1)
    for args, message in [
        (["export", "-m", str(path), "-o", str(tmp_path), "--quantize", "int8", "--calibration", "demo"], "--quantize int8 applies to --format onnx"),
        (["export", "-m", str(path), "-o", str(tmp_path), "--format", "onnx", "--quantize", "int8"], "--quantize int8 needs --calibration DATA"),
        (["predict", "-m", str(tmp_path / "other.onnx"), str(tmp_path / "images")], "is not a DeFaX ONNX export"),
        (["predict", "-m", str(tmp_path / "broken.onnx"), str(tmp_path / "images")], "is not a readable ONNX model"),
    ]:
        result = _cli(*args)
        assert result.returncode == 2, result.stderr[-2000:]
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], result.stderr
