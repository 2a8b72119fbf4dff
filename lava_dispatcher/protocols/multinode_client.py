"""The dispatcher's side of the coordinator wire: settings, framing, and requests that wait.

The wire is LAVA's, so that LAVA's coordinator and ours serve our
dispatchers alike: one request per TCP connection; the client sends 8
uppercase hex digits (the length of the JSON text in characters), the JSON
in UTF-8, half-closes its side, and reads a reply framed the same way.

LAVA's client polls: ``wait`` comes back at once and it asks again
``poll_delay`` seconds later, on a new connection, so every wait ends up to
``poll_delay`` late. Here a request that may wait carries ``"hold":
<seconds>`` (at most 50, below LAVA's 60 s socket timeout, and never past
the caller's deadline): our coordinator keeps it open and answers as soon as
the answer is no longer ``wait``. LAVA's coordinator ignores the key and
answers ``wait`` at once; the client then pauses what is left of
``poll_delay`` and asks again, as LAVA's does. One rule covers both: never
ask more often than once per ``poll_delay``.

Time is wall-clock: the deadline counts failed connections too (LAVA's does
not), and failures back off up to a cap instead of LAVA's ever-growing
+2 s. Every blocking step can be interrupted (a cancel, a console fault):
the interrupter's waker shuts the socket down.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import json
import os
import selectors
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lava_dispatcher.errors import ConfigurationError, JobError
from lava_dispatcher.timing import Interrupter

#: LAVA's coordinator configuration, the same file on every worker
LAVA_CONFIG = Path("/etc/lava-coordinator/lava-coordinator.conf")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3079
DEFAULT_BLOCKSIZE = 4096
#: LAVA's code default (its packaged configuration file says 3)
DEFAULT_POLL_DELAY = 1.0
#: the longest hold a request asks for (the coordinator refuses more)
HOLD_MAX = 50.0
#: LAVA refuses to send longer messages
MAX_MESSAGE_CHARS = 0xFFFE
#: how long, beyond its hold, a reply may take to arrive
IO_SLACK = 10.0
#: how long past the caller's deadline the last reply may still arrive
DEADLINE_GRACE = 0.5
#: pauses after failed connections: first, then doubled up to the cap
BACKOFF_FIRST = 0.25
BACKOFF_CAP = 5.0
AUTH_KEY = "auth"
#: how long a request left behind (interrupted, timed out) may take to be answered
DRAIN_TIMEOUT = 60.0


#: Linux's SO_TIMESTAMPNS (SCM_TIMESTAMPNS), which the socket module does not name:
#: the kernel stamps each arriving packet, so a reply's arrival is known exactly
#: however late this process gets to read it (logged with each call: see
#: MultinodeProtocol.request)
_SO_TIMESTAMPNS = 35 if sys.platform == "linux" else None


def _stamp_arrivals(sock: socket.socket) -> bool:
    if _SO_TIMESTAMPNS is None:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


def _arrival(ancillary: list[tuple[int, int, bytes]]) -> float | None:
    """The kernel's receive time (epoch seconds) in recvmsg's ancillary data."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS:
            layout = {16: "qq", 8: "ii"}.get(len(data))  # struct timespec, 64- or 32-bit
            if layout is not None:
                seconds, nanoseconds = struct.unpack(layout, data)
                return seconds + nanoseconds / 1e9
    return None


class ReplyError(OSError):
    """The coordinator's reply was cut short or is not a framed JSON object."""


def _ready(
    selector: selectors.BaseSelector, sock: socket.socket, events: int, end: float, wake: Any
) -> None:
    """Wait until ``sock`` is ready for ``events``; InterruptedError on a wake-up,
    TimeoutError at ``end``."""
    selector.register(sock, events)
    try:
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply in time")
            for key, _mask in selector.select(left):
                if key.fileobj is wake:
                    raise InterruptedError("interrupted")
                return
    finally:
        selector.unregister(sock)


def _drain(sock: socket.socket) -> None:
    """Read what the coordinator still answers (or give up after a while), then close."""
    end = time.monotonic() + DRAIN_TIMEOUT
    try:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        with selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_READ)
            while time.monotonic() < end:
                if not selector.select(end - time.monotonic()):
                    continue
                try:
                    if not sock.recv(65536):
                        return
                except BlockingIOError:
                    continue
    except OSError:
        pass
    finally:
        sock.close()


class CoordinatorTimeout(Exception):
    """The request was not answered (other than ``wait``) before its deadline."""

    def __init__(self, message: str, last_error: str = "") -> None:
        super().__init__(message)
        #: why the last connection failed, when the coordinator could not be reached
        self.last_error = last_error


@dataclass(frozen=True)
class CoordinatorSettings:
    """Where the coordinator is and how to talk to it."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    blocksize: int = DEFAULT_BLOCKSIZE
    poll_delay: float = DEFAULT_POLL_DELAY
    secret: str | None = field(default=None, repr=False)
    #: where the address came from, for the log
    source: str = "default"

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6); ValueError says what is wrong."""
    host, sep, port_text = str(text).strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT (such as 127.0.0.1:3079)")
    return host, int(port_text)


def _number(value: Any, what: str, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigurationError(f"{what}: got {value!r}; expected a positive number")
    if integer and int(value) != value:
        raise ConfigurationError(f"{what}: got {value!r}; expected a positive integer")
    return float(value)


def read_lava_config(path: Path) -> dict[str, Any]:
    """LAVA's lava-coordinator.conf (JSON), or ConfigurationError naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigurationError(f"invalid coordinator configuration {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"invalid coordinator configuration {path}: not a JSON object")
    return data


def resolve_settings(
    dispatcher: Mapping[str, Any], config_path: Path = LAVA_CONFIG
) -> CoordinatorSettings:
    """The coordinator for this job.

    The dispatcher setting ``coordinator`` (``HOST:PORT``, what ``run
    --coordinator`` sets) wins, with ``coordinator_poll_delay`` (default 1 s);
    else LAVA's configuration file when it exists (so a LAVA worker's setup
    works unchanged); else 127.0.0.1:3079. ``coordinator_secret`` signs
    every request.
    """
    secret = dispatcher.get("coordinator_secret")
    if secret is not None and (not isinstance(secret, str) or not secret):
        raise ConfigurationError(
            "dispatcher config: coordinator_secret: expected a non-empty string"
        )
    if dispatcher.get("coordinator"):
        try:
            host, port = parse_address(str(dispatcher["coordinator"]))
        except ValueError as exc:
            raise ConfigurationError(f"dispatcher config: coordinator: {exc}") from None
        delay = dispatcher.get("coordinator_poll_delay", DEFAULT_POLL_DELAY)
        return CoordinatorSettings(
            host, port,
            poll_delay=_number(delay, "dispatcher config: coordinator_poll_delay"),
            secret=secret, source="the dispatcher settings (coordinator)",
        )  # fmt: skip
    if config_path.exists():
        data = read_lava_config(config_path)
        port = data.get("port", DEFAULT_PORT)
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigurationError(f"{config_path}: port: got {port!r}; expected a TCP port")
        return CoordinatorSettings(
            str(data.get("coordinator_hostname") or "localhost"),
            port,
            blocksize=int(
                _number(data.get("blocksize", DEFAULT_BLOCKSIZE), f"{config_path}: blocksize", True)
            ),
            poll_delay=_number(
                data.get("poll_delay", DEFAULT_POLL_DELAY), f"{config_path}: poll_delay"
            ),
            secret=secret,
            source=str(config_path),
        )
    return CoordinatorSettings(secret=secret)


# --- framing ---------------------------------------------------------------------


def canonical(request: Mapping[str, Any]) -> bytes:
    """What ``auth`` signs: the request without ``auth``, sorted, compact, UTF-8."""
    body = {key: value for key, value in request.items() if key != AUTH_KEY}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign(secret: str, request: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``request`` with its ``auth`` (HMAC-SHA256 of the canonical form, hex)."""
    digest = hmac.new(secret.encode("utf-8"), canonical(request), hashlib.sha256).hexdigest()
    return {**request, AUTH_KEY: digest}


def encode(message: Mapping[str, Any]) -> bytes:
    """The framed request; JobError when it is longer than LAVA accepts."""
    # ASCII JSON: its length in characters is its length in bytes, for every reader
    text = json.dumps(message)
    if len(text) > MAX_MESSAGE_CHARS:
        raise JobError(
            f"MultiNode message too long: {len(text)} characters (at most {MAX_MESSAGE_CHARS})"
        )
    return f"{len(text):08X}".encode("ascii") + text.encode("utf-8")


def decode(data: bytes) -> dict[str, Any]:
    """A framed reply as a dict with a ``response``; ReplyError otherwise."""
    if len(data) < 8:
        raise ReplyError(f"the connection closed without a reply ({len(data)} bytes)")
    try:
        length = int(data[:8].decode("ascii"), 16)
        body = data[8:].decode("utf-8")
    except (UnicodeDecodeError, ValueError):
        raise ReplyError(f"not a framed reply: {data[:40]!r}") from None
    if len(body) < length:
        raise ReplyError(f"reply cut short: {len(body)} of {length} characters")
    try:
        reply = json.loads(body[:length])
    except ValueError:
        raise ReplyError(f"reply is not JSON: {body[:40]!r}") from None
    if not isinstance(reply, dict) or not isinstance(reply.get("response"), str):
        raise ReplyError(f"reply without a response: {body[:80]!r}")
    return reply


# --- requests --------------------------------------------------------------------


class CoordinatorClient:
    """Requests for one group member: ``base`` is merged into each (LAVA's base message)."""

    def __init__(
        self,
        settings: CoordinatorSettings,
        base: Mapping[str, Any],
        *,
        warn: Callable[[str], None] | None = None,
        debug: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.base = dict(base)
        self.warn = warn or (lambda text: None)
        self.debug = debug or (lambda text: None)
        #: whether the last connection attempt failed (end-of-job requests then try briefly)
        self.unreachable = False
        #: whether the coordinator holds requests (ours), or answers ``wait`` at once
        #: (LAVA's); None until a ``wait`` shows it
        self.holds: bool | None = None
        #: when the last reply reached this host (epoch seconds, the kernel's stamp),
        #: None where the system does not say
        self.arrived: float | None = None
        self._drains: list[threading.Thread] = []

    def message(self, call: Mapping[str, Any], hold: float = 0.0) -> dict[str, Any]:
        """The request as sent: base, call fields, hold, auth."""
        message = {**self.base, **call}
        if hold > 0:
            message["hold"] = hold
        if self.settings.secret:
            message = sign(self.settings.secret, message)
        return message

    def exchange(self, data: bytes, io_timeout: float, interrupter: Interrupter) -> dict[str, Any]:
        """One connection: send, half-close, read the whole reply. OSError on failure.

        An interrupt ends the wait at once (InterruptedError). A request that
        was sent is never left unread, though: LAVA's coordinator dies on a
        broken pipe when it answers a client that went away, so the socket is
        handed to a thread that reads the answer before closing it.
        """
        family, kind, proto, _name, target = socket.getaddrinfo(
            self.settings.host, self.settings.port, type=socket.SOCK_STREAM
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        stamped = _stamp_arrivals(sock)
        self.arrived = None
        wake_r, wake_w = socket.socketpair()

        def wake() -> None:
            with contextlib.suppress(OSError):
                wake_w.send(b"!")

        end = time.monotonic() + io_timeout
        sent = handed_over = False
        try:
            with interrupter.waking(wake), selectors.DefaultSelector() as selector:
                selector.register(wake_r, selectors.EVENT_READ)
                error = sock.connect_ex(target)
                if error not in (0, errno.EINPROGRESS):
                    raise OSError(error, os.strerror(error))
                if error:
                    _ready(selector, sock, selectors.EVENT_WRITE, end, wake_r)
                    error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if error:
                        raise OSError(error, os.strerror(error))
                view = memoryview(data)
                while view:
                    _ready(selector, sock, selectors.EVENT_WRITE, end, wake_r)
                    with contextlib.suppress(BlockingIOError):
                        view = view[sock.send(view) :]
                sent = True
                sock.shutdown(socket.SHUT_WR)
                chunks = []
                while True:
                    _ready(selector, sock, selectors.EVENT_READ, end, wake_r)
                    try:
                        if stamped and self.arrived is None:
                            chunk, ancillary, _flags, _peer = sock.recvmsg(65536, 64)
                            self.arrived = _arrival(ancillary)
                        else:
                            chunk = sock.recv(65536)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        break
                    chunks.append(chunk)
        except OSError:
            if sent:
                handed_over = True
                drain = threading.Thread(target=_drain, args=(sock,), daemon=True)
                drain.start()
                self._drains = [t for t in self._drains if t.is_alive()] + [drain]
            raise
        finally:
            wake_r.close()
            wake_w.close()
            if not handed_over:
                sock.close()
        return decode(b"".join(chunks))

    def settle(self, timeout: float) -> None:
        """Let requests left behind be answered before the process goes (LAVA's
        coordinator answers them at once; ours does not need it)."""
        end = time.monotonic() + timeout
        for drain in self._drains:
            drain.join(max(0.0, end - time.monotonic()))
        self._drains = [t for t in self._drains if t.is_alive()]

    def request(
        self,
        call: Mapping[str, Any],
        *,
        timeout: float,
        interrupter: Interrupter,
        waits: bool,
    ) -> dict[str, Any]:
        """Ask until the reply is not ``wait``; CoordinatorTimeout at the deadline.

        ``waits``: the request may be answered ``wait`` (group_data, lava_wait,
        lava_wait_all, lava_sync): it carries a hold. Interrupts raise from
        ``interrupter.check()``.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        backoff = BACKOFF_FIRST
        failures = 0
        last_error = ""
        waited = False
        while True:
            interrupter.check()
            left = deadline - time.monotonic()
            if left <= 0:
                why = f"; last error: {last_error}" if failures else ""
                raise CoordinatorTimeout(
                    f"{call.get('request')} not answered within {timeout:g} s "
                    f"by the coordinator at {self.settings.address}{why}",
                    last_error if failures else "",
                )
            hold = round(min(HOLD_MAX, left), 3) if waits else 0.0
            data = encode(self.message(call, hold))
            started = time.monotonic()
            try:
                reply = self.exchange(
                    data, min(hold + IO_SLACK, left + DEADLINE_GRACE), interrupter
                )
            except OSError as exc:
                interrupter.check()
                self.unreachable = True
                failures += 1
                last_error = str(exc) or type(exc).__name__
                report = self.warn if failures == 1 else self.debug
                report(
                    f"coordinator {self.settings.address}: {call.get('request')} failed "
                    f"({last_error}); trying again for up to {max(0.0, left):.0f} s"
                )
                pause = min(backoff, deadline - time.monotonic())
                if pause > 0:
                    interrupter.sleep(pause)
                backoff = min(backoff * 2, BACKOFF_CAP)
                continue
            self.unreachable = False
            if failures:
                self.warn(
                    f"coordinator {self.settings.address} answered after {failures} failure(s)"
                )
                failures, backoff = 0, BACKOFF_FIRST
            if reply["response"] != "wait" or not waits:
                return reply
            held = time.monotonic() - started
            if hold >= 1.0 and held >= hold * 0.9:
                self.holds = True
            elif hold >= 1.0 and held < hold * 0.5 and self.holds is None:
                self.holds = False
            if not waited:
                waited = True
                what = " ".join(str(call[k]) for k in ("request", "messageID") if k in call)
                self.debug(f"{what}: waiting (up to {left:.0f} s)")
            # a coordinator that held the request may be asked again at once;
            # one that answered at once (LAVA's) is polled every poll_delay
            pause = min(self.settings.poll_delay - (time.monotonic() - started),
                        deadline - time.monotonic())  # fmt: skip
            if pause > 0:
                interrupter.sleep(pause)
