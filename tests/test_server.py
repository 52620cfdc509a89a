"""The real server: `defax serve` in a subprocess on a free loopback port, attacked over raw HTTP.

One server (simple_cnn_nano at 64 px, faces off, 4 threads, `--max-files 4`,
`--max-video-mb 1` so the request limit is 20 MB, `--channel-timeout 3`) takes
every check but the model failure, which needs a second one whose model raises
on a white image (a `-c` launcher wraps `load_predictor`, then runs the same CLI).
No check measures time: slow clients are checked by what completes while they
are still connected.
"""

import select
import threading

import keras
import numpy as np
import pytest
from helpers import encode, pattern
from serving import Server, multipart, read_answer

from defax_keras.web.app import MAX_REQUEST_BYTES, SECURITY_HEADERS

WORKERS = 4
MAX_FILES = 4
CHANNEL_TIMEOUT = 3
SERVER_ARGS = ["--faces", "off", "--workers", WORKERS, "--max-files", MAX_FILES, "--max-video-mb", 1, "--channel-timeout", CHANNEL_TIMEOUT]
GOOD = encode(pattern(80, 60), "PNG")
WHITE = encode(np.full((48, 48, 3), 255, np.uint8), "PNG")
FAILING_MODEL = """
import sys
import numpy as np
import defax_keras.inference as inference
from defax_keras.cli import main

load = inference.load_predictor

def load_failing(*args, **kwargs):
    predictor = load(*args, **kwargs)
    run = predictor.predict_pixels

    def predict_pixels(batch):
        if (np.asarray(batch).reshape(len(batch), -1).min(axis=1) > 254).any():
            raise RuntimeError("injected model failure on a white image")
        return run(batch)

    predictor.predict_pixels = predict_pixels
    return predictor

inference.load_predictor = load_failing
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    from defax_keras.models import build_model

    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("server_model") / "simple_cnn_nano.keras"
    build_model("simple_cnn_nano", image_size=64).save(path)
    return path


def _start(model_path, log, **kwargs):
    server = Server(["-m", model_path, *SERVER_ARGS], log, **kwargs)
    yield server
    alive = server.alive()
    server.close()
    assert alive, "the server died:\n" + server.log()[-3000:]


@pytest.fixture(scope="module")
def server(model_path, tmp_path_factory):
    yield from _start(model_path, tmp_path_factory.mktemp("server") / "serve.log")


@pytest.fixture(scope="module")
def failing_server(model_path, tmp_path_factory):
    yield from _start(model_path, tmp_path_factory.mktemp("failing_server") / "serve.log", launcher=("-c", FAILING_MODEL))


def _assert_secure(answer):
    """The app's security headers, and for an error a JSON body with an `error`."""
    assert {key: answer.headers.get(key) for key in SECURITY_HEADERS} == SECURITY_HEADERS, answer.headers
    if answer.status >= 400:
        assert answer.headers.get_content_type() == "application/json" and isinstance(answer.json()["error"], str), answer.body[:300]


def _post_form(server, form):
    body, content_type = form
    return server.request("POST", "/api/predict", body, {"Content-Type": content_type})


def _head(method, path, extra=""):
    return f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}".encode()


ANSWERS = {
    "page": (lambda s: s.request("GET", "/"), 200),
    "static file": (lambda s: s.request("GET", "/static/app.js"), 200),
    "info": (lambda s: s.request("GET", "/api/info"), 200),
    "POST predict": (lambda s: s.post_files([("a.png", GOOD)]), 200),
    "POST csv export": (lambda s: s.request("POST", "/api/export.csv", b'{"results": []}', {"Content-Type": "application/json"}), 200),
    "not found": (lambda s: s.request("GET", "/nowhere"), 404),
    "wrong method": (lambda s: s.request("GET", "/api/predict"), 405),
    "wrong method on the page": (lambda s: s.request("DELETE", "/"), 405),
    "no files": (lambda s: _post_form(s, multipart([])), 400),
    "bad parameter": (lambda s: s.post_files([("a.png", GOOD)], "?faces=bogus"), 400),
    "body over the app's limit": (
        lambda s: s.request("POST", "/api/predict", b"x" * (MAX_REQUEST_BYTES + 1), {"Content-Type": "multipart/form-data; boundary=b"}), 413),
    "body over waitress's backstop": (lambda s: s.raw(_head("POST", "/api/predict", f"Content-Length: {10**12}\r\n\r\n")), 413),
    "malformed request line": (lambda s: s.raw(b"NONSENSE\r\n\r\n"), 400),
    "headers over 256 KB": (lambda s: s.raw(_head("GET", "/", "X-Pad: " + "a" * 300_000 + "\r\n\r\n")), 431),
    "unknown transfer encoding": (lambda s: s.raw(_head("POST", "/api/predict", "Transfer-Encoding: gzip\r\n\r\n")), 501),
}


@pytest.mark.parametrize("case", ANSWERS)
def test_every_answer_carries_the_security_headers(server, case):
    send, status = ANSWERS[case]
    answer = send(server)
    assert answer.status == status, answer.body[:300]
    _assert_secure(answer)
    if status == 405:
        assert answer.headers["Allow"]
    if case == "body over the app's limit":
        assert answer.json()["error"] == "request too large: at most 20 MB and 4 files per request"  # the app's words, not waitress's


TRAVERSALS = [
    "/static/../app.py", "/static/../../pyproject.toml", "/static/%2e%2e/app.py", "/static/%2e%2e%2fapp.py", "/static/..%2f..%2fpyproject.toml",
    "/static/%2E%2E/%2E%2E/pyproject.toml", "/static/%252e%252e/app.py", "/static/app.js/../../app.py", "/static/..\\app.py",
    "/static//etc/passwd", "/static/%2fetc%2fpasswd", "/static/../../../../../../../../etc/passwd", "/static/....//....//etc/passwd",
    "/static/%00../app.py",
]
SECRETS = (b"def create_app", b"root:x:", b"[project]", b"import ")


@pytest.mark.parametrize("path", TRAVERSALS)
def test_static_traversal_is_refused_and_leaks_nothing(server, path):
    answer = server.request("GET", path)
    if answer.status in (301, 308):  # werkzeug merges slashes: the redirect stays under /static/ and leads nowhere
        location = answer.headers["Location"].split("://", 1)[-1].split("/", 1)[1]
        assert location.startswith("static/"), location
        answer = server.request("GET", "/" + location)
    assert answer.status in (400, 404), (answer.status, answer.body[:200])
    assert not any(secret in answer.body for secret in SECRETS)
    _assert_secure(answer)


def _form(parts: list[bytes]) -> tuple[bytes, str]:
    """A multipart body from raw parts (each its headers, a blank line and its data)."""
    boundary = "bomb"
    return b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts) + b"--bomb--\r\n", f"multipart/form-data; boundary={boundary}"


def _file_part(name="files", filename="a.png", headers=b"") -> bytes:
    return f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'.encode() + headers + b"\r\n" + GOOD


BOMBS = {
    "thousands of parts": [b'Content-Disposition: form-data; name="x"\r\n\r\n1'] * 5000,
    "a huge part header": [_file_part(headers=b"X-Pad: " + b"a" * 1_000_000 + b"\r\n")],
    "a huge field name": [_file_part(name="n" * 1_000_000)],
    "a huge file name": [_file_part(filename="f" * 1_000_000 + ".png")],
    "a huge form field": [b'Content-Disposition: form-data; name="note"\r\n\r\n' + b"v" * 1_000_000, _file_part()],
    "more files than --max-files": [_file_part()] * (MAX_FILES + 1),
}


@pytest.mark.parametrize("case", BOMBS)
def test_multipart_bombs_are_refused_cleanly(server, case):
    answer = _post_form(server, _form(BOMBS[case]))
    assert answer.status == 413, answer.body[:300]
    _assert_secure(answer)
    expected = "too many files" if case == "more files than --max-files" else "multipart form refused"
    assert answer.json()["error"].startswith(expected), answer.json()
    assert server.post_files([("a.png", GOOD)]).status == 200


def test_slow_clients_hold_no_thread_and_a_silent_one_is_dropped(server):
    """More trickling uploads than request threads: other requests are answered meanwhile; a finished trickle is
    answered; the ones that fall silent are closed by the server (`--channel-timeout`), without an answer."""
    body, content_type = multipart([("slow.png", GOOD)])
    head = _head("POST", "/api/predict", f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n")
    slow = [server.connect(timeout=60) for _ in range(WORKERS + 2)]
    sent = 10
    for sock in slow:
        sock.sendall(head + body[:sent])
    stop = threading.Event()

    def trickle():  # one byte per connection every 0.2 s: never silent for --channel-timeout
        nonlocal sent
        while not stop.wait(0.2):
            for sock in slow:
                sock.sendall(body[sent : sent + 1])
            sent += 1

    trickler = threading.Thread(target=trickle)
    trickler.start()
    try:
        for _ in range(3):
            answer = server.post_files([("fast.png", GOOD)])
            assert answer.status == 200 and "p_fake" in answer.json()["results"][0]
            assert select.select(slow, [], [], 0)[0] == []  # every slow upload is still open and unanswered
    finally:
        stop.set()
        trickler.join()
    assert sent < len(body) - 1
    slow[0].sendall(body[sent:])
    assert read_answer(slow[0]).status == 200  # a trickled upload is answered once complete
    for sock in slow[1:]:  # silent now: dropped after --channel-timeout (the 60 s socket timeout only stops a hang)
        try:
            assert sock.recv(1024) == b""
        except ConnectionResetError:
            pass
    for sock in slow:
        sock.close()
    assert server.request("GET", "/healthz").status == 200


def test_a_model_failure_answers_500_to_its_requests_and_the_next_succeeds(failing_server):
    (before,) = failing_server.post_files([("good.png", GOOD)]).json()["results"]
    answer = failing_server.post_files([("white.png", WHITE)])
    assert answer.status == 500
    _assert_secure(answer)
    assert "injected model failure" in failing_server.log()  # the traceback goes to the server's log, not to the client
    assert b"injected" not in answer.body
    (after,) = failing_server.post_files([("good.png", GOOD)]).json()["results"]
    assert after["p_fake"] == before["p_fake"]
    # concurrent requests: the white one fails, the others are answered (200, or 500 if they shared its batch)
    from concurrent.futures import ThreadPoolExecutor

    uploads = [("good.png", GOOD)] * 6 + [("white.png", WHITE)]
    with ThreadPoolExecutor(len(uploads)) as pool:
        answers = list(pool.map(lambda upload: failing_server.post_files([upload]), uploads))
    assert answers[-1].status == 500 and all(a.status in (200, 500) for a in answers)
    for answer in answers:
        _assert_secure(answer)
    assert failing_server.post_files([("good.png", GOOD)]).json()["results"][0]["p_fake"] == before["p_fake"]


@pytest.mark.parametrize(
    "flag, value",
    [("--max-files", "0"), ("--max-files", "-3"), ("--workers", "0"), ("--port", "-1"), ("--port", "70000"), ("--max-video-mb", "0"),
     ("--max-video-seconds", "-1"), ("--channel-timeout", "0")],
)
def test_serve_limits_are_validated_before_the_model_loads(flag, value, capsys):
    from defax_keras.cli import main

    assert main(["serve", "-m", "no-such-model.keras", flag, value]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"defax: error: {flag} must be ") and line.endswith(f"got {value}")


def test_serve_with_max_files_zero_is_a_one_line_error(tmp_path):
    import subprocess
    import sys

    from serving import CLI, ROOT

    result = subprocess.run([sys.executable, *CLI, "serve", "-m", "x.keras", "--max-files", "0"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["defax: error: --max-files must be positive, got 0"]


def test_request_bodies_are_not_spooled_to_disk(monkeypatch):
    """Waitress spools bodies over 512 KB to a temporary file by default; `make_server` keeps them in memory."""
    import http.client
    import tempfile

    from flask import Flask, request

    from defax_keras.web.server import make_server

    app = Flask("echo")
    app.config["MAX_CONTENT_LENGTH"] = 4 * 1024 * 1024
    app.post("/echo")(lambda: str(len(request.get_data())))

    def refuse(*args, **kwargs):
        raise AssertionError("a request body went to a temporary file")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    server = make_server(app, port=0, workers=1)
    threading.Thread(target=server.run, daemon=True).start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.effective_port, timeout=60)
        connection.request("POST", "/echo", body=b"x" * 3_000_000)
        response = connection.getresponse()
        assert (response.status, response.read()) == (200, b"3000000")
    finally:
        server.close()
