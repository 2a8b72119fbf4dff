"""The HTTP side of a download: an opener whose sockets a cancel can shut down.

Kept apart from :mod:`lava_dispatcher.download` so that a job with no http
URL (and every ``lava-dispatch validate``) does not pay for importing
http.client, ssl and urllib.request: ~25 ms of start-up.

Redirects are followed only to http(s), never from https down to plain
http, and the job's credentials do not follow a redirect to another host.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import IO, Any

from lava_dispatcher.errors import JobError

#: what reading a response can raise besides our own errors
READ_ERRORS: tuple[type[BaseException], ...] = (OSError, http.client.HTTPException)


class Sockets:
    """The sockets of one fetch, so that a cancel can shut them down (which
    wakes a thread blocked reading them, where close() would not)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._closed = False

    def add(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            closed = self._closed
        if closed:
            _shutdown(sock)

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shutdown(sock)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Tracking:
    """Mixed into the HTTP(S) connections: registers their sockets."""

    sock: Any

    def _track(self, sockets: Sockets) -> None:
        self._sockets = sockets
        create = self._create_connection  # type: ignore[has-type]

        def tracked(*args: Any, **kwargs: Any) -> socket.socket:
            sock = create(*args, **kwargs)
            sockets.add(sock)
            return sock

        self._create_connection = tracked

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        self._sockets.add(self.sock)


class _HTTPConnection(_Tracking, http.client.HTTPConnection):
    def __init__(self, *args: Any, sockets: Sockets, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._track(sockets)


class _HTTPSConnection(_Tracking, http.client.HTTPSConnection):
    def __init__(self, *args: Any, sockets: Sockets, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._track(sockets)


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, sockets: Sockets) -> None:
        super().__init__()
        self._sockets = sockets

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        factory = functools.partial(_HTTPConnection, sockets=self._sockets)
        return self.do_open(factory, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, sockets: Sockets) -> None:
        super().__init__()
        self._sockets = sockets

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        factory = functools.partial(_HTTPSConnection, sockets=self._sockets)
        return self.do_open(factory, req, context=getattr(self, "_context", None))


#: request headers that must not follow a redirect to another host
_CREDENTIALS = ("authorization", "cookie")


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects, but only to http(s), never from https down to http,
    and without the job's credentials when the host changes."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        old = urllib.parse.urlsplit(req.full_url)
        new = urllib.parse.urlsplit(urllib.parse.urljoin(req.full_url, newurl))
        if new.scheme not in ("http", "https"):
            raise JobError(
                f"{self.url}: refusing to follow the redirect to {newurl} (not http or https)"
            )
        if old.scheme == "https" and new.scheme == "http":
            raise JobError(
                f"{self.url}: refusing to follow the redirect from https to http ({newurl})"
            )
        request = super().redirect_request(req, fp, code, msg, headers, newurl)
        if request is not None and (old.hostname, old.port) != (new.hostname, new.port):
            for name in list(request.headers):
                if name.lower() in _CREDENTIALS:
                    del request.headers[name]
        return request


def reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        inner = exc.reason
        return reason(inner) if isinstance(inner, BaseException) else str(inner)
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror or exc})"
    return str(exc) or type(exc).__name__


def build_opener(url: str, sockets: Sockets) -> urllib.request.OpenerDirector:
    """An opener for ``url`` whose connections register with ``sockets``."""
    return urllib.request.build_opener(
        _HTTPHandler(sockets), _HTTPSHandler(sockets), _Redirects(url)
    )


def request(url: str, headers: dict[str, str]) -> urllib.request.Request:
    return urllib.request.Request(url, headers=headers)


HTTPError = urllib.error.HTTPError
