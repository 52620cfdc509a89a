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
import io
import logging
import threading
from pathlib import Path

import numpy as np
from flask import Flask, Request, jsonify, request, send_from_directory
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from defax_keras import __version__
from defax_keras.constants import CLASS_NAMES, IMAGE_EXTENSIONS
from defax_keras.data.formats import inspect_bytes
from defax_keras.faces.detector import FaceDetector
from defax_keras.faces.scoring import FaceScorer
from defax_keras.faces.settings import MODES, FaceSettings
from defax_keras.web.batcher import DirectPredictor, MicroBatcher, bucket_sizes

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
ACCEPTED_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP")
ACCEPTED_EXTENSIONS = IMAGE_EXTENSIONS
MAX_REQUEST_BYTES = 20 * 1024 * 1024
MAX_FILES = 64
MAX_PIXELS = 40_000_000
"""Per image, read from the header before decoding (a few-KB PNG can claim 30000x30000)."""
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
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


CSV_COLUMNS = ("name", "label", "p_real", "p_fake", "faces", "face_note", "error")


def results_csv(results) -> str:
    """The page's results as CSV; `faces` is written as a count (the page sends a count or the list)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in results:
        faces = row.get("faces")
        row = {**row, "faces": len(faces) if isinstance(faces, list) else faces}
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
        run = predictor.predict_pixels
        for size in bucket_sizes(max_batch):  # trace every batch shape before the port opens
            run(np.zeros((size, self.image_size, self.image_size, 3), np.float32))
        self.runner = MicroBatcher(run, max_batch, max_wait) if batching else DirectPredictor(run, max_batch)
        self.detector = FaceDetector.from_settings(faces)
        if faces.detects:  # build MTCNN's graphs now, not on the first upload
            self.detector.detect(np.zeros((120, 160, 3), np.uint8))
        self._explain_lock = threading.Lock()
        self._explainer = None

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

    @property
    def can_explain(self) -> bool:
        from defax_keras.explain.model import explain_targets

        model = self.predictor.model
        return model is not None and bool(explain_targets(model))

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


def create_app(service: DetectorService, max_files: int = MAX_FILES, max_request_bytes: int = MAX_REQUEST_BYTES) -> Flask:
    app = Flask(__name__, static_folder=None)
    app.request_class = InMemoryRequest
    app.config["MAX_CONTENT_LENGTH"] = max_request_bytes
    app.config["MAX_FORM_PARTS"] = max_files + 16
    app.extensions["defax_service"] = service

    @app.after_request
    def security_headers(response):
        response.headers.update(SECURITY_HEADERS)
        if request.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_):
        return _error(413, f"request too large: at most {max_request_bytes // (1024 * 1024)} MB and {max_files} files per request")

    @app.errorhandler(HTTPException)
    def http_error(exc):
        return _error(exc.code or 500, exc.description or exc.name)

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
                "version": __version__,
                "explain": ["gradcam"] if service.can_explain else [],
                "max_files": max_files,
                "max_request_bytes": max_request_bytes,
                "formats": list(ACCEPTED_EXTENSIONS),
                "faces": service.faces.to_dict(),
                "face_modes": list(MODES),
            }
        )

    @app.post("/api/predict")
    def predict():
        explain = request.args.get("explain")
        if explain not in (None, "", "gradcam"):
            return _error(400, f"unknown explain={explain!r}; the only explanation is gradcam")
        if explain == "gradcam" and not service.can_explain:
            return _error(400, "this model cannot show Grad-CAM (it is a SavedModel, or has no spatial feature map)")
        faces = request.args.get("faces")
        if faces not in (None, "") and faces not in MODES:
            return _error(400, f"unknown faces={faces!r}; one of {', '.join(MODES)}")
        files = request.files.getlist("files")
        if not files:
            return _error(400, "no files: send images as multipart form field 'files'")
        if len(files) > max_files:
            return _error(413, f"too many files: {len(files)} sent, at most {max_files} per request")
        names, uploads = [], []
        for upload in files:
            names.append(upload.filename or "unnamed")
            try:
                uploads.append(upload.read())
            finally:
                upload.close()
        scored = service.score(uploads, service.settings_for(faces), keep_pixels=explain == "gradcam")
        results = []
        for name, data, photo in zip(names, uploads, scored):
            record = {"name": name, **photo.record(service.threshold)}
            if photo.error is None:
                record.setdefault("faces", [])
                record["scored"] = photo.scored
                record["width"], record["height"] = image_size_of(data)
            results.append(record)
        if explain == "gradcam":
            explained = _gradcam_targets(results, scored, service.threshold)
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
