"""`defax serve`: load the model once, warm it up, then open the port with waitress (a production WSGI server).

Waitress reads each request (headers and body) on its own event loop and hands
a worker thread only a complete request: a client that trickles its body holds
a connection, never a thread. A connection silent for `channel_timeout` seconds
is closed. Waitress answers a few requests itself, before the app sees them (a
body over its backstop, a malformed request line, headers over 256 KB); those
answers are JSON with the app's security headers too (`_ErrorTask`).
"""

from __future__ import annotations

import functools
import json
import logging

from defax_keras.constants import SERVE_CHANNEL_TIMEOUT as CHANNEL_TIMEOUT
from defax_keras.errors import DefaxError

logger = logging.getLogger(__name__)

BACKSTOP_SLACK = 1024 * 1024
"""Waitress refuses bodies this much over the app's limit itself; below that, the app answers its own 413 with the limits in words."""


def build_service(model_path, batching: bool = True, max_batch: int = 32, max_wait: float = 0.005, faces=None, engine: str | None = None,
                  min_agreement: float | None = None):
    """The loaded, warmed-up model in `engine` (`inference.engines.open_engine`; its choice is `service.engine`);
    `faces` (FaceSettings) defaults to the model's own (`faces.json`), else auto."""
    from defax_keras.export.parity import INT8_MIN_AGREEMENT
    from defax_keras.faces.settings import FaceSettings
    from defax_keras.inference.engines import open_engine
    from defax_keras.web.app import DetectorService

    faces = faces if faces is not None else FaceSettings.for_model(model_path)
    agreement = INT8_MIN_AGREEMENT if min_agreement is None else min_agreement
    predictor, choice = open_engine(model_path, engine, min_agreement=agreement)
    service = DetectorService(predictor, batching=batching, max_batch=max_batch, max_wait=max_wait, faces=faces)
    service.engine = choice
    return service


def _channel_class():
    """Waitress's connection handler, with its own error answers (400, 413, 431, 500, 501) made like the app's."""
    from waitress.channel import HTTPChannel
    from waitress.task import ErrorTask

    from defax_keras.web.app import SECURITY_HEADERS

    class _ErrorTask(ErrorTask):
        def execute(self):
            error = self.request.error
            body = json.dumps({"error": f"{error.reason.lower()}: {error.body}"}).encode()
            self.status = f"{error.code} {error.reason}"
            self.response_headers += [("Content-Type", "application/json"), *SECURITY_HEADERS.items()]
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)

    class _Channel(HTTPChannel):
        error_task_class = _ErrorTask

    return _Channel


def make_server(app, host: str = "127.0.0.1", port: int = 8000, workers: int = 8, channel_timeout: int = CHANNEL_TIMEOUT):
    """The waitress server `serve` runs, not yet running (`.run()`; port 0 picks a free one, `.effective_port` says which).

    Request bodies stay in memory up to the backstop (waitress would spool bodies over 512 KB to a
    temporary file; the page promises uploads never touch the disk), so at most `connection_limit`
    (100) connections times the request limit can be held in memory at once.
    """
    import waitress
    from waitress.server import BaseWSGIServer

    body_limit = app.config["MAX_CONTENT_LENGTH"] + BACKSTOP_SLACK
    sockets: dict = {}
    server = waitress.create_server(
        app, map=sockets, host=host, port=port, threads=workers, ident="defax", max_request_body_size=body_limit, inbuf_overflow=body_limit,
        channel_timeout=channel_timeout, cleanup_interval=max(1, min(30, channel_timeout // 4)),
    )
    channel = _channel_class()
    for listener in sockets.values():  # one per address `host` resolves to
        if isinstance(listener, BaseWSGIServer):
            listener.channel_class = channel
    return server


def listening_on(server) -> list[tuple[str, int]]:
    """`(host, port)` of each socket a `make_server` server listens on."""
    return list(getattr(server, "effective_listen", None) or [(server.effective_host, server.effective_port)])


def serve(model_path, host: str = "127.0.0.1", port: int = 8000, workers: int = 8, batching: bool = True, max_files: int = 64, announce=None, faces=None,
          max_video_mb: float = 50.0, max_video_seconds: float = 120.0, channel_timeout: int = CHANNEL_TIMEOUT, engine: str | None = None,
          min_agreement: float | None = None) -> None:
    """Serve until interrupted. `workers` is waitress's request threads; the model has one batching thread.

    `faces`: the `FaceSettings` requests get unless they ask for another mode (`?faces=`).
    `engine`, `min_agreement`: what runs the model (`inference.engines.open_engine`); the start-up line says which and why.
    `max_video_mb`, `max_video_seconds`: the largest and longest video an upload may be (a 413 or a 400 beyond);
    the request size limit grows to let such a video through. `port` 0 picks a free port (the announced line names it).
    Arguments are checked before the model loads.
    """
    from defax_keras.web.app import create_app

    if not 0 <= port < 65536:
        raise DefaxError(f"--port must be between 0 (any free port) and 65535, got {port}")
    for flag, value in (("--workers", workers), ("--max-files", max_files), ("--max-video-mb", max_video_mb),
                        ("--max-video-seconds", max_video_seconds), ("--channel-timeout", channel_timeout)):
        if not value > 0:
            raise DefaxError(f"{flag} must be positive, got {value:g}")
    service = build_service(model_path, batching=batching, faces=faces, engine=engine, min_agreement=min_agreement)
    app = create_app(service, max_files=max_files, max_video_bytes=int(max_video_mb * 1024 * 1024), max_video_seconds=max_video_seconds)
    try:
        server = make_server(app, host, port, workers, channel_timeout)
    except OSError as exc:
        service.close()
        raise DefaxError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    bound_host, bound_port = listening_on(server)[0]
    engine = f"; {service.engine.describe()}" if service.engine is not None else ""
    (announce or functools.partial(print, flush=True))(  # flushed: a supervisor waits for this line
        f"Serving {service.name} on http://{bound_host}:{bound_port}/ ({workers} threads{', micro-batching' if batching else ''}, "
        f"faces {service.faces.mode}){engine}; Ctrl+C stops"
    )
    try:
        server.run()
    finally:
        server.close()
        service.close()
