"""SavedModel export (TF Serving signatures, REST body, versions), TFLite, ONNX, JAX export, export parity, and `defax predict`."""

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
from helpers import demo_trained_cnn, encode, pattern, run_on_backend, write, write_image

from defax_keras.cli.predict import format_results
from defax_keras.data.files import load_image
from defax_keras.errors import DefaxError
from defax_keras.evaluation.calibration import with_temperature
from defax_keras.export import convert, export_saved_model, next_version
from defax_keras.export.convert import ExportCheckFailed, _unsupported_ops, export
from defax_keras.export.parity import REPORT_NAME
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
def trained(tmp_path_factory):
    return demo_trained_cnn(tmp_path_factory.mktemp("trained"))


def _report_pixels(report, size: int) -> np.ndarray:
    """The check images a report names, decoded here as `defax predict` decodes them."""
    return np.stack([load_image(f, size) for f in report["check_images"]["files"]])


def _assert_report_matches(entry, p_fake, reference, threshold=0.5):
    """A report's numbers for one file against the same measures recomputed from outputs run in the test."""
    delta = np.abs(np.asarray(p_fake, np.float64) - reference)
    assert entry["images"] == len(reference)
    assert entry["max_abs_diff"] == pytest.approx(delta.max(), rel=1e-3, abs=1e-7)
    assert entry["mean_abs_diff"] == pytest.approx(delta.mean(), rel=1e-3, abs=1e-7)
    assert entry["agreement"] == pytest.approx(np.mean((np.asarray(p_fake) >= threshold) == (reference >= threshold)))


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


def test_calibrated_model_serves_its_softened_probabilities(trained, image_files, tmp_path):
    """The served P(fake) of a temperature-calibrated model is softmax(logits / T) of the uncalibrated logits."""
    _, model, _ = trained
    calibrated = with_temperature(model, 3.0)
    path = export_saved_model(calibrated, tmp_path / "export")
    outputs = _serve(path, [f.read_bytes() for f in image_files])
    logits = model.logits_model().predict(np.stack([load_image(f, 48) for f in image_files]), verbose=0).astype(np.float64)
    softened = np.exp(logits / 3.0) / np.exp(logits / 3.0).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(outputs["p_fake"], softened[:, 1], atol=1e-5)
    assert np.abs(outputs["p_fake"] - _python_p_fake(model, image_files)).max() > 0.05  # not the uncalibrated model


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


def test_tflite_float16_and_int8_are_checked_on_a_demo_trained_model(trained, tmp_path):
    """Both TFLite files are run on the demo test images; the report's numbers equal what the interpreter gives here."""
    path, model, data = trained
    result = export(path, tmp_path, "tflite", check_data=data)
    assert [p.name for p in result.paths] == ["simple_cnn_nano_float16.tflite", "simple_cnn_nano_int8.tflite"]
    report = json.loads((tmp_path / REPORT_NAME).read_text())
    assert report == result.report and report["passed"] and report["check_images"]["split"] == "test"
    assert report["check_images"]["count"] == 64 and report["check_images"]["origin"] == "--check-data"
    pixels = _report_pixels(report, 48)
    expected = model.predict(pixels, verbose=0)[:, 1].astype(np.float64)
    assert np.std(expected) > 0.2  # a trained model: P(fake) far from 0.5
    for file, entry, precision in zip(result.paths, report["files"], ("float16", "int8")):
        assert (entry["path"], entry["format"], entry["precision"], entry["status"]) == (str(file), "tflite", precision, "passed")
        runner = tf.lite.Interpreter(model_path=str(file)).get_signature_runner("predict_pixels")
        p_fake = runner(pixels=pixels)["p_fake"]
        _assert_report_matches(entry, p_fake, expected)
    assert report["files"][0]["tolerance"] == {"max_abs_diff": 1e-2} and report["files"][0]["max_abs_diff"] <= 1e-2
    assert report["files"][1]["tolerance"] == {"max_mean_abs_diff": 0.02, "min_agreement": 0.995}
    assert report["files"][1]["agreement"] >= 0.995 and report["files"][1]["mean_abs_diff"] <= 0.02
    assert result.paths[1].stat().st_size < 0.6 * result.paths[0].stat().st_size  # 1-byte weights against 2-byte ones


def _damage_onnx(path):
    """Change one weight of the file: the largest of the last weight matrix (the classifier's), sign flipped and doubled."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    initializer = [t for t in model.graph.initializer if len(t.dims) == 2][-1]
    weights = numpy_helper.to_array(initializer).copy()
    index = np.unravel_index(np.abs(weights).argmax(), weights.shape)
    weights[index] *= -2
    initializer.CopyFrom(numpy_helper.from_array(weights, initializer.name))
    onnx.save(model, str(path))
    return path


def test_a_damaged_export_fails_with_one_line_and_is_removed_unless_kept(trained, monkeypatch, capsys, tmp_path):
    """One weight of the ONNX file changed after conversion: `defax export` exits 2 with one line and removes the
    files; kept (`--keep-failed`), they stay and the report says failed, with the numbers onnxruntime gives here."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    from defax_keras.cli import main

    path, model, data = trained
    convert_onnx = convert.export_onnx
    monkeypatch.setattr(convert, "export_onnx", lambda model, output: _damage_onnx(convert_onnx(model, output)))
    out = tmp_path / "onnx"
    args = ["export", "-m", str(path), "-o", str(out), "--format", "onnx", "--check-data", str(data)]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    (line,) = [x for x in captured.err.splitlines() if x.startswith("defax: error:")]
    assert line.startswith(f"defax: error: {out / 'simple_cnn_nano.onnx'} differs from the Keras model beyond tolerance: max |dP(fake)|")
    assert "> 0.0001 on 64 test images" in line and "removed (--keep-failed keeps them)" in line
    assert not out.exists()

    with pytest.raises(ExportCheckFailed, match=r"beyond tolerance: max \|dP\(fake\)\|") as failure:  # the library raises, with the report
        export(path, out, "onnx", check_data=data, keep_failed=True)
    assert f"kept and marked FAILED in {out / REPORT_NAME}" in str(failure.value)
    report = json.loads((out / REPORT_NAME).read_text())
    assert report == failure.value.result.report and not failure.value.result.passed
    (entry,) = report["files"]
    assert not report["passed"] and report["kept_after_failure"] and entry["status"] == "failed"
    assert entry["max_abs_diff"] > 1e-4 and "max |dP(fake)|" in entry["reason"]
    pixels = _report_pixels(report, 48)
    _assert_report_matches(entry, _onnxruntime_p_fake(out / "simple_cnn_nano.onnx", pixels), model.predict(pixels, verbose=0)[:, 1].astype(np.float64))


def _onnxruntime_p_fake(path, pixels):
    """P(fake) of an ONNX file run by onnxruntime here (not through the package's runner)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["p_fake"], {"pixels": pixels.astype(np.float32)})[0]


def test_converter_errors_name_the_ops():
    message = "Some ops are not supported by the native TFLite runtime\nDetails:\n\ttf.Roll(tensor<?x14x14x64xf32>) -> ()\n\ttf.Roll(tensor<?x7x7xf32>)"
    assert _unsupported_ops(RuntimeError(message)) == ["tf.Roll"]
    assert _unsupported_ops(RuntimeError("no ops here"), "log: tf.Erfc(x)") == ["tf.Erfc"]


@pytest.mark.parametrize("name", ["simple_cnn_nano", "defax_nano"])
def test_onnx_matches_keras(name, tiny_demo, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    keras.utils.set_random_seed(0)
    model = build_model(name)
    result = export(model, tmp_path, "onnx", check_data=tiny_demo)
    (path,) = result.paths
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["pixels"]
    assert sorted(o.name for o in session.get_outputs()) == ["p_fake", "probabilities"]
    pixels = _report_pixels(result.report, 112)
    probabilities, p_fake = session.run(["probabilities", "p_fake"], {"pixels": pixels})
    np.testing.assert_allclose(probabilities, model.predict(pixels, verbose=0), atol=1e-4)
    np.testing.assert_allclose(p_fake, probabilities[:, 1], atol=1e-7)
    assert result.report["check_images"]["data"] == str(tiny_demo) and result.checks[0].status == "passed"
    if name == "defax_nano":  # the Swin branch's GELUs and layer norms, written the way the runtimes fuse them
        import onnx

        nodes = onnx.load(str(path)).graph.node
        readers = {name: [n.op_type for n in nodes if name in n.input] for n in nodes for name in n.output}
        erfs = [n for n in nodes if n.op_type == "Erf"]
        assert erfs and all(readers[n.output[0]] == ["Add"] for n in erfs)
        assert sum(n.op_type == "LayerNormalization" for n in nodes) >= 2 and not any(n.op_type == "Reciprocal" for n in nodes)


def test_onnx_export_optimizes_in_place_falls_back_and_writes_once(cnn, monkeypatch, tmp_path):
    """Issue 20: tf2onnx's optimizers first run in place (no graph copy per optimizer); if that fails the
    conversion is redone tf2onnx's default way; neither the setting nor the patched `Node.update_proto` outlasts
    the export, and the file is written once, never read back."""
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    tf2onnx = pytest.importorskip("tf2onnx")
    optimize_graph, update_proto, calls = tf2onnx.optimizer.optimize_graph, tf2onnx.graph.Node.update_proto, []

    def in_place_fails(graph, catch_errors=True, optimizers=None):
        calls.append(catch_errors)
        if not catch_errors:
            raise RuntimeError("an optimizer failed")
        return optimize_graph(graph, catch_errors, optimizers)

    monkeypatch.setattr(tf2onnx.optimizer, "optimize_graph", in_place_fails)
    monkeypatch.setattr(onnx, "load", lambda *args, **kwargs: pytest.fail("the ONNX file was read back"))
    monkeypatch.delenv(tf2onnx.constants.ENV_TF2ONNX_CATCH_ERRORS, raising=False)
    path = convert.export_onnx(cnn[1], tmp_path)
    assert calls == [False, True] and tf2onnx.constants.ENV_TF2ONNX_CATCH_ERRORS not in os.environ
    assert tf2onnx.graph.Node.update_proto is update_proto
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["pixels"]
    assert sorted(o.name for o in session.get_outputs()) == ["p_fake", "probabilities"]


def test_onnx_float32_and_int8_are_checked_on_a_demo_trained_model(trained, tmp_path):
    """The static int8 file is calibrated on train images and checked, like the float32 one, on held-out test images
    against Keras: the report's agreement and mean |dP(fake)| equal what onnxruntime gives here."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("tf2onnx")
    path, model, data = trained
    result = export(path, tmp_path, "onnx", quantize="int8", calibration=data, calibration_images=64, check_data=data)
    float_file, int8_file = tmp_path / "simple_cnn_nano.onnx", tmp_path / "simple_cnn_nano.int8.onnx"
    assert result.paths == [float_file, int8_file] and result.passed
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= {node.op_type for node in onnx.load(str(int8_file)).graph.node}
    report = json.loads((tmp_path / REPORT_NAME).read_text())
    pixels = _report_pixels(report, 48)
    expected = model.predict(pixels, verbose=0)[:, 1].astype(np.float64)
    assert np.std(expected) > 0.2
    for file, entry, precision in zip(result.paths, report["files"], ("float32", "int8")):
        assert (entry["path"], entry["precision"], entry["status"]) == (str(file), precision, "passed")
        _assert_report_matches(entry, _onnxruntime_p_fake(file, pixels), expected)
    assert report["files"][0]["max_abs_diff"] <= 1e-4
    assert report["files"][1]["agreement"] >= 0.995 and report["files"][1]["mean_abs_diff"] <= 0.02
    assert report["files"][1]["mean_abs_diff"] > 0  # really quantized: int8 is not bit-exact


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


def test_export_command_writes_versions_and_reports_parity(cnn, tiny_demo, tmp_path):
    path, _ = cnn
    for expected in ("1", "2"):
        result = subprocess.run([sys.executable, "-m", "defax_keras.cli", "export", "-m", str(path), "-o", str(tmp_path / "base"), "--check-data", str(tiny_demo)], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        version = tmp_path / "base" / expected
        assert result.stdout.splitlines() == [f"Exported {version}", f"Report {version / REPORT_NAME}"]
        assert "max |P(fake) - Keras|" in result.stderr and "of 16 check images (test split of" in result.stderr
        assert json.loads((version / REPORT_NAME).read_text())["files"][0]["status"] == "passed"
    result = subprocess.run([sys.executable, "-m", "defax_keras.cli", "export", "-m", str(path), "-o", str(tmp_path / "base"), "--version", "1"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [f"defax: error: {tmp_path / 'base' / '1'} already exists; TF Serving versions are immutable: choose another --version"]


# --------------------------------------------------------------------------- ONNX int8 and .onnx models


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "defax_keras.cli", *args], capture_output=True, text=True, timeout=600)


def test_onnx_int8_export_is_served_by_predict(cnn, mixed_folder, tiny_demo, tmp_path):
    """`--quantize int8` writes a QDQ int8 file next to the float32 one, and `defax predict` and `defax serve`
    run both files through ONNX Runtime (their parity on a trained model is checked above)."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    path, model = cnn
    out = tmp_path / "onnx"
    result = _cli(
        "export", "-m", str(path), "-o", str(out), "--format", "onnx", "--quantize", "int8",
        "--calibration", str(tiny_demo), "--calibration-images", "32", "--check-data", str(tiny_demo),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    float_file, int8_file = out / "simple_cnn_nano.onnx", out / "simple_cnn_nano.int8.onnx"
    assert result.stdout.splitlines() == [f"Exported {float_file}", f"Exported {int8_file}", f"Report {out / REPORT_NAME}"]
    assert f"{int8_file}: max |P(fake) - Keras| =" in result.stderr

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
        (["export", "-m", str(path), "-o", str(tmp_path), "--min-agreement", "1.5"], "--min-agreement must be in [0, 1]"),
        (["export", "-m", str(path), "-o", str(tmp_path), "--check-images", "0"], "--check-images must be positive"),
        (["export", "-m", str(path), "-o", str(tmp_path), "--check-data", str(tmp_path / "nowhere")], "data path not found"),
        (["predict", "-m", str(tmp_path / "other.onnx"), str(tmp_path / "images")], "is not a DeFaX ONNX export"),
        (["predict", "-m", str(tmp_path / "broken.onnx"), str(tmp_path / "images")], "is not a readable ONNX model"),
    ]:
        result = _cli(*args)
        assert result.returncode == 2, result.stderr[-2000:]
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], result.stderr
