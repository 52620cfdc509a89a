"""The web app: API, bad input and security (Flask test client), micro-batching, and the real page in headless Chromium."""

import csv
import importlib.util
import io
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import blank_gradcam_model, corrupt_middle_png, decompression_bomb_png, encode, jpeg_with_orientation, pattern
from photos import background, iou, two_faces

from defax_keras.data.files import decode_image_bytes
from defax_keras.models import build_model
from defax_keras.web.app import MAX_REQUEST_BYTES, MAX_VIDEO_BYTES, MULTIPART_SLACK, create_app, neutralize_cell
from defax_keras.web.batcher import MicroBatcher
from defax_keras.web.server import build_service

XSS_NAME = "<img src=x onerror=alert(1)>.png"


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("web_model") / "simple_cnn_nano.keras"
    build_model("simple_cnn_nano").save(path)
    return path


@pytest.fixture(scope="module")
def service(model_path):
    service = build_service(model_path)
    yield service
    service.close()


@pytest.fixture(scope="module")
def client(service):
    return create_app(service).test_client()


def _post(client, files, query=""):
    data = {"files": [(io.BytesIO(content), name) for name, content in files]}
    return client.post(f"/api/predict{query}", data=data, content_type="multipart/form-data")


def test_info_and_health(client):
    assert client.get("/healthz").json == {"status": "ok"}
    info = client.get("/api/info").json
    assert info["model"] == "simple_cnn_nano" and info["image_size"] == 112
    assert info["classes"] == ["real", "fake"] and info["explain"] == ["gradcam"]
    assert info["max_request_bytes"] == MAX_VIDEO_BYTES + MULTIPART_SLACK and info["max_files"] == 64  # room for a video
    assert info["threshold"] == 0.5
    assert {key: info["video"][key] for key in ("max_bytes", "max_seconds", "max_frames", "frames", "aggregates")} == {
        "max_bytes": 50 * 1024 * 1024, "max_seconds": 120.0, "max_frames": 128, "frames": 32, "aggregates": ["mean", "confident", "max"]}
    assert info["video"]["available"] is (importlib.util.find_spec("av") is not None)


def test_predict_keeps_upload_order_and_matches_the_model(client, service):
    image = pattern(150, 120)
    files = [("one.jpg", encode(image, "JPEG", quality=92)), ("two.png", encode(pattern(90, 130, seed=3), "PNG")), ("bad.jpg", b"text")]
    response = _post(client, files, "?faces=off")  # whole images, as before faces
    assert response.status_code == 200
    results = response.json["results"]
    assert [r["name"] for r in results] == ["one.jpg", "two.png", "bad.jpg"]
    expected = service.predictor.predict_pixels(np.stack([decode_image_bytes(content, 112) for _, content in files[:2]]))
    for result, (p_real, p_fake) in zip(results[:2], expected):
        assert result["p_fake"] == pytest.approx(p_fake, abs=1e-5) and result["p_real"] == pytest.approx(p_real, abs=1e-5)
        assert result["label"] == ("fake" if p_fake >= 0.5 else "real")
        assert result["scored"] == "whole" and result["faces"] == []
    assert (results[0]["width"], results[0]["height"]) == (150, 120)
    assert set(results[2]) == {"name", "error"}
    # the server's default (auto) looks for faces in these photos, and finds none
    assert [r["label"] for r in _post(client, files[:2]).json["results"]] == ["no face", "no face"]


# --------------------------------------------------------------------------- faces


@pytest.fixture(scope="module")
def group_photo():
    """The two-face test photo as an upload, and where its faces are (left, right)."""
    image, boxes = two_faces()
    return encode(image, "JPEG", quality=92), boxes


def _matches(faces, boxes):
    """Whether every expected box has a detected face with IoU >= 0.5."""
    return all(max(iou(face["box"], box) for face in faces) >= 0.5 for box in boxes)


def test_the_api_scores_each_face_and_says_when_there_is_none(client, group_photo):
    content, boxes = group_photo
    files = [("group.jpg", content), ("cup.jpg", encode(background(400, 300), "JPEG")), ("crop.png", encode(pattern(128, 128), "PNG"))]
    group, cup, crop = _post(client, files).json["results"]
    assert group["scored"] == "faces" and len(group["faces"]) == 2 and _matches(group["faces"], boxes)
    assert (group["width"], group["height"]) == (960, 640)
    for face in group["faces"]:
        assert set(face) == {"box", "landmarks", "confidence", "p_fake", "label"} and face["confidence"] >= 0.9
        assert set(face["landmarks"]) == {"left_eye", "right_eye", "nose", "mouth_left", "mouth_right"}
        assert face["label"] == ("fake" if face["p_fake"] >= 0.5 else "real")
    assert group["p_fake"] == max(face["p_fake"] for face in group["faces"])
    assert cup["label"] == "no face" and cup["p_fake"] is None and cup["faces"] == [] and cup["scored"] == "no-face"
    assert crop["scored"] == "whole" and crop["faces"] == [] and crop["p_fake"] is not None  # a square crop is scored whole under auto
    (largest,) = _post(client, [("group.jpg", content)], "?faces=largest").json["results"][0]["faces"]
    assert largest["box"] == max(group["faces"], key=lambda f: f["box"][2] - f["box"][0])["box"]
    (whole,) = _post(client, [("group.jpg", content)], "?faces=off").json["results"]
    assert whole["scored"] == "whole" and whole["faces"] == []


def test_bad_faces_values_are_refused(client):
    response = _post(client, [("a.png", encode(pattern(20, 20), "PNG"))], "?faces=bogus")
    assert response.status_code == 400
    assert response.json["error"] == "unknown faces='bogus'; one of auto, off, largest, all"


def test_info_reports_the_face_settings_and_the_model_default_applies(client, model_path, tmp_path):
    from defax_keras.faces import FaceSettings

    info = client.get("/api/info").json
    assert info["faces"] == FaceSettings().to_dict() and info["face_modes"] == ["auto", "off", "largest", "all"]
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(model_path, run / "model.keras")
    FaceSettings(mode="off", aggregate="mean").save(run)  # what training copies into its run directory
    recorded = build_service(run, batching=False, max_batch=2)
    try:
        assert recorded.faces.mode == "off" and create_app(recorded).test_client().get("/api/info").json["faces"]["aggregate"] == "mean"
        (row,) = _post(create_app(recorded).test_client(), [("one.jpg", encode(pattern(150, 120), "JPEG"))]).json["results"]
        assert row["scored"] == "whole"
    finally:
        recorded.close()


def test_gradcam_is_drawn_on_each_face_crop(client, group_photo):
    import base64

    from PIL import Image

    (result,) = _post(client, [("group.jpg", group_photo[0])], "?explain=gradcam").json["results"]
    assert "gradcam" not in result and len(result["faces"]) == 2
    overlays = [Image.open(io.BytesIO(base64.b64decode(face["gradcam"].split(",", 1)[1]))) for face in result["faces"]]
    assert [overlay.size for overlay in overlays] == [(112, 112)] * 2  # the aligned crop the model saw
    assert not np.array_equal(np.asarray(overlays[0]), np.asarray(overlays[1]))
    assert all(isinstance(face["gradcam_blank"], bool) for face in result["faces"])


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("text.jpg", b"just some text, named like a JPEG", "not an image"),
        ("empty.png", b"", "empty file"),
        ("truncated.jpg", encode(pattern(64, 64), "JPEG")[:400], "truncated JPEG"),
        ("bomb.png", decompression_bomb_png(30000), "too large"),
        ("damaged.png", corrupt_middle_png(), "corrupt PNG data"),
        ("animation.gif", encode(pattern(32, 32), "GIF"), "GIF images are not accepted"),
    ],
)
def test_bad_files_get_their_own_error_and_the_rest_is_answered(client, name, content, message):
    response = _post(client, [("good.png", encode(pattern(40, 40), "PNG")), (name, content)])
    assert response.status_code == 200
    good, bad = response.json["results"]
    assert "p_fake" in good
    assert set(bad) == {"name", "error"} and message in bad["error"], bad  # the bomb: "too large", from its header


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "I;16", "CMYK"])
def test_image_modes_are_converted(client, mode):
    fmt = "JPEG" if mode == "CMYK" else ("TIFF" if mode == "I;16" else "PNG")
    image = pattern(64, 48)
    if mode == "I;16":
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(image[..., 0].astype(np.uint16) * 257).save(buffer, "TIFF")
        content = buffer.getvalue()
    else:
        content = encode(image, fmt, mode=mode)
    (result,) = _post(client, [(f"image.{fmt.lower()}", content)]).json["results"]
    assert "p_fake" in result, result


def test_exif_orientation_is_applied(client, service):
    image = pattern(80, 40)
    rotated = jpeg_with_orientation(image, 6)  # stored landscape, shown portrait
    upright = encode(np.rot90(image, -1).copy(), "JPEG", quality=95)
    got = decode_image_bytes(rotated, 112)
    reference = decode_image_bytes(upright, 112)
    assert np.abs(got - reference).mean() < 8  # same picture up to JPEG noise
    assert "p_fake" in _post(client, [("rotated.jpg", rotated)]).json["results"][0]


def test_request_limits(service):
    app = create_app(service, max_files=3, max_video_bytes=1024 * 1024)  # a small video limit leaves the request limit at 20 MB
    client = app.test_client()
    response = client.post("/api/predict", data=b"x" * (MAX_REQUEST_BYTES + 1), content_type="multipart/form-data; boundary=b")
    assert response.status_code == 413 and "at most 20 MB" in response.json["error"]
    small = encode(pattern(20, 20), "PNG")
    response = _post(client, [(f"{i}.png", small) for i in range(4)])
    assert response.status_code == 413 and "at most 3 per request" in response.json["error"]
    assert client.post("/api/predict", data={}).status_code == 400
    assert "no files" in client.post("/api/predict", data={}).json["error"]
    assert _post(client, [("a.png", small)], "?explain=lime").status_code == 400


def test_gradcam_overlay_is_a_png(client):
    (result,) = _post(client, [("face.png", encode(pattern(100, 100), "PNG"))], "?explain=gradcam").json["results"]
    assert result["gradcam"].startswith("data:image/png;base64,")
    import base64

    from PIL import Image

    overlay = Image.open(io.BytesIO(base64.b64decode(result["gradcam"].split(",", 1)[1])))
    assert overlay.size == (112, 112)


def test_security_headers_and_escaping(client):
    for path in ("/", "/api/info", "/static/app.js"):
        headers = client.get(path).headers
        assert "script-src 'self'" in headers["Content-Security-Policy"] and "unsafe-inline" not in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff" and headers["X-Frame-Options"] == "DENY"
    page = client.get("/").get_data(as_text=True)
    assert "<script>" not in page and "onclick" not in page  # no inline scripts for the CSP to allow
    script = client.get("/static/app.js").get_data(as_text=True)
    assert "innerHTML" not in script  # names only ever go through textContent
    (result,) = _post(client, [(XSS_NAME, encode(pattern(30, 30), "PNG"))]).json["results"]
    assert result["name"] == XSS_NAME  # JSON carries the name as data; the page escapes it (browser test)


def test_csv_export_neutralises_formulas(client):
    rows = [
        {"name": "=HYPERLINK(\"http://x\")", "label": "fake", "p_real": 0.1, "p_fake": 0.9, "faces": [{"box": [1, 2, 3, 4]}, {"box": [5, 6, 7, 8]}]},
        {"name": "+1", "error": "not an image"},
        {"name": "-2.png", "label": "real", "p_real": 0.9, "p_fake": 0.1},
        {"name": "@SUM(A1)", "label": "real", "p_real": 0.8, "p_fake": 0.2},
        {"name": "plain.png", "label": "real", "p_real": 0.8, "p_fake": 0.2},
    ]
    response = client.post("/api/export.csv", json={"results": rows})
    assert response.status_code == 200 and response.mimetype == "text/csv"
    table = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [r["name"] for r in table] == ["'=HYPERLINK(\"http://x\")", "'+1", "'-2.png", "'@SUM(A1)", "plain.png"]
    assert table[1]["error"] == "not an image" and table[0]["p_fake"] == "0.9"
    assert [r["faces"] for r in table] == ["2", "", "", "", ""]  # a count of the faces sent
    assert neutralize_cell("\t=1") == "'\t=1" and neutralize_cell(None) == ""
    assert client.post("/api/export.csv", data="nope").status_code == 400


def test_nothing_is_written_to_disk(client, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    big = encode(np.random.default_rng(0).integers(0, 255, (900, 900, 3), dtype=np.uint8), "PNG")  # > Werkzeug's 500 KB spool size
    assert len(big) > 600_000
    assert "p_fake" in _post(client, [("big.png", big)]).json["results"][0]
    assert list(tmp_path.iterdir()) == []


def test_micro_batching_merges_concurrent_requests():
    calls = []

    def predict(batch):
        calls.append(len(batch))
        time.sleep(0.02)
        return np.tile([[0.25, 0.75]], (len(batch), 1)) * (1 + 0 * batch[:, :1, 0, 0])

    batcher = MicroBatcher(predict, max_batch=16, max_wait=0.05)
    images = [np.full((4, 4, 3), i, np.float32) for i in range(12)]
    with ThreadPoolExecutor(12) as pool:
        rows = list(pool.map(lambda image: batcher.predict_many([image])[0], images))
    batcher.close()
    assert all(np.allclose(row, [0.25, 0.75]) for row in rows)
    assert len(calls) < 12  # several requests shared a forward pass
    assert set(calls) <= {1, 2, 4, 8, 16}  # padded to a few traced shapes
    assert batcher.images == 12 and batcher.batches == len(calls)


def test_padding_to_bucket_sizes_keeps_rows():
    from defax_keras.web.batcher import bucket_sizes, padded_predict

    assert bucket_sizes(32) == [1, 2, 4, 8, 16, 32] and bucket_sizes(12) == [1, 2, 4, 8, 12]
    seen = []
    rows = padded_predict(lambda batch: seen.append(len(batch)) or batch[:, 0, 0, :2], np.arange(45 * 12, dtype=np.float32).reshape(45, 2, 2, 3), 32)
    assert seen == [32, 16] and rows.shape == (45, 2)
    np.testing.assert_array_equal(rows[:, 0], np.arange(45) * 12)
    seen.clear()  # an exported graph runs any size: no zeros computed
    rows = padded_predict(lambda batch: seen.append(len(batch)) or batch[:, 0, 0, :2], np.arange(45 * 12, dtype=np.float32).reshape(45, 2, 2, 3), 32, pad=False)
    assert seen == [32, 13]
    np.testing.assert_array_equal(rows[:, 0], np.arange(45) * 12)


def test_the_service_pads_batches_for_keras_only():
    """Keras traces one function per batch shape (padded to a few); an exported graph gets each batch as it is."""
    from defax_keras.faces import FaceSettings
    from defax_keras.web.app import DetectorService

    class Recording:
        image_size, name, path, threshold, model = 4, "recording", None, 0.5, None

        def __init__(self, any_batch_size):
            self.any_batch_size, self.sizes = any_batch_size, []

        def predict_pixels(self, pixels):
            self.sizes.append(len(pixels))
            return np.tile([[0.25, 0.75]], (len(pixels), 1))

    for any_batch_size, warm_up, served in ((False, [1, 2, 4, 8], [4]), (True, [1, 8], [3])):
        predictor = Recording(any_batch_size)
        service = DetectorService(predictor, batching=False, max_batch=8, faces=FaceSettings(mode="off"))  # no detector
        assert predictor.sizes == warm_up
        service.probabilities(np.zeros((3, 4, 4, 3), np.float32))
        assert predictor.sizes[len(warm_up):] == served
        service.close()


def test_micro_batching_returns_each_request_its_own_row():
    batcher = MicroBatcher(lambda batch: batch[:, 0, 0, :2], max_batch=8, max_wait=0.02)
    images = [np.full((2, 2, 3), i, np.float32) for i in range(20)]
    with ThreadPoolExecutor(8) as pool:
        rows = list(pool.map(lambda image: batcher.predict_many([image])[0], images))
    batcher.close()
    assert [row[0] for row in rows] == list(range(20))


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the stopped thread, on purpose
def test_micro_batcher_never_leaves_a_request_waiting():
    """A model that answers too few rows, or a batch that stops the thread, fails the waiting requests."""
    short = MicroBatcher(lambda batch: batch[:1, 0, 0, :2], max_batch=4, max_wait=5)
    futures = [short.submit(np.zeros((2, 2, 3))) for _ in range(2)]  # one batch: the second comes within max_wait
    for future in futures:
        with pytest.raises(RuntimeError, match="answered 1 rows for 2 images"):
            future.result(timeout=30)
    short.close()

    def stop(batch):
        raise SystemExit("the model thread is told to stop")

    stopping = MicroBatcher(stop, max_batch=2, max_wait=0)
    with pytest.raises(SystemExit):
        stopping.predict_many([np.zeros((2, 2, 3))])
    stopping._thread.join(timeout=30)
    with pytest.raises(RuntimeError, match="model thread has stopped"):
        stopping.submit(np.zeros((2, 2, 3)))


# --------------------------------------------------------------------------- videos

CLIP_FRAMES = 16


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 320x240 MP4 of 16 frames (0.64 s at 25 fps): one real face drifting to the right."""
    pytest.importorskip("av")
    from videos import moving_faces, write_video

    frames, _ = moving_faces(CLIP_FRAMES, size=(320, 240), people=(("astronaut", (0.3, 0.5), (0.7, 0.5), 90),))
    return write_video(tmp_path_factory.mktemp("web_video") / "clip.mp4", frames)


def _data_image(url: str, kind: str):
    import base64

    from PIL import Image

    assert url.startswith(f"data:image/{kind};base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def test_a_video_upload_gets_the_record_defax_predict_gives_and_a_crop_per_face(client, service, clip):
    from defax_keras.inference.predict import predict_files
    from defax_keras.video import VideoOptions

    (result,) = _post(client, [("clip.mp4", clip.read_bytes())], "?frames=6").json["results"]
    assert result["name"] == "clip.mp4" and result["kind"] == "video" and result["label"] in ("real", "fake")
    assert result["frames"] == 6 and result["frames_scored"] == 6 and result["aggregate"] == "mean"
    assert (result["width"], result["height"], result["duration"], result["fps"]) == (320, 240, 0.64, 25.0)
    timeline = result["timeline"]
    assert [f["index"] for f in timeline] == list(np.linspace(0, CLIP_FRAMES - 1, 6).astype(int))
    assert [f["time"] for f in timeline] == [round(f["index"] / 25, 3) for f in timeline]
    (track,) = result["tracks"]
    assert track["frames"] == 6 and all(len(f["faces"]) == 1 and f["faces"][0]["track"] == track["track"] for f in timeline)
    assert result["p_fake"] == pytest.approx(np.mean([f["p_fake"] for f in timeline]), abs=1e-5)
    for face in (f["faces"][0] for f in timeline):
        assert set(face) == {"track", "box", "confidence", "p_fake", "label", "crop"}  # no Grad-CAM unless asked
        assert face["label"] == ("fake" if face["p_fake"] >= 0.5 else "real")
        assert _data_image(face["crop"], "jpeg").size == (112, 112)  # the face's model input
    boxes = [f["faces"][0]["box"] for f in timeline]
    assert boxes[-1][0] > boxes[0][0] + 60  # the face moved right, and the boxes followed it
    # the same numbers as `defax predict`, which gets none of the page's fields
    (record,) = predict_files(service.predictor, [clip], faces=service.faces, video=VideoOptions(frames=6))
    assert record["kind"] == "video" and set(record) == set(result) - {"name", "width", "height", "duration", "fps"} | {"path"}
    assert record["p_fake"] == pytest.approx(result["p_fake"], abs=1e-5)
    assert [set(face) for f in record["timeline"] for face in f["faces"]] == [{"track", "box", "confidence", "p_fake"}] * 6
    assert [f["index"] for f in record["timeline"]] == [f["index"] for f in timeline]


def test_video_aggregate_and_frames_are_per_request(client, clip):
    (result,) = _post(client, [("clip.mp4", clip.read_bytes())], "?frames=5&video_aggregate=max").json["results"]
    assert result["aggregate"] == "max" and result["frames"] == 5
    assert result["p_fake"] == pytest.approx(max(f["p_fake"] for f in result["timeline"]), abs=1e-6)
    assert result["tracks"][0]["p_fake"] == pytest.approx(result["p_fake"], abs=1e-6)


def test_gradcam_is_drawn_on_every_video_face(client, clip):
    (result,) = _post(client, [("clip.mp4", clip.read_bytes())], "?frames=3&explain=gradcam").json["results"]
    faces = [face for f in result["timeline"] for face in f["faces"]]
    assert len(faces) == 3 and "gradcam" not in result
    for face in faces:
        assert _data_image(face["gradcam"], "png").size == (112, 112)
        assert isinstance(face["gradcam_blank"], bool) and ("gradcam_note" in face) == face["gradcam_blank"]


def test_the_content_decides_not_the_name(client, clip):
    frame = encode(background(320, 240), "JPEG")
    photo, video = _post(client, [("photo.mp4", frame), ("video.jpg", clip.read_bytes())], "?frames=4").json["results"]
    assert "kind" not in photo and photo["label"] == "no face" and photo["scored"] == "no-face"
    assert video["kind"] == "video" and video["frames"] == 4


def test_videos_over_the_limits_are_refused(service, clip):
    data = clip.read_bytes()
    small = create_app(service, max_video_bytes=len(data) - 1).test_client()
    response = _post(small, [("photo.png", encode(pattern(40, 40), "PNG")), ("clip.mp4", data)])
    assert response.status_code == 413 and response.json["error"].startswith("video 'clip.mp4' is ") and "per video" in response.json["error"]
    assert small.get("/api/info").json["video"]["max_bytes"] == len(data) - 1
    short = create_app(service, max_video_seconds=0.5).test_client()
    response = _post(short, [("clip.mp4", data)])
    assert response.status_code == 400 and response.json["error"] == "video 'clip.mp4' lasts 0.6 s: at most 0.5 s per video"
    assert _post(create_app(service, max_video_seconds=0.7).test_client(), [("clip.mp4", data)], "?frames=2").status_code == 200


@pytest.mark.parametrize(
    "query, message",
    [
        ("?frames=0", "frames must be an integer from 1 to 128, got '0'"),
        ("?frames=129", "frames must be an integer from 1 to 128, got '129'"),
        ("?frames=many", "frames must be an integer from 1 to 128, got 'many'"),
        ("?video_aggregate=median", "unknown video_aggregate='median'; one of mean, confident, max"),
    ],
)
def test_bad_video_options_are_refused(client, query, message):
    response = _post(client, [("a.png", encode(pattern(20, 20), "PNG"))], query)
    assert response.status_code == 400 and response.json["error"] == message


def _audio_only_mp4() -> bytes:
    """A few frames of silence in an MP4 container: the header says video container, the file holds no video stream."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        for _ in range(5):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 16000
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def test_broken_and_faceless_videos_are_per_file_results(client, clip, tmp_path):
    from videos import write_video

    corrupt = b"\x00\x00\x00\x18ftypmp42" + np.random.default_rng(0).integers(0, 255, 4000, dtype=np.uint8).tobytes()
    room = write_video(tmp_path / "room.mp4", [background(160, 120)] * 8).read_bytes()
    files = [("clip.mp4", clip.read_bytes()), ("bad.mp4", corrupt), ("room.webm", room), ("song.m4a", _audio_only_mp4())]
    good, bad, faceless, audio = _post(client, files, "?frames=4").json["results"]
    assert good["kind"] == "video" and good["p_fake"] is not None
    assert set(bad) == {"name", "kind", "error"} and bad["error"].startswith("unreadable video"), bad
    assert audio == {"name": "song.m4a", "kind": "video", "error": "no video stream (an audio-only or empty file?)"}
    assert faceless["label"] == "no face" and faceless["p_fake"] is None and faceless["frames"] == 4 and faceless["frames_scored"] == 0
    assert faceless["tracks"] == [] and all(f["faces"] == [] for f in faceless["timeline"])


def test_without_pyav_a_video_gets_an_error_naming_the_extra(client, clip, monkeypatch):
    from defax_keras.errors import DefaxError
    from defax_keras.video import decode

    def missing():
        raise DefaxError('reading videos needs PyAV: pip install "defax-keras[video]"')

    monkeypatch.setattr(decode, "require_av", missing)
    photo, video = _post(client, [("a.png", encode(pattern(40, 40), "PNG")), ("clip.mp4", clip.read_bytes())]).json["results"]
    assert "p_fake" in photo
    assert video == {"name": "clip.mp4", "kind": "video", "error": 'reading videos needs PyAV: pip install "defax-keras[video]"'}


def test_csv_export_counts_video_frames_and_tracks(client):
    rows = [
        {"name": "clip.mp4", "kind": "video", "label": "fake", "p_real": 0.2, "p_fake": 0.8, "frames": 12, "tracks": [{"track": 0}, {"track": 1}]},
        {"name": "a.png", "label": "real", "p_real": 0.9, "p_fake": 0.1, "faces": [{"box": [1, 2, 3, 4]}]},
    ]
    table = list(csv.DictReader(io.StringIO(client.post("/api/export.csv", json={"results": rows}).get_data(as_text=True))))
    assert [(r["kind"], r["frames"], r["tracks"], r["faces"]) for r in table] == [("video", "12", "2", ""), ("", "", "", "1")]


# --------------------------------------------------------------------------- the page in a browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def live_server(service):
    from waitress import create_server

    server = create_server(create_app(service), host="127.0.0.1", port=0, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.effective_port}"
    server.close()


@pytest.fixture
def browser(tmp_path):
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's chromium and chromium-driver (.ci/run does)")
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"download.default_directory": str(tmp_path / "downloads"), "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def _wait(predicate, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out waiting for the page")


def test_the_page_in_headless_chromium(live_server, browser, tmp_path, group_photo):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    images = tmp_path / "upload"
    images.mkdir()
    first = images / "portrait.jpg"
    first.write_bytes(encode(pattern(140, 140, seed=1), "JPEG"))  # square: scored whole, like an aligned crop
    second = images / XSS_NAME
    second.write_bytes(encode(pattern(120, 120, seed=2), "PNG"))
    group = images / "group.jpg"
    group.write_bytes(group_photo[0])
    cup = images / "cup.jpg"
    cup.write_bytes(encode(background(400, 300), "JPEG"))

    browser.get(live_server + "/")
    _wait(lambda: "simple_cnn_nano" in browser.find_element(By.ID, "model-info").text)
    assert "server default (auto" in browser.find_element(By.CSS_SELECTOR, "#faces-mode option").text
    browser.find_element(By.ID, "explain-toggle").click()
    browser.find_element(By.ID, "file-input").send_keys("\n".join(map(str, (first, second, group, cup))))
    cards = _wait(lambda: len(browser.find_elements(By.CSS_SELECTOR, ".card")) == 4 and browser.find_elements(By.CSS_SELECTOR, ".card"))
    names = [card.find_element(By.CSS_SELECTOR, ".name").text for card in cards]
    assert names == ["portrait.jpg", XSS_NAME, "group.jpg", "cup.jpg"]  # the name is shown as text ...
    with pytest.raises(NoAlertPresentException):
        _ = browser.switch_to.alert.text  # ... and its onerror never ran
    assert not browser.find_elements(By.CSS_SELECTOR, ".name img")
    for card in cards[:3]:
        assert card.find_element(By.CSS_SELECTOR, ".verdict").text.split(" ")[0] in ("Real", "Fake")
        meter = card.find_element(By.CSS_SELECTOR, "meter.confidence")
        assert 0.0 <= float(meter.get_attribute("value")) <= 1.0
        assert "real" in card.find_element(By.CSS_SELECTOR, ".p-real").text

    # the group photo: a box and a verdict chip over each face, where the face is, and each face's own Grad-CAM
    boxes = cards[2].find_elements(By.CSS_SELECTOR, ".face-box")
    chips = [box.find_element(By.CSS_SELECTOR, ".chip").text for box in boxes]
    assert len(boxes) == 2 and [chip.split(" ")[0] for chip in chips] == ["1", "2"]
    assert all(chip.split(" ")[2] in ("real", "fake") and chip.endswith("%") for chip in chips), chips
    photo = cards[2].find_element(By.CSS_SELECTOR, ".frame img").rect
    scale = photo["width"] / 960
    assert photo["height"] == pytest.approx(640 * scale, abs=2)  # the frame has the photo's shape
    drawn = [(b.rect["x"] - photo["x"], b.rect["y"] - photo["y"], b.rect["x"] + b.rect["width"] - photo["x"], b.rect["y"] + b.rect["height"] - photo["y"]) for b in boxes]
    expected = [tuple(v * scale for v in box) for box in group_photo[1]]
    assert all(max(iou(d, e) for d in drawn) >= 0.5 for e in expected), (drawn, expected)
    crops = cards[2].find_elements(By.CSS_SELECTOR, ".face-gradcam")
    assert len(crops) == 2 and all(crop.is_displayed() and crop.get_attribute("src").startswith("data:image/png;base64,") for crop in crops)
    assert _wait(lambda: all(browser.execute_script("return arguments[0].naturalWidth", crop) == 112 for crop in crops))
    assert [item.text.split(" ·")[0] for item in cards[2].find_elements(By.CSS_SELECTOR, ".face-text")] == ["Face 1", "Face 2"]
    assert "2 faces" in cards[2].find_element(By.CSS_SELECTOR, ".face-note").text

    # the faceless photo says so, without a score
    assert "noface" in cards[3].get_attribute("class")
    assert cards[3].find_element(By.CSS_SELECTOR, ".verdict").text == "No face found"
    assert not cards[3].find_element(By.CSS_SELECTOR, ".probabilities").is_displayed()
    assert "no face found in 1" in browser.find_element(By.ID, "status").text

    toggle = cards[0].find_element(By.CSS_SELECTOR, ".gradcam-toggle")
    thumbnail = cards[0].find_element(By.TAG_NAME, "img")
    assert thumbnail.get_attribute("src").startswith("blob:")
    toggle.click()
    assert thumbnail.get_attribute("src").startswith("data:image/png;base64,") and toggle.text == "Show original"
    artefacts = Path(os.environ.get("DEFAX_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts"))
    artefacts.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(artefacts / "web_page.png"))
    assert (artefacts / "web_page.png").stat().st_size > 10_000
    browser.find_element(By.ID, "export-csv").click()
    exported = _wait(lambda: [p for p in (tmp_path / "downloads").glob("*.csv")] if (tmp_path / "downloads").is_dir() else None)
    rows = list(csv.DictReader(exported[0].open()))
    assert [r["name"] for r in rows] == ["portrait.jpg", XSS_NAME, "group.jpg", "cup.jpg"]
    assert [r["faces"] for r in rows] == ["", "", "2", "0"] and rows[3]["label"] == "no face"


def test_the_page_charts_a_video_and_opens_a_frame(live_server, browser, tmp_path, clip):
    """A video's card: verdict chip, counts, one chart line per track with a point per frame; a click shows that frame's face and Grad-CAM."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    from videos import write_video

    room = write_video(tmp_path / "upload" / "room.webm.mp4", [background(160, 120)] * 8)
    browser.get(live_server + "/")
    _wait(lambda: "simple_cnn_nano" in browser.find_element(By.ID, "model-info").text)
    assert "videos (.mp4" in browser.find_element(By.ID, "limits").text and "50 MB and 120 s" in browser.find_element(By.ID, "limits").text
    browser.find_element(By.ID, "explain-toggle").click()
    frames = browser.find_element(By.ID, "video-frames")
    frames.clear()
    frames.send_keys("6")
    Select(browser.find_element(By.ID, "video-aggregate")).select_by_value("max")
    browser.find_element(By.ID, "file-input").send_keys(f"{clip}\n{room}")
    cards = _wait(lambda: len(browser.find_elements(By.CSS_SELECTOR, ".card")) == 2 and browser.find_elements(By.CSS_SELECTOR, ".card"))
    video, faceless = cards
    assert "video-card" in video.get_attribute("class") and video.find_element(By.CSS_SELECTOR, ".name").text == "clip.mp4"
    assert video.find_element(By.CSS_SELECTOR, ".verdict-chip").text in ("Real", "Fake")
    summary = video.find_element(By.CSS_SELECTOR, ".video-summary").text
    assert "6 of 6 sampled frames with a face" in summary and "1 face track" in summary, summary
    assert "P(fake)" in video.find_element(By.CSS_SELECTOR, ".track-list").text
    assert len(video.find_elements(By.CSS_SELECTOR, ".chart .track-line")) == 1 and video.find_elements(By.CSS_SELECTOR, ".chart .threshold")
    points = video.find_elements(By.CSS_SELECTOR, ".chart .point")
    assert len(points) == 6 and {point.get_attribute("data-track") for point in points} == {"0"}
    assert [point.get_attribute("data-frame") for point in points] == [str(i) for i in np.linspace(0, CLIP_FRAMES - 1, 6).astype(int)]
    shown = [float(point.get_attribute("aria-label").rsplit(" ", 1)[1].rstrip("%")) / 100 for point in points]
    plotted = [1 - (float(point.get_attribute("cy")) - 12) / 160 for point in points]  # the chart's y axis: 0 at y=172, 1 at y=12
    assert plotted == pytest.approx(shown, abs=6e-4)
    meter = float(video.find_element(By.CSS_SELECTOR, "meter.confidence").get_attribute("value"))
    assert meter == pytest.approx(max(shown), abs=6e-4)  # video_aggregate=max was sent: the most suspicious frame's
    detail = video.find_element(By.CSS_SELECTOR, ".frame-detail")
    assert not detail.is_displayed()
    points[3].click()
    assert detail.is_displayed() and "selected" in points[3].get_attribute("class")
    assert video.find_element(By.CSS_SELECTOR, ".frame-text").text.startswith("0.36 s (frame 9) · track 1 · ")
    crop = video.find_element(By.CSS_SELECTOR, ".frame-crop")
    gradcam = video.find_element(By.CSS_SELECTOR, ".frame-gradcam")
    assert crop.get_attribute("src").startswith("data:image/jpeg;base64,") and gradcam.get_attribute("src").startswith("data:image/png;base64,")
    assert crop.is_displayed() and gradcam.is_displayed()
    assert _wait(lambda: all(browser.execute_script("return arguments[0].naturalWidth", image) == 112 for image in (crop, gradcam)))
    first = crop.get_attribute("src")
    points[0].click()
    assert video.find_element(By.CSS_SELECTOR, ".frame-text").text.startswith("0 s (frame 0)") and crop.get_attribute("src") != first
    assert "noface" in faceless.get_attribute("class") and faceless.find_element(By.CSS_SELECTOR, ".verdict").text == "No face found"
    assert "No face in any of the 6 sampled frames" in faceless.find_element(By.CSS_SELECTOR, ".face-note").text
    assert not faceless.find_elements(By.CSS_SELECTOR, ".chart")
    artefacts = Path(os.environ.get("DEFAX_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts"))
    artefacts.mkdir(parents=True, exist_ok=True)
    browser.execute_script("arguments[0].scrollIntoView()", video)
    video.screenshot(str(artefacts / "web_video.png"))
    assert (artefacts / "web_video.png").stat().st_size > 10_000
    browser.find_element(By.ID, "export-csv").click()
    exported = _wait(lambda: [p for p in (tmp_path / "downloads").glob("*.csv")] if (tmp_path / "downloads").is_dir() else None)
    rows = list(csv.DictReader(exported[0].open()))
    assert [(r["name"], r["kind"], r["frames"], r["tracks"], r["label"]) for r in rows][1] == ("room.webm.mp4", "video", "6", "0", "no face")
    assert (rows[0]["kind"], rows[0]["frames"], rows[0]["tracks"]) == ("video", "6", "1")


def test_the_page_shows_a_refused_upload(live_server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(live_server + "/")
    _wait(lambda: "simple_cnn_nano" in browser.find_element(By.ID, "model-info").text)
    big = tmp_path / "huge.png"
    limit = MAX_VIDEO_BYTES + MULTIPART_SLACK  # the request limit lets the largest video through
    big.write_bytes(b"\x89PNG" + os.urandom(limit + 1024))
    browser.find_element(By.ID, "file-input").send_keys(str(big))
    error = _wait(lambda: browser.find_element(By.ID, "error").text)
    assert "too large" in error and f"{round(limit / 1048576)} MB" in error


def test_serve_binds_to_loopback_by_default_and_passes_its_limits_on(model_path, monkeypatch):
    """The arguments reach the app and the waitress server; tests/test_server.py runs the real one and checks refused values."""
    from defax_keras.cli import build_parser, main
    from defax_keras.web.server import make_server, serve

    args = build_parser().parse_args(["serve", "-m", str(model_path)])
    assert (args.host, args.port, args.workers, args.max_files, args.channel_timeout) == ("127.0.0.1", 8000, 8, 64, 30)
    assert (args.max_video_mb, args.max_video_seconds) == (50.0, 120.0)
    calls = []
    monkeypatch.setattr("defax_keras.web.server.serve", lambda *args, **kwargs: calls.append(kwargs))
    assert main(["serve", "-m", str(model_path), "--max-video-mb", "5", "--max-video-seconds", "30", "--channel-timeout", "7"]) == 0
    assert (calls[0]["max_video_mb"], calls[0]["max_video_seconds"], calls[0]["channel_timeout"]) == (5.0, 30.0, 7)
    monkeypatch.undo()
    served, lines = [], []

    def built(app, *args):
        served.append((app, args))
        server = make_server(app, "127.0.0.1", 0, *args[2:])
        server.run = lambda: None
        return server

    monkeypatch.setattr("defax_keras.web.server.make_server", built)
    serve(model_path, port=0, workers=3, max_video_mb=2, max_video_seconds=9, channel_timeout=11, announce=lines.append)
    ((app, args),) = served
    info = app.test_client().get("/api/info").json
    assert (info["video"]["max_bytes"], info["video"]["max_seconds"], info["max_request_bytes"]) == (2 * 1024 * 1024, 9, 20 * 1024 * 1024)
    assert args == ("127.0.0.1", 0, 3, 11)
    assert lines[0].startswith("Serving simple_cnn_nano on http://127.0.0.1:") and "(3 threads, micro-batching" in lines[0]
    server = make_server(app, port=0, workers=2, channel_timeout=11)
    try:
        assert server.adj.max_request_body_size == server.adj.inbuf_overflow > app.config["MAX_CONTENT_LENGTH"]
        assert (server.adj.channel_timeout, server.adj.cleanup_interval) == (11, 2)
    finally:
        server.close()


def test_a_blank_gradcam_is_flagged_and_the_page_says_so(tmp_path):
    """A model whose Grad-CAM is all zero by construction (helpers.blank_gradcam_model): the API flags it and
    gives the notice; the page shows it as text (textContent), and the overlay is the bare image."""
    from defax_keras.explain.figures import blank_notice

    path = tmp_path / "blank.keras"
    blank_gradcam_model().save(path)
    blank_service = build_service(path)
    try:
        (result,) = _post(create_app(blank_service).test_client(), [("face.png", encode(pattern(100, 100), "PNG"))], "?explain=gradcam").json["results"]
    finally:
        blank_service.close()
    assert result["gradcam"].startswith("data:image/png;base64,")
    assert result["gradcam_blank"] is True
    assert result["gradcam_note"] == blank_notice(result["label"])
    script = (Path(__file__).parents[1] / "defax_keras" / "web" / "static" / "app.js").read_text()
    assert "note.textContent = `Grad-CAM is blank: ${result.gradcam_note" in script and "innerHTML" not in script


def test_gradcam_results_carry_the_blank_flag(client):
    (result,) = _post(client, [("face.png", encode(pattern(100, 100), "PNG"))], "?explain=gradcam").json["results"]
    assert isinstance(result["gradcam_blank"], bool)
    assert ("gradcam_note" in result) == result["gradcam_blank"]
