"""`defax serve`: load the model once, warm it up, then open the port with waitress (a production WSGI server)."""

from __future__ import annotations

import logging

from defax_keras.errors import DefaxError

logger = logging.getLogger(__name__)


def build_service(model_path, batching: bool = True, max_batch: int = 32, max_wait: float = 0.005, faces=None):
    """The loaded, warmed-up model; `faces` (FaceSettings) defaults to the model's own (`faces.json`), else auto."""
    from defax_keras.faces.settings import FaceSettings
    from defax_keras.inference import load_predictor
    from defax_keras.web.app import DetectorService

    faces = faces if faces is not None else FaceSettings.for_model(model_path)
    return DetectorService(load_predictor(model_path), batching=batching, max_batch=max_batch, max_wait=max_wait, faces=faces)


def serve(model_path, host: str = "127.0.0.1", port: int = 8000, workers: int = 8, batching: bool = True, max_files: int = 64, announce=print, faces=None,
          max_video_mb: float = 50.0, max_video_seconds: float = 120.0) -> None:
    """Serve until interrupted. `workers` is waitress's request threads; the model has one batching thread.

    `faces`: the `FaceSettings` requests get unless they ask for another mode (`?faces=`).
    `max_video_mb`, `max_video_seconds`: the largest and longest video an upload may be (a 413 or a 400 beyond);
    the request size limit grows to let such a video through.
    """
    import waitress

    from defax_keras.web.app import create_app

    if not 0 < port < 65536:
        raise DefaxError(f"--port must be between 1 and 65535, got {port}")
    if workers < 1:
        raise DefaxError(f"--workers must be positive, got {workers}")
    if not max_video_mb > 0:
        raise DefaxError(f"--max-video-mb must be positive, got {max_video_mb}")
    if not max_video_seconds > 0:
        raise DefaxError(f"--max-video-seconds must be positive, got {max_video_seconds}")
    service = build_service(model_path, batching=batching, faces=faces)
    app = create_app(service, max_files=max_files, max_video_bytes=int(max_video_mb * 1024 * 1024), max_video_seconds=max_video_seconds)
    announce(
        f"Serving {service.name} on http://{host}:{port}/ ({workers} threads{', micro-batching' if batching else ''}, faces {service.faces.mode}); Ctrl+C stops"
    )
    try:
        waitress.serve(app, host=host, port=port, threads=workers, ident="defax", max_request_body_size=app.config["MAX_CONTENT_LENGTH"] + 1024 * 1024)
    except OSError as exc:
        raise DefaxError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    finally:
        service.close()
