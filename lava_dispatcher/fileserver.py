"""A small HTTP file server the dispatcher runs itself, to hand files to a DUT.

The dispatcher publishes one file at a time (the test overlay tarball, a
kernel...) and gets back a URL with an unguessable token in it; the DUT
fetches that URL with whatever it has (``wget``, ``curl``, busybox ``wget``).

    with FileServer("0.0.0.0", advertise="192.0.2.10",
                    on_request=log.info) as server:
        url = server.publish(Path("overlay-1.2.3.tar.gz"))
        shell.run(f"wget -O /overlay.tar.gz {url}", timeout=60)

Properties:

* only the files published are served: a request path is looked up as
  ``/<token>/<name>`` in a table; it is never resolved against a directory,
  so there is no listing and no path traversal. Anything else is 404.
* GET and HEAD only; any other method gets 405.
* files are streamed in chunks (``sendfile`` where the platform has it) with
  a ``Content-Length``, so a file of any size costs no memory; single
  ``Range: bytes=`` requests are answered with 206 (download clients resume
  with them), unsatisfiable ones with 416.
* one thread per connection: a slow client never holds up another one, and
  :meth:`FileServer.stop` shuts every open connection down, so it returns
  promptly even while a client is in the middle of a download.
* ``on_request`` gets one line per request, e.g.
  ``GET /overlay-1.2.3.tar.gz 200 1234 bytes from 127.0.0.1`` (the token is
  never in it).

It listens on 127.0.0.1 unless told otherwise. There is no authentication
beyond the token: publish only what the DUTs of the lab may read.
"""

from __future__ import annotations

import contextlib
import email.utils
import os
import re
import secrets
import selectors
import socket
import stat
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, unquote, urlsplit

#: bytes handed to one sendfile() call: the unit of progress and of bytes counted
CHUNK_SIZE = 1 << 20
#: a connection idle (or a client not reading) this long is dropped
CONNECTION_TIMEOUT = 60.0
#: how long stop() waits for each connection thread after shutting its socket
JOIN_TIMEOUT = 5.0

_ALLOWED = ("GET", "HEAD")
_LINGER_RESET = struct.pack("ii", 1, 0)
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)

RequestCallback = Callable[[str], None]


@dataclass(frozen=True)
class _Published:
    token: str
    name: str
    path: Path


def parse_range(header: str, size: int) -> tuple[int, int] | bool | None:
    """The byte range ``(first, last)`` (inclusive) a ``Range`` header asks for.

    Returns None when the header is to be ignored (malformed, several
    ranges, another unit: the whole file is served, as RFC 9110 allows) and
    False when the range cannot be satisfied (416).
    """
    found = _RANGE.match(header)
    if found is None:
        return None
    first_text, last_text = found.groups()
    if not first_text and not last_text:
        return None
    if not first_text:  # a suffix: the last N bytes
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            return False
        return (max(0, size - suffix), size - 1)
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
    if last_text and last < first:
        return None  # invalid: ignored
    if first >= size:
        return False
    return (first, min(last, size - 1))


class _Handler(BaseHTTPRequestHandler):
    """Serves published files; see the module documentation."""

    server: _HTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "lava-dispatcher-fileserver"
    sys_version = ""
    timeout = CONNECTION_TIMEOUT

    # -- one request ---------------------------------------------------------

    def handle_one_request(self) -> None:
        self._status: int | None = None
        self._sent = 0
        self._of: int | None = None
        self._shown = ""
        self._note = ""
        try:
            super().handle_one_request()
        except OSError as exc:
            # the client went away (or stop() shut the connection)
            self.close_connection = True
            self._note = self._note or f"aborted: {exc.strerror or type(exc).__name__}"
        finally:
            if self._status is not None:
                self.server.fs._report(self._line())

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        self._shown = self._display_path()
        if self.command not in _ALLOWED:
            self.close_connection = True  # a request body may follow: never read it
            self.send_error(HTTPStatus.METHOD_NOT_ALLOWED, headers={"Allow": ", ".join(_ALLOWED)})
            return False
        return True

    def send_error(
        self,
        code: int,
        message: str | None = None,
        explain: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """A short plain-text error (no HTML, no echo of the request)."""
        status = HTTPStatus(code)
        body = f"{code} {status.phrase}\n".encode()
        self.send_response(code, message)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if code >= 500:
            self.close_connection = True
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    # -- serving ---------------------------------------------------------------

    def _serve(self, body: bool) -> None:
        entry = self.server.fs._lookup(self.path)
        if entry is None:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        self._shown = "/" + entry.name
        try:
            handle = open(entry.path, "rb")  # noqa: SIM115 - closed below
        except OSError:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        with handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                self.send_error(HTTPStatus.NOT_FOUND)
                return
            size = info.st_size
            etag = f'"{info.st_size:x}-{info.st_mtime_ns:x}"'
            modified = email.utils.formatdate(info.st_mtime, usegmt=True)
            wanted = self._wanted_range(size, etag, modified)
            if wanted is False:
                self.send_error(
                    HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                    headers={"Content-Range": f"bytes */{size}"},
                )
                return
            if isinstance(wanted, tuple):
                first, last = wanted
                self.send_response(HTTPStatus.PARTIAL_CONTENT)
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
                self._note = f"range {first}-{last} of {size}"
            else:
                first, last = 0, size - 1
                self.send_response(HTTPStatus.OK)
            length = last - first + 1
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(length))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", modified)
            self.end_headers()
            if body and length > 0:
                self._of = length
                self._send_body(handle, first, length)

    def _wanted_range(self, size: int, etag: str, modified: str) -> tuple[int, int] | bool | None:
        header = self.headers.get("Range")
        if header is None:
            return None
        if_range = self.headers.get("If-Range")
        if if_range is not None and if_range.strip() not in (etag, modified):
            return None  # the file changed since the client's first part: send it all
        return parse_range(header, size)

    def _send_body(self, handle: Any, offset: int, length: int) -> None:
        connection: socket.socket = self.connection
        end = offset + length
        position = offset
        while position < end:
            count = min(CHUNK_SIZE, end - position)
            try:
                sent = connection.sendfile(handle, position, count)
            except OSError as exc:  # gone, reset by stop(), or not reading for too long
                self._note = f"aborted: {exc.strerror or type(exc).__name__}"
                raise
            if sent <= 0:  # the file shrank under us: the client sees a short body
                self.close_connection = True
                self._note = "file shrank while being sent"
                return
            position += sent
            self._sent = position - offset

    # -- logging ---------------------------------------------------------------

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        with contextlib.suppress(ValueError, TypeError):
            self._status = int(code)

    def log_message(self, format: str, *args: Any) -> None:
        """Nothing on stderr: requests reach ``on_request`` instead."""

    def _display_path(self) -> str:
        """The request path without its token (the first segment)."""
        path = urlsplit(self.path).path
        parts = path.split("/", 2)
        if len(parts) < 3:
            return "/"
        return "/" + unquote(parts[2], errors="replace")

    def _line(self) -> str:
        method = self.command or "-"
        sent = f"{self._sent} bytes"
        if self._of is not None and self._sent != self._of:
            sent = f"{self._sent} of {self._of} bytes"
        note = f" ({self._note})" if self._note else ""
        shown = "".join(c if c.isprintable() else "?" for c in self._shown)[:200]
        return f"{method} {shown or '-'} {self._status} {sent}{note} from {self.client_address[0]}"


class _HTTPServer(ThreadingHTTPServer):
    """Connections run in threads that :class:`FileServer` tracks and stops."""

    daemon_threads = True
    block_on_close = False
    fs: FileServer

    def process_request(self, request: Any, client_address: Any) -> None:
        self.fs._start_connection(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Silent: a failed accept or a vanished client is not worth a traceback."""


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


class FileServer:
    """Serves published files over HTTP/1.1; see the module documentation.

    ``host``/``port`` is where it listens (port 0: any free port; read
    :attr:`port` after :meth:`start`). ``advertise`` is the host name or
    address put in the URLs, for when the DUT must reach the server by
    another address than the one it listens on (a ``0.0.0.0`` listener).
    ``on_request`` is called with one line per request, from the
    connection's thread; it must not block for long.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        advertise: str | None = None,
        on_request: RequestCallback | None = None,
    ) -> None:
        self.host = host
        self.advertise = advertise
        self.on_request = on_request
        self._requested_port = port
        self._lock = threading.Lock()
        self._files: dict[str, _Published] = {}
        self._connections: dict[threading.Thread, socket.socket] = {}
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._wake_r = self._wake_w = -1
        self._stopping = threading.Event()
        self._stopped = False

    # -- lifetime ----------------------------------------------------------------

    def start(self) -> FileServer:
        """Listen and serve in a background thread; returns once listening."""
        if self._httpd is not None or self._stopped:
            raise RuntimeError("a FileServer starts once")
        server_class = _HTTPServer6 if ":" in self.host else _HTTPServer
        httpd = server_class((self.host, self._requested_port), _Handler, bind_and_activate=True)
        httpd.fs = self
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._httpd = httpd
        self._thread = threading.Thread(target=self._serve, name="fileserver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening, cut every open connection, join the threads.

        Idempotent. Returns promptly even when clients are mid-download."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._stopping.set()
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if thread is not None:
            thread.join()
        httpd.server_close()
        with self._lock:
            connections = list(self._connections.items())
        for _, connection in connections:
            with contextlib.suppress(OSError):
                # reset, not a graceful close: what is still queued for a slow
                # client is dropped instead of trickling out after stop()
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                connection.shutdown(socket.SHUT_RDWR)
        for worker, _ in connections:
            worker.join(JOIN_TIMEOUT)
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> FileServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port listened on (the one chosen when 0 was asked for)."""
        if self._httpd is None:
            raise RuntimeError("the FileServer is not started")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        host = self.advertise or self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    # -- the table of published files ----------------------------------------------

    def publish(self, path: str | os.PathLike[str], name: str | None = None) -> str:
        """Serve the file at ``path`` under a new random URL and return the URL.

        ``name`` (default: the file's base name) is the URL's last segment,
        what download clients name the file after; it may not contain ``/``.
        The file is opened at each request, so it must stay in place until
        :meth:`unpublish`."""
        source = Path(path).absolute()
        if not source.is_file():
            raise FileNotFoundError(f"not a regular file: {source}")
        shown = source.name if name is None else name
        if not shown or "/" in shown or shown in (".", "..") or "\0" in shown:
            raise ValueError(f"invalid name for a published file: {shown!r}")
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._files[token] = _Published(token, shown, source)
        return f"{self.base_url}/{token}/{quote(shown, safe='')}"

    def unpublish(self, url_or_token: str) -> bool:
        """Stop serving a URL publish() returned (or its token); True if it was served."""
        token = url_or_token
        if "/" in url_or_token:
            parts = urlsplit(url_or_token).path.split("/")
            token = parts[1] if len(parts) > 1 else ""
        with self._lock:
            return self._files.pop(token, None) is not None

    def published(self) -> list[str]:
        """The URLs currently served."""
        with self._lock:
            entries = list(self._files.values())
        return [f"{self.base_url}/{e.token}/{quote(e.name, safe='')}" for e in entries]

    def _lookup(self, raw_path: str) -> _Published | None:
        path = urlsplit(raw_path).path
        parts = path.split("/")
        if len(parts) != 3 or parts[0] != "":
            return None
        with self._lock:
            entry = self._files.get(parts[1])
        if entry is None:
            return None
        try:
            name = unquote(parts[2], errors="strict")
        except UnicodeDecodeError:
            return None
        return entry if name == entry.name else None

    # -- threads -------------------------------------------------------------------

    def _serve(self) -> None:
        httpd = self._httpd
        assert httpd is not None
        httpd.timeout = 0  # handle_request() after select said "ready": never waits
        with selectors.DefaultSelector() as selector:
            selector.register(httpd.socket, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in selector.select():
                    if key.fileobj is httpd.socket and not self._stopping.is_set():
                        httpd.handle_request()

    def _start_connection(self, request: socket.socket, client_address: Any) -> None:
        httpd = self._httpd
        assert httpd is not None
        worker = threading.Thread(
            target=self._connection, args=(request, client_address), daemon=True
        )
        worker.name = f"fileserver-{client_address[0]}:{client_address[1]}"
        with self._lock:
            if self._stopping.is_set():
                httpd.shutdown_request(request)
                return
            self._connections[worker] = request
        worker.start()

    def _connection(self, request: socket.socket, client_address: Any) -> None:
        httpd = self._httpd
        assert httpd is not None
        try:
            _Handler(request, client_address, httpd)
        except Exception:
            pass  # a client that vanished mid-request: nothing to do
        finally:
            httpd.shutdown_request(request)
            with self._lock:
                self._connections.pop(threading.current_thread(), None)

    def _report(self, line: str) -> None:
        if self.on_request is not None:
            with contextlib.suppress(Exception):
                self.on_request(line)
