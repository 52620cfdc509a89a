"""OpenVINO: IR export checked against Keras, NNCF int8 with accuracy control, the predictor, `--engine`, and the web app."""

import io
import json
import os
import sys

import numpy as np
import pytest
from helpers import demo_trained_cnn, encode, pattern

from defax_keras.data.files import load_image
from defax_keras.errors import DefaxError
from defax_keras.export import convert
from defax_keras.export.convert import ExportCheckFailed, export
from defax_keras.export.openvino_ir import choose_precision, compile_ir
from defax_keras.export.parity import REPORT_NAME
from defax_keras.inference import OpenVINOPredictor, load_predictor
from defax_keras.inference import engines as engines_module
from defax_keras.inference.engines import open_engine

ov = pytest.importorskip("openvino")
pytest.importorskip("nncf")
pytest.importorskip("tf2onnx")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return demo_trained_cnn(tmp_path_factory.mktemp("trained"))


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """The float32 IR and the NNCF int8 IR of the trained model, checked on its test images."""
    path, _, data = trained
    folder = tmp_path_factory.mktemp("openvino")
    result = export(path, folder, "openvino", quantize="int8", calibration=data, calibration_images=64, check_data=data)
    return result, folder


def _report_pixels(report, size=48):
    return np.stack([load_image(f, size) for f in report["check_images"]["files"]])


def _openvino_p_fake(path, pixels):
    """The file run by OpenVINO's own API here, in float32: an independent reading of what the export wrote."""
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return np.asarray(compiled({"pixels": pixels.astype(np.float32)})["probabilities"])[:, 1].astype(np.float64)


def test_float32_and_int8_irs_match_keras_on_held_out_images(trained, exported):
    """Both files are read back and run by OpenVINO next to Keras; the report's numbers are what OpenVINO gives here."""
    _, model, _ = trained
    result, folder = exported
    float_file, int8_file = folder / "simple_cnn_nano.xml", folder / "simple_cnn_nano.int8.xml"
    assert result.paths == [float_file, int8_file] and result.passed
    assert float_file.with_suffix(".bin").is_file() and int8_file.with_suffix(".bin").is_file()
    int8_ops = {op.get_type_name() for op in ov.Core().read_model(str(int8_file)).get_ops()}
    assert "FakeQuantize" in int8_ops  # really quantized
    report = json.loads((folder / REPORT_NAME).read_text())
    pixels = _report_pixels(report)
    expected = model.predict(pixels, verbose=0)[:, 1].astype(np.float64)
    assert np.std(expected) > 0.2 and report["check_images"]["split"] == "test"
    for file, entry in zip(result.paths, report["files"]):
        p_fake = _openvino_p_fake(file, pixels)
        delta = np.abs(p_fake - expected)
        assert entry["path"] == str(file) and entry["status"] == "passed"
        assert entry["max_abs_diff"] == pytest.approx(delta.max(), rel=1e-3, abs=1e-7)
        assert entry["agreement"] == pytest.approx(np.mean((p_fake >= 0.5) == (expected >= 0.5)))
    assert report["files"][0]["max_abs_diff"] <= 1e-4
    assert report["files"][1]["agreement"] >= 0.995 and 0 < report["files"][1]["mean_abs_diff"] <= 0.02


def test_the_predictor_and_predict_command_run_the_ir(trained, exported, capsys):
    from defax_keras.cli import main

    path, model, data = trained
    float_file = exported[0].paths[0]
    predictor = load_predictor(float_file)
    assert isinstance(predictor, OpenVINOPredictor) and predictor.kind == "openvino" and predictor.image_size == 48
    assert predictor.precision == choose_precision("auto")[0] and predictor.model is None
    pixels = np.random.default_rng(0).uniform(0, 255, (5, 48, 48, 3)).astype(np.float32)
    np.testing.assert_allclose(predictor.predict_pixels(pixels), model.predict(pixels, verbose=0), atol=1e-4)
    image = sorted((data / "real_vs_fake" / "real-vs-fake" / "test").rglob("*.jpg"))[0]
    assert main(["predict", "-m", str(float_file), str(image), "--format", "json", "--faces", "off"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    expected = float(model.predict(load_image(image, 48)[None], verbose=0)[0, 1])
    assert record["p_fake"] == pytest.approx(expected, abs=1e-4)


def test_a_damaged_ir_fails_its_check_and_is_removed(trained, monkeypatch, tmp_path, capsys):
    """One weight of the IR's .bin changed after conversion: exit 2, one line, .xml and .bin gone."""
    from defax_keras.cli import main
    from defax_keras.export import openvino_ir

    path, _, data = trained
    real_export = openvino_ir.export_openvino

    def damaged(model, output):
        xml = real_export(model, output)
        ir = ov.Core().read_model(str(xml))
        weights = [op for op in ir.get_ops() if op.get_type_name() == "Constant" and len(op.get_output_shape(0)) == 2][-1]
        values = weights.get_data().copy()
        values[np.unravel_index(np.abs(values).argmax(), values.shape)] *= -2
        weights.output(0).replace(ov.opset13.constant(values).output(0))
        damaged_xml = xml.with_name("damaged.xml")  # not over the .bin OpenVINO has mapped
        ov.save_model(ir, str(damaged_xml), compress_to_fp16=False)
        del ir, weights
        damaged_xml.with_suffix(".bin").replace(xml.with_suffix(".bin"))
        damaged_xml.replace(xml)
        return xml

    monkeypatch.setattr(convert, "export_openvino", damaged)
    out = tmp_path / "ir"
    assert main(["export", "-m", str(path), "-o", str(out), "--format", "openvino", "--check-data", str(data)]) == 2
    captured = capsys.readouterr()
    (line,) = [x for x in captured.err.splitlines() if x.startswith("defax: error:")]
    assert "simple_cnn_nano.xml differs from the Keras model beyond tolerance: max |dP(fake)|" in line and "Traceback" not in captured.err
    assert not out.exists()


def test_int8_below_the_agreement_rule_fails_unless_kept(trained, tmp_path):
    """The rule is a flag: an impossible mean |dP(fake)| of 0 fails the int8 file; kept, the report says so."""
    path, _, data = trained
    with pytest.raises(ExportCheckFailed, match=r"simple_cnn_nano.int8.xml differs .* mean \|dP\(fake\)\| .* > 0 ") as failure:
        export(path, tmp_path / "a", "openvino", quantize="int8", calibration=data, calibration_images=32, check_data=data, max_mean_diff=0.0)
    assert "removed" in str(failure.value) and not (tmp_path / "a").exists()
    with pytest.raises(ExportCheckFailed):
        export(path, tmp_path / "b", "openvino", quantize="int8", calibration=data, calibration_images=32, check_data=data, max_mean_diff=0.0,
               keep_failed=True)
    report = json.loads((tmp_path / "b" / REPORT_NAME).read_text())
    assert not report["passed"] and [f["status"] for f in report["files"]] == ["passed", "failed"]
    assert (tmp_path / "b" / "simple_cnn_nano.int8.bin").is_file()


def test_precision_follows_the_cpu():
    assert choose_precision("auto", ["FP32", "BF16", "INT8"]) == ("bf16", "the CPU has bfloat16 instructions")
    chosen, why = choose_precision("auto", ["FP32", "INT8"])
    assert chosen == "f32" and "no bfloat16 instructions (OpenVINO lists FP32, INT8)" in why
    with pytest.raises(DefaxError, match="this CPU has no bfloat16 support in OpenVINO"):
        choose_precision("bf16", ["FP32"])
    with pytest.raises(DefaxError, match="unknown OpenVINO precision 'fp8'"):
        choose_precision("fp8")


def test_compiled_precision_is_the_one_chosen(exported):
    compiled, chosen, _ = compile_ir(exported[0].paths[0], "auto")
    assert str(compiled.get_property("INFERENCE_PRECISION_HINT")) == {"f32": "<Type: 'float32'>", "bf16": "<Type: 'bfloat16'>"}[chosen]


def test_on_a_bfloat16_cpu_the_float_ir_is_also_checked_as_serving_compiles_it(trained, monkeypatch, tmp_path):
    """Where OpenVINO lists BF16, `auto` serves the float IR in bfloat16, so the export checks that run too:
    one file, two checks. (This CPU's list is replaced; OpenVINO then computes in what the CPU has.)"""
    from defax_keras.export import openvino_ir

    path, _, data = trained
    monkeypatch.setattr(openvino_ir, "cpu_capabilities", lambda: ["FP32", "BF16", "INT8"])
    result = export(path, tmp_path, "openvino", check_data=data, check_images=16)
    assert result.paths == [tmp_path / "simple_cnn_nano.xml"]
    assert [(c.path, c.precision) for c in result.checks] == [(str(result.paths[0]), "float32"), (str(result.paths[0]), "bfloat16")]
    assert [c["precision"] for c in json.loads((tmp_path / REPORT_NAME).read_text())["files"]] == ["float32", "bfloat16"]


def test_throughput_streams_keep_every_image_in_its_row(trained, exported):
    """THROUGHPUT runs one image per request on parallel streams; each row must still be its own image's."""
    _, _, data = trained
    pixels = _report_pixels(json.loads((exported[1] / REPORT_NAME).read_text()))[:12]
    streams = OpenVINOPredictor(exported[0].paths[0], "f32")
    if (os.cpu_count() or 1) > 1:
        assert int(streams._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")) > 1  # the streams path runs
    latency = OpenVINOPredictor(exported[0].paths[0], "f32", hint="LATENCY")
    reference = _openvino_p_fake(exported[0].paths[0], pixels)
    assert np.ptp(reference) > 1e-3  # the images differ, so a swapped row shows
    np.testing.assert_allclose(streams.predict_pixels(pixels)[:, 1], reference, atol=1e-5)
    np.testing.assert_allclose(latency.predict_pixels(pixels)[:, 1], reference, atol=1e-5)
    with pytest.raises(DefaxError, match="unknown OpenVINO performance hint 'FAST'; choose THROUGHPUT, LATENCY"):
        OpenVINOPredictor(exported[0].paths[0], hint="FAST")


def test_missing_openvino_and_bad_files_give_one_line(trained, monkeypatch, tmp_path):
    path, _, _ = trained
    (tmp_path / "m.xml").write_text("<net/>")
    with pytest.raises(DefaxError, match=r"has no weights file m.bin beside it"):
        load_predictor(tmp_path / "m.xml")
    (tmp_path / "m.bin").write_bytes(b"\0" * 8)
    with pytest.raises(DefaxError, match=r"m.xml is not a readable OpenVINO model"):
        load_predictor(tmp_path / "m.xml")
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(DefaxError, match=r"^OpenVINO is not installed: pip install 'defax-keras\[openvino\]'$"):
        export(path, tmp_path / "x", "openvino")
    with pytest.raises(DefaxError, match=r"^OpenVINO is not installed"):
        load_predictor(tmp_path / "m.xml")


# --------------------------------------------------------------------------- engines


def test_auto_picks_the_fastest_engine_that_matches_keras_and_caches_it(trained, monkeypatch):
    path, model, data = trained
    detector, choice = open_engine(path, "auto", check_data=data, check_images=32)
    speeds = {t.engine: t.images_per_s for t in choice.trials}
    assert set(speeds) == {"keras", "onnxruntime", "openvino"} and all(t.passed for t in choice.trials)
    assert choice.engine == max(speeds, key=speeds.get) and not choice.cached
    assert choice.describe().startswith(f"engine: {choice.engine} (float32): ")
    assert "32 test images of" in choice.describe()
    assert detector.model is not None and detector.path == path  # Keras stays for Grad-CAM and faces.json
    pixels = np.random.default_rng(1).uniform(0, 255, (4, 48, 48, 3)).astype(np.float32)
    np.testing.assert_allclose(detector.predict_pixels(pixels), model.predict(pixels, verbose=0), atol=1e-4)

    def no_images(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(engines_module.parity, "check_images", no_images)
    again, cached = open_engine(path, "auto", check_data=data, check_images=32)
    assert cached.cached and cached.engine == choice.engine and ", cached]" in cached.describe()


def test_an_engine_that_disagrees_with_keras_is_rejected(trained, monkeypatch):
    path, _, data = trained
    real = engines_module._converted

    def skewed(engine, model, folder):
        predictor = real(engine, model, folder)
        if engine == "openvino":
            run = predictor.predict_pixels
            predictor.predict_pixels = lambda pixels: run(pixels)[:, ::-1]  # labels swapped
        return predictor

    monkeypatch.setattr(engines_module, "_converted", skewed)
    with pytest.raises(DefaxError, match=r"^openvino \(float32\) differs from the Keras model beyond tolerance: max \|dP\(fake\)\| .* use --engine keras$"):
        open_engine(path, "openvino", check_data=data, check_images=32, use_cache=False)
    detector, choice = open_engine(path, "auto", check_data=data, check_images=32, use_cache=False)
    assert choice.engine != "openvino" and "openvino (float32):" in choice.describe() and "REJECTED: max |dP(fake)|" in choice.describe()


def test_engine_errors_are_one_line(trained, exported):
    path, _, _ = trained
    with pytest.raises(DefaxError, match=r"simple_cnn_nano.xml is an openvino export: it runs in its own engine, not --engine onnxruntime"):
        open_engine(exported[0].paths[0], "onnxruntime")
    with pytest.raises(DefaxError, match="unknown engine 'tensorrt'"):
        open_engine(path, "tensorrt")
    predictor, choice = open_engine(exported[0].paths[0], "auto")
    assert predictor.kind == "openvino" and choice.reason.startswith("the file is an openvino export")


def test_predict_command_says_which_engine_and_why(trained, capsys):
    from defax_keras.cli import main

    path, model, data = trained
    image = sorted((data / "real_vs_fake" / "real-vs-fake" / "test").rglob("*.jpg"))[0]
    assert main(["predict", "-m", str(path), str(image), "--engine", "openvino", "--format", "json", "--faces", "off"]) == 0
    captured = capsys.readouterr()
    assert "engine: openvino (float32): asked for, and it matches Keras [" in captured.err
    (record,) = json.loads(captured.out)
    assert record["p_fake"] == pytest.approx(float(model.predict(load_image(image, 48)[None], verbose=0)[0, 1]), abs=1e-4)


# --------------------------------------------------------------------------- web app


def test_web_app_explains_through_keras_when_an_engine_serves_a_keras_model(trained, exported):
    from defax_keras.web.app import create_app
    from defax_keras.web.server import build_service

    path, _, _ = trained
    service = build_service(path, batching=False, engine="openvino")
    client = create_app(service).test_client()
    info = client.get("/api/info").json
    assert info["explain"] == ["gradcam"] and info["explain_note"] is None and info["engine"]["engine"] == "openvino"
    files = {"files": [(io.BytesIO(encode(pattern(60, 60), "PNG")), "face.png")]}
    (result,) = client.post("/api/predict?explain=gradcam&faces=off", data=files, content_type="multipart/form-data").json["results"]
    assert result["gradcam"].startswith("data:image/png;base64,")
    service.close()

    bare = build_service(exported[0].paths[0], batching=False)
    client = create_app(bare).test_client()
    info = client.get("/api/info").json
    assert info["explain"] == [] and info["explain_note"].startswith("Grad-CAM is off: this server runs an OpenVINO export")
    answer = client.post("/api/predict?explain=gradcam", data={"files": []}, content_type="multipart/form-data")
    assert answer.status_code == 400 and answer.json["error"] == info["explain_note"]
    bare.close()
