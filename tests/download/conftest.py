"""A loopback HTTP server for the download tests, and a recording logger.

The server serves :class:`Resource` objects and records every request. A
resource can answer with errors first, redirect, send ETag/Last-Modified and
honour conditional requests, omit Content-Length, cut the body short, or
stall after some bytes until the test releases it. Every server a test starts
is stopped at teardown, passed or failed; stalled handlers are released first.
"""

from __future__ import annotations

import contextlib
import http.server
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest


@dataclass
class Resource:
    data: bytes
    etag: str | None = None
    last_modified: str | None = None
    #: send Content-Length (else the body ends when the connection closes)
    length: bool = True
    #: statuses answered first, one per request (then the data)
    fail: list[int] = field(default_factory=list)
    #: answer 302 to this location instead
    redirect: str | None = None
    #: send this many bytes, then stall until the test releases the server
    stall_after: int | None = None
    #: send this many bytes (with the full Content-Length), then close
    short: int | None = None


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    status: int


class Server:
    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.resources: dict[str, Resource] = {}
        self.hits: list[Hit] = []
        self.lock = threading.Lock()
        #: set when a handler stalls; the test sets ``release`` to let it go on
        self.stalled = threading.Event()
        self.release = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.answer(self)

            def log_message(self, *args: Any) -> None:
                pass

        class Quiet(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that went away (cancel tests) is expected

        self.httpd = Quiet(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.scheme = "http"
        if tls is not None:
            # the handshake happens in the handler's thread, not in accept()
            self.httpd.socket = tls.wrap_socket(
                self.httpd.socket, server_side=True, do_handshake_on_connect=False
            )
            self.scheme = "https"
        self.closing = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        # handle_request() blocks without a poll interval; close() wakes it
        while not self.closing:
            self.httpd.handle_request()

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def add(self, path: str, data: bytes, **kwargs: Any) -> str:
        self.resources[path] = Resource(data, **kwargs)
        return self.url(path)

    def requests(self, path: str | None = None) -> list[Hit]:
        with self.lock:
            return [h for h in self.hits if path is None or h.path == path]

    def downloads(self, path: str | None = None) -> int:
        """How many times the data was sent (200 answers)."""
        return sum(1 for h in self.requests(path) if h.status == 200)

    def _record(self, handler: http.server.BaseHTTPRequestHandler, status: int) -> None:
        with self.lock:
            self.hits.append(Hit(handler.path, dict(handler.headers.items()), status))

    def answer(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        resource = self.resources.get(handler.path)
        if resource is None:
            self._record(handler, 404)
            handler.send_error(404, "Not Found")
            return
        with self.lock:
            failure = resource.fail.pop(0) if resource.fail else None
        if failure is not None:
            self._record(handler, failure)
            handler.send_error(failure)
            return
        if resource.redirect is not None:
            self._record(handler, 302)
            handler.send_response(302)
            handler.send_header("Location", resource.redirect)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        match = handler.headers.get("If-None-Match")
        since = handler.headers.get("If-Modified-Since")
        if (resource.etag is not None and match == resource.etag) or (
            match is None and resource.last_modified is not None and since == resource.last_modified
        ):
            self._record(handler, 304)
            handler.send_response(304)
            if resource.etag:
                handler.send_header("ETag", resource.etag)
            handler.end_headers()
            return
        self._record(handler, 200)
        handler.send_response(200)
        if resource.length:
            handler.send_header("Content-Length", str(len(resource.data)))
        if resource.etag:
            handler.send_header("ETag", resource.etag)
        if resource.last_modified:
            handler.send_header("Last-Modified", resource.last_modified)
        handler.end_headers()
        with contextlib.suppress(OSError):
            if resource.stall_after is not None:
                handler.wfile.write(resource.data[: resource.stall_after])
                handler.wfile.flush()
                self.stalled.set()
                self.release.wait(60)
                handler.wfile.write(resource.data[resource.stall_after :])
            elif resource.short is not None:
                handler.wfile.write(resource.data[: resource.short])
                handler.close_connection = True
            else:
                handler.wfile.write(resource.data)

    def close(self) -> None:
        self.release.set()
        self.closing = True
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", self.port), timeout=5).close()
        self.thread.join(5)
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    started = Server()
    try:
        yield started
    finally:
        started.close()


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (made with the openssl command)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@pytest.fixture
def tls_server(certificate: tuple[Path, Path]) -> Iterator[Server]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    started = Server(tls=context)
    try:
        yield started
    finally:
        started.close()


class Lines:
    """A logger for fetch(): keeps (level, message) pairs."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self._lock = threading.Condition()

    def _add(self, level: str, msg: Any) -> None:
        with self._lock:
            self.lines.append((level, str(msg)))
            self._lock.notify_all()

    def wait_for(self, text: str, timeout: float = 10) -> bool:
        """Wait until a line containing ``text`` is logged (from another thread)."""
        with self._lock:
            return self._lock.wait_for(lambda: any(text in m for _l, m in self.lines), timeout)

    def debug(self, msg: Any) -> None:
        self._add("debug", msg)

    def info(self, msg: Any) -> None:
        self._add("info", msg)

    def warning(self, msg: Any) -> None:
        self._add("warning", msg)

    def messages(self, level: str | None = None) -> list[str]:
        with self._lock:
            return [m for lvl, m in self.lines if level is None or lvl == level]

    def text(self) -> str:
        return "\n".join(self.messages())


@pytest.fixture
def log() -> Lines:
    return Lines()


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """No proxy between the tests and their loopback servers, and no cache
    outside the test's own directory."""
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LAVA_DOWNLOAD_CACHE", str(tmp_path / "env-cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
