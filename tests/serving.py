"""A real `defax serve` in a subprocess and a raw HTTP client for it, shared by tests/test_server.py and bench/soak.py.

The server gets `--port 0` (the kernel picks a free loopback port, named in its
"Serving ... on" line), so tests never race for a port. The client is
`http.client` or a bare socket: nothing normalises paths or fills in headers
the test did not write.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ANNOUNCED = re.compile(r"^Serving .* on http://([^/]+):(\d+)/")
CLI = ("-m", "defax_keras.cli")


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self):
        return json.loads(self.body)


class Server:
    """`defax serve ARGS --port 0` until `close()`; `launcher` replaces `-m defax_keras.cli` (a `-c` script that wraps it)."""

    def __init__(self, args, log_path, launcher=CLI, start_timeout: float = 300):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), "TF_CPP_MIN_LOG_LEVEL": "3"}
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "w")  # noqa: SIM115 - open for the server's lifetime
        self.process = subprocess.Popen(
            [sys.executable, *launcher, "serve", *map(str, args), "--port", "0"], stdout=subprocess.PIPE, stderr=self._log, text=True, env=env, cwd=ROOT
        )
        lines: list[str] = []
        found = threading.Event()

        def watch():
            for line in iter(self.process.stdout.readline, ""):
                lines.append(line)
                if ANNOUNCED.match(line):
                    found.set()
            found.set()  # stdout closed: the server has exited

        reader = threading.Thread(target=watch, daemon=True)
        reader.start()
        found.wait(start_timeout)
        match = next((m for m in map(ANNOUNCED.match, lines) if m), None)
        if match is None:
            self.close()
            raise RuntimeError(f"defax serve did not start:\n{''.join(lines)}\n{self.log()[-3000:]}")
        self.host, self.port = match.group(1), int(match.group(2))

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def rss_mb(self) -> float:
        """The server's resident memory now (Linux /proc)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def request(self, method: str, path: str, body: bytes = b"", headers=None, timeout: float = 120) -> Answer:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body or None, headers=headers or {})
            response = connection.getresponse()
            return Answer(response.status, response.headers, response.read())
        finally:
            connection.close()

    def post_files(self, files, query: str = "", timeout: float = 120) -> Answer:
        body, content_type = multipart(files)
        return self.request("POST", f"/api/predict{query}", body, {"Content-Type": content_type}, timeout)

    def connect(self, timeout: float = 120) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout=timeout)

    def raw(self, data: bytes, timeout: float = 120) -> Answer:
        """Send `data` as it is on a fresh connection; the answer as the server wrote it."""
        with self.connect(timeout) as sock:
            sock.sendall(data)
            return read_answer(sock)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.stdout.close()
        self._log.close()


def read_answer(sock: socket.socket) -> Answer:
    response = http.client.HTTPResponse(sock)
    response.begin()
    return Answer(response.status, response.headers, response.read())


def multipart(files, field: str = "files") -> tuple[bytes, str]:
    """`(body, content type)` of a multipart form: each `(file name, bytes)` as a file part named `field`."""
    boundary = uuid.uuid4().hex
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
        + content + b"\r\n"
        for name, content in files
    )
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"
