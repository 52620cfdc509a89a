"""The Flask application: a drag-and-drop page and a JSON API over one loaded model.

Uploads are data, never trusted: each file is checked by content (not by its
name), refused before decoding when its header claims too many pixels, and
kept in memory only (no temporary files); file names are escaped on the page
and neutralised in CSV exports. Photos are scored face by face (`FaceScorer`,
`?faces=` picks the mode per request); every face's crop goes through the
micro-batcher, so requests share the model.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import importlib.util
import io
import logging
import threading
from pathlib import Path

import numpy as np
from flask import Flask, Request, jsonify, request, send_from_directory
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from defax_keras import __version__
from defax_keras.constants import CLASS_NAMES, IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from defax_keras.data.formats import inspect_bytes
from defax_keras.errors import DefaxError
from defax_keras.faces.detector import FaceDetector
from defax_keras.faces.scoring import FaceScorer
from defax_keras.faces.settings import MODES, FaceSettings
from defax_keras.video.decode import VideoFileError, probe, sniff_video
from defax_keras.video.scoring import AGGREGATES, VideoOptions, VideoScorer
from defax_keras.web.batcher import DirectPredictor, MicroBatcher, bucket_sizes

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
ACCEPTED_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP")
ACCEPTED_EXTENSIONS = IMAGE_EXTENSIONS
MAX_REQUEST_BYTES = 20 * 1024 * 1024
MAX_FILES = 64
MAX_PIXELS = 40_000_000
"""Per image, read from the header before decoding (a few-KB PNG can claim 30000x30000)."""
MAX_VIDEO_BYTES = 50 * 1024 * 1024
MAX_VIDEO_SECONDS = 120.0
MAX_VIDEO_FRAMES = 128
"""`?frames=` at most: each sampled frame is detected, scored and sent back with its crops."""
MAX_FORM_MEMORY = 256 * 1024
"""Bytes of multipart part headers (names, file names) and non-file fields a request may hold: a huge one is a 413.

Werkzeug counts its parser's buffer, which holds up to 64 KB of file data at a time, so this stays well above that."""
FORM_PART_SLACK = 16
"""Multipart parts allowed beyond `max_files` (form fields a client may add): thousands of parts are a 413 before any is read."""
MULTIPART_SLACK = 1024 * 1024
"""Room for the multipart envelope (and a few photos) beside a video of the largest size allowed."""
CROP_SIDE = 112
"""A video face's `crop` (the model input, for the page's click-to-inspect) is at most this many pixels a side."""
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


class InMemoryRequest(Request):
    """Uploaded files stay in memory (bounded by the request limit): nothing reaches the disk."""

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        return io.BytesIO()


def neutralize_cell(value) -> str:
    """A CSV cell a spreadsheet will not evaluate: text starting with = + - @ (or tab/CR) gets a leading quote."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


CSV_COLUMNS = ("name", "kind", "label", "p_real", "p_fake", "faces", "face_note", "frames", "tracks", "error")


def results_csv(results) -> str:
    """The page's results as CSV; `faces` and `tracks` are written as counts (the page sends counts or the lists)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in results:
        row = {**row, **{key: len(row[key]) for key in ("faces", "tracks", "frames") if isinstance(row.get(key), list)}}
        writer.writerow([neutralize_cell(row.get(key)) for key in CSV_COLUMNS])
    return buffer.getvalue()


def image_size_of(data: bytes) -> tuple[int, int]:
    """`(width, height)` as the photo is shown (EXIF rotation applied), from its header: face boxes use these coordinates."""
    info = inspect_bytes(data, MAX_PIXELS)
    return (info.height, info.width) if info.orientation in (5, 6, 7, 8) else (info.width, info.height)


def _gradcam_targets(results, scored, threshold: float) -> list[tuple]:
    """`(json dict, model input, class)` for each thing the page explains: every face's aligned crop, or the whole image."""
    targets = []
    for record, photo in zip(results, scored):
        if photo.faces:
            targets += [(entry, face.pixels, int(face.p_fake >= threshold)) for entry, face in zip(record["faces"], photo.faces)]
        elif photo.pixels is not None:
            targets.append((record, photo.pixels, int(photo.p_fake >= threshold)))
    return targets


def video_available() -> bool:
    """Whether PyAV (the `video` extra) is installed: `/api/info` says so, so a page can tell before uploading."""
    return importlib.util.find_spec("av") is not None


def data_url(pixels, fmt: str = "JPEG", side: int | None = None) -> str:
    """A model input (float `[S, S, 3]` in [0, 255]) as a data URL, scaled down to `side` pixels when larger."""
    from PIL import Image

    image = Image.fromarray(np.clip(np.asarray(pixels), 0, 255).round().astype(np.uint8))
    if side is not None and max(image.size) > side:
        image = image.resize((side, side), Image.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"quality": 85} if fmt == "JPEG" else {}))
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def video_result(score, info, threshold: float) -> dict:
    """A video's JSON: `defax predict`'s record, the frame size its boxes refer to, and each face's `crop` for the page.

    `info` is the upload's `VideoInfo` (from `probe`); frames wider than `max_side` were scaled down
    while decoding, and the boxes are in those frames' pixels.
    """
    record = {"kind": "video", **score.record(threshold)}
    if score.error is not None:
        return record
    scale = min(1.0, VideoOptions().max_side / max(info.width, info.height, 1))
    record["width"], record["height"] = (max(2, round(info.width * scale)), max(2, round(info.height * scale))) if scale < 1 else (info.width, info.height)
    record["duration"], record["fps"] = round(info.duration, 3), round(info.fps, 3)
    for entry, frame in zip(record["timeline"], score.frames):
        for face_entry, face in zip(entry["faces"], frame.faces):
            face_entry["label"] = CLASS_NAMES[int(face.p_fake >= threshold)]
            face_entry["crop"] = data_url(face.pixels, side=CROP_SIDE)
    return record


def _video_gradcam_targets(scored) -> list[tuple]:
    """`(face json, model input, class)` for every face of every `(json, VideoScore)`: the page shows a frame's on click."""
    targets = []
    for record, score in scored:
        if score.error is not None:
            continue
        for entry, frame in zip(record["timeline"], score.frames):
            targets += [(face_entry, face.pixels, CLASS_NAMES.index(face_entry["label"])) for face_entry, face in zip(entry["faces"], frame.faces)]
    return targets


def _error(status: int, message: str):
    response = jsonify({"error": message})
    response.status_code = status
    return response


class DetectorService:
    """The model behind the app (a `defax_keras.inference.Predictor`): loaded once, warmed up, predictions
    through the batcher, labels at the predictor's operating threshold (a preset's own, else 0.5).

    `faces`: the face settings requests get by default (the model's `faces.json`, else auto); one
    face detector, built and warmed up with the model, serves every request.
    """

    def __init__(self, predictor, batching: bool = True, max_batch: int = 32, max_wait: float = 0.005, faces: FaceSettings | None = None):
        self.predictor = predictor
        self.image_size = predictor.image_size
        self.name = predictor.name
        self.threshold = float(getattr(predictor, "threshold", 0.5))
        self.max_batch = max_batch
        if faces is None:
            faces = FaceSettings.for_model(predictor.path) if predictor.path is not None else FaceSettings()
        self.faces = faces
        run, pad = predictor.predict_pixels, not predictor.any_batch_size
        for size in bucket_sizes(max_batch) if pad else [1, max_batch]:  # trace every batch shape before the port opens
            run(np.zeros((size, self.image_size, self.image_size, 3), np.float32))
        self.runner = MicroBatcher(run, max_batch, max_wait, pad) if batching else DirectPredictor(run, max_batch, pad)
        self.detector = FaceDetector.from_settings(faces)
        if faces.detects:  # build MTCNN's graphs now, not on the first upload
            self.detector.detect(np.zeros((120, 160, 3), np.uint8))
        self._explain_lock = threading.Lock()
        self._explainer = None
        self.engine = None  # the EngineChoice (`web.server.build_service` sets it)

    def probabilities(self, pixels) -> np.ndarray:
        """`[N, 2]` probabilities of model inputs, through the batcher (shared with other requests)."""
        return np.stack(self.runner.predict_many(list(pixels)))

    def settings_for(self, mode: str | None) -> FaceSettings:
        """The server's face settings, with a request's `faces` mode if it names one."""
        return self.faces.replace(mode=mode or None)

    def score(self, uploads: list[bytes], settings: FaceSettings, keep_pixels: bool = False) -> list:
        """A `PhotoScore` per upload, checked by content as the page promises (formats, pixel limit)."""
        scorer = FaceScorer(
            self.probabilities, self.image_size, settings, detector=self.detector, batch_size=self.max_batch,
            keep_pixels=keep_pixels, max_pixels=MAX_PIXELS, formats=ACCEPTED_FORMATS,
        )
        return scorer.score(uploads)

    def score_video(self, data: bytes, settings: FaceSettings, options: VideoOptions):
        """The `VideoScore` of an uploaded video (its encoded bytes), every face's model input kept for the page."""
        scorer = FaceScorer(self.probabilities, self.image_size, settings, detector=self.detector, batch_size=self.max_batch, keep_pixels=True)
        return VideoScorer.from_options(scorer, options).score(data)

    @property
    def can_explain(self) -> bool:
        return self.explain_note is None

    @property
    def explain_note(self) -> str | None:
        """Why Grad-CAM is off, in words for the page (None: it is on). An engine chosen for a Keras model
        (`--engine`) keeps the Keras model, which computes Grad-CAM on request."""
        from defax_keras.explain.model import explain_targets

        model = self.predictor.model
        if model is None:
            kind = {"saved_model": "a SavedModel", "onnx": "an ONNX", "openvino": "an OpenVINO"}.get(self.predictor.kind, "an exported")
            return (f"Grad-CAM is off: this server runs {kind} export, which has no Keras model to compute it with. "
                    "Serve the .keras model (with --engine for the same speed) to have it.")
        if not explain_targets(model):
            return "Grad-CAM is off: this model has no spatial feature map to explain."
        return None

    def gradcam_overlays(self, images, classes) -> list[tuple[str, bool]]:
        """Grad-CAM overlays (PNG data URLs) of each image's predicted class, at the model's first target.

        With each, whether the map is blank (all zero: no positive evidence for the class); a blank map's
        overlay is the bare image, never a uniform wash of the colour map.
        """
        from PIL import Image

        from defax_keras.explain.cam import blank_maps
        from defax_keras.explain.explain import Explainer
        from defax_keras.explain.figures import overlay
        from defax_keras.explain.model import explain_targets

        model = self.predictor.model
        with self._explain_lock:
            if self._explainer is None:
                self._explainer = Explainer(model, batch_size=16)
            target = explain_targets(model)[0]
            raw = self._explainer.raw_maps("gradcam", target, np.stack(images), np.asarray(classes))
            heat = self._explainer.heat("gradcam", raw, self.image_size)
        urls = []
        for image, map_, blank in zip(images, heat, blank_maps(raw)):
            buffer = io.BytesIO()
            Image.fromarray(overlay(image, None if blank else map_)).save(buffer, "PNG")
            urls.append(("data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"), bool(blank)))
        return urls

    def close(self) -> None:
        self.runner.close()
        self.detector.close()


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.3g} MB"


def _video_options(args):
    """`VideoOptions` from `?frames=` and `?video_aggregate=`, or the message of a 400."""
    raw = args.get("frames") or "32"
    try:
        frames = int(raw)
    except ValueError:
        frames = 0
    if not 1 <= frames <= MAX_VIDEO_FRAMES:
        return f"frames must be an integer from 1 to {MAX_VIDEO_FRAMES}, got {raw!r}"
    how = args.get("video_aggregate") or "mean"
    if how not in AGGREGATES:
        return f"unknown video_aggregate={how!r}; one of {', '.join(AGGREGATES)}"
    return VideoOptions(frames=frames, aggregate=how)


def create_app(service: DetectorService, max_files: int = MAX_FILES, max_request_bytes: int = MAX_REQUEST_BYTES,
               max_video_bytes: int = MAX_VIDEO_BYTES, max_video_seconds: float = MAX_VIDEO_SECONDS) -> Flask:
    """The app. A request may carry `max_request_bytes`, or more when needed to let one video of `max_video_bytes` through."""
    app = Flask(__name__, static_folder=None)
    app.request_class = InMemoryRequest
    max_request_bytes = max(max_request_bytes, max_video_bytes + MULTIPART_SLACK)
    app.config["MAX_CONTENT_LENGTH"] = max_request_bytes
    app.config["MAX_FORM_PARTS"] = max_files + FORM_PART_SLACK
    app.config["MAX_FORM_MEMORY_SIZE"] = MAX_FORM_MEMORY
    app.extensions["defax_service"] = service

    @app.after_request
    def security_headers(response):
        response.headers.update(SECURITY_HEADERS)
        if request.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_):
        if (request.content_length or 0) <= max_request_bytes:  # werkzeug's form limits, not the size
            return _error(413, f"multipart form refused: at most {max_files} files per request, and part headers and fields of "
                               f"at most {MAX_FORM_MEMORY // 1024} KB")
        return _error(413, f"request too large: at most {_megabytes(max_request_bytes)} and {max_files} files per request")

    @app.errorhandler(HTTPException)
    def http_error(exc):
        response = _error(exc.code or 500, exc.description or exc.name)
        response.headers.update((key, value) for key, value in exc.get_headers() if key != "Content-Type")  # a 405's Allow
        return response

    @app.get("/")
    def index():
        return send_from_directory(STATIC, "index.html")

    @app.get("/static/<path:name>")
    def static_file(name):
        return send_from_directory(STATIC, name)

    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok"})

    @app.get("/api/info")
    def info():
        return jsonify(
            {
                "model": service.name,
                "image_size": service.image_size,
                "classes": list(CLASS_NAMES),
                "threshold": service.threshold,
                "version": __version__,
                "explain": ["gradcam"] if service.can_explain else [],
                "explain_note": service.explain_note,
                "engine": dataclasses.asdict(service.engine) if service.engine is not None else None,
                "max_files": max_files,
                "max_request_bytes": max_request_bytes,
                "formats": list(ACCEPTED_EXTENSIONS),
                "faces": service.faces.to_dict(),
                "face_modes": list(MODES),
                "video": {
                    "available": video_available(),
                    "formats": list(VIDEO_EXTENSIONS),
                    "max_bytes": max_video_bytes,
                    "max_seconds": max_video_seconds,
                    "max_frames": MAX_VIDEO_FRAMES,
                    "frames": VideoOptions().frames,
                    "aggregates": list(AGGREGATES),
                },
            }
        )

    @app.post("/api/predict")
    def predict():
        explain = request.args.get("explain")
        if explain not in (None, "", "gradcam"):
            return _error(400, f"unknown explain={explain!r}; the only explanation is gradcam")
        if explain == "gradcam" and not service.can_explain:
            return _error(400, service.explain_note)
        faces = request.args.get("faces")
        if faces not in (None, "") and faces not in MODES:
            return _error(400, f"unknown faces={faces!r}; one of {', '.join(MODES)}")
        options = _video_options(request.args)
        if isinstance(options, str):
            return _error(400, options)
        files = request.files.getlist("files")
        if not files:
            return _error(400, "no files: send images or videos as multipart form field 'files'")
        if len(files) > max_files:
            return _error(413, f"too many files: {len(files)} sent, at most {max_files} per request")
        names, uploads = [], []
        for upload in files:
            names.append(upload.filename or "unnamed")
            try:
                uploads.append(upload.read())
            finally:
                upload.close()
        videos = [sniff_video(data[:16]) is not None for data in uploads]  # the content decides, never the name
        infos: dict[int, object] = {}
        results: list = [None] * len(uploads)
        for index in (i for i, flag in enumerate(videos) if flag):
            name, data = names[index], uploads[index]
            if len(data) > max_video_bytes:
                return _error(413, f"video {name!r} is {_megabytes(len(data))}: at most {_megabytes(max_video_bytes)} per video")
            try:
                infos[index] = info = probe(data)
            except (VideoFileError, DefaxError) as exc:  # unreadable, or PyAV missing: this file's own error
                results[index] = {"name": name, "kind": "video", "error": str(exc)}
                continue
            if info.duration > max_video_seconds:
                return _error(400, f"video {name!r} lasts {info.duration:.1f} s: at most {max_video_seconds:g} s per video")
        settings = service.settings_for(faces)
        keep = explain == "gradcam"
        images = [i for i, flag in enumerate(videos) if not flag]
        scored = service.score([uploads[i] for i in images], settings, keep_pixels=keep) if images else []
        for index, photo in zip(images, scored):
            record = {"name": names[index], **photo.record(service.threshold)}
            if photo.error is None:
                record.setdefault("faces", [])
                record["scored"] = photo.scored
                record["width"], record["height"] = image_size_of(uploads[index])
            results[index] = record
        video_scores = []
        for index, info in infos.items():
            try:
                score = service.score_video(uploads[index], settings, options)
            except DefaxError as exc:
                results[index] = {"name": names[index], "kind": "video", "error": str(exc)}
                continue
            results[index] = {"name": names[index], **video_result(score, info, service.threshold)}
            video_scores.append((results[index], score))
        if keep:
            explained = _gradcam_targets([results[i] for i in images], scored, service.threshold)
            explained += _video_gradcam_targets(video_scores)
            if explained:
                overlays = service.gradcam_overlays([pixels for _, pixels, _ in explained], [cls for _, _, cls in explained])
                for (target, _, _), (url, blank) in zip(explained, overlays):
                    target["gradcam"] = url
                    target["gradcam_blank"] = blank
                    if blank:
                        from defax_keras.explain.figures import blank_notice

                        target["gradcam_note"] = blank_notice(target["label"])
        return jsonify({"results": results})

    @app.post("/api/export.csv")
    def export_csv():
        payload = request.get_json(silent=True)
        if not isinstance(payload, dict) or not isinstance(payload.get("results"), list):
            return _error(400, 'send JSON {"results": [...]} as returned by /api/predict')
        response = app.response_class(results_csv(r for r in payload["results"] if isinstance(r, dict)), mimetype="text/csv")
        response.headers["Content-Disposition"] = 'attachment; filename="defax-results.csv"'
        return response

    return app
