"""The daemon's control channel: one JSON request per unix-socket connection.

A client connects to DIR/control.sock, sends one line of JSON
(`{"op": "power", "action": "on"}`, `{"op": "status"}`, `{"op": "stop"}`)
and reads one line of JSON back (`{"ok": true, "status": {...}}` or
`{"ok": false, "error": "..."}`). For "stop" the daemon keeps the connection
open until it has cleaned up, so the client's end-of-file means "gone".
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lava_dispatcher.sim.loop import EventLoop

SOCKET_NAME = "control.sock"
INFO_NAME = "info.json"
MAX_REQUEST = 65536
# Longest path a sockaddr_un holds, less a margin.
MAX_SOCKET_PATH = 100


class ControlError(Exception):
    """The daemon could not be reached or refused the request."""


@contextlib.contextmanager
def socket_address(control_dir: Path) -> Iterator[str]:
    """The socket's address, short enough for sockaddr_un.

    Deep directories (pytest's tmp_path) make paths longer than a unix socket
    address allows; then the directory is reached through /proc/self/fd.
    """
    path = str(control_dir / SOCKET_NAME)
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH:
        yield path
        return
    fd = os.open(control_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{SOCKET_NAME}"
    finally:
        os.close(fd)


def request(
    control_dir: str | Path, message: dict[str, Any], timeout: float = 30.0
) -> dict[str, Any]:
    """Send one request to the daemon and return its reply.

    For {"op": "stop"}, also wait until the daemon has exited.
    """
    control_dir = Path(control_dir)
    if control_dir.name == SOCKET_NAME and not control_dir.is_dir():
        control_dir = control_dir.parent  # given the socket itself
    deadline = time.monotonic() + timeout
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with socket_address(control_dir) as address:
            try:
                sock.connect(address)
            except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError) as exc:
                raise ControlError(
                    f"no simulator daemon at {control_dir} "
                    f"({control_dir / SOCKET_NAME}: {exc.strerror})"
                ) from None
            except OSError as exc:
                raise ControlError(
                    f"cannot reach the simulator daemon at {control_dir}: {exc.strerror}"
                ) from None
        sock.sendall(json.dumps(message).encode() + b"\n")
        data = bytearray()
        reply: dict[str, Any] | None = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ControlError(f"the simulator daemon at {control_dir} did not answer in time")
            ready, _, _ = select.select([sock], [], [], remaining)
            if not ready:
                continue
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if reply is None:
                data += chunk
                if b"\n" in data:
                    reply = json.loads(data.split(b"\n", 1)[0])
                    if message.get("op") != "stop":
                        break
            if not chunk:
                break
        if reply is None:
            raise ControlError(f"the simulator daemon at {control_dir} closed the connection")
        if not reply.get("ok"):
            raise ControlError(reply.get("error", "request refused"))
        return reply
    finally:
        sock.close()


class ControlServer:
    """The daemon side: accepts requests and hands them to `handler`."""

    def __init__(
        self,
        loop: EventLoop,
        control_dir: Path,
        handler: Callable[[dict[str, Any]], dict[str, Any]],
        on_stop: Callable[[], None],
    ) -> None:
        self.loop = loop
        self.control_dir = control_dir
        self.path = control_dir / SOCKET_NAME
        self.handler = handler
        self.on_stop = on_stop
        self.stop_waiters: list[socket.socket] = []
        self._buffers: dict[int, tuple[socket.socket, bytearray]] = {}
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with socket_address(control_dir) as address:
            self.sock.bind(address)
        self.sock.listen(16)
        self.sock.setblocking(False)
        loop.add_reader(self.sock.fileno(), self._accept)

    def _accept(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        conn.setblocking(False)
        self._buffers[conn.fileno()] = (conn, bytearray())
        self.loop.add_reader(conn.fileno(), lambda: self._readable(conn))

    def _forget(self, conn: socket.socket) -> None:
        self.loop.remove_reader(conn.fileno())
        self._buffers.pop(conn.fileno(), None)

    def _readable(self, conn: socket.socket) -> None:
        try:
            chunk = conn.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        entry = self._buffers.get(conn.fileno())
        if entry is None:
            return
        buffer = entry[1]
        buffer += chunk
        if b"\n" not in buffer:
            if not chunk or len(buffer) > MAX_REQUEST:
                self._forget(conn)
                conn.close()
            return
        self._forget(conn)
        try:
            message = json.loads(buffer.split(b"\n", 1)[0])
            if not isinstance(message, dict):
                raise ValueError("a request is a JSON object")
        except ValueError as exc:
            self._reply(conn, {"ok": False, "error": f"bad request: {exc}"})
            conn.close()
            return
        reply = self.handler(message)
        self._reply(conn, reply)
        if message.get("op") == "stop" and reply.get("ok"):
            self.stop_waiters.append(conn)
            self.on_stop()
        else:
            conn.close()

    @staticmethod
    def _reply(conn: socket.socket, reply: dict[str, Any]) -> None:
        conn.setblocking(True)
        conn.settimeout(1.0)
        with contextlib.suppress(OSError):
            conn.sendall(json.dumps(reply).encode() + b"\n")

    def close(self) -> None:
        self.loop.remove_reader(self.sock.fileno())
        for conn, _ in list(self._buffers.values()):
            self._forget(conn)
            conn.close()
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def release_stop_waiters(self) -> None:
        """Last thing the daemon does: its stoppers see end-of-file."""
        for conn in self.stop_waiters:
            conn.close()
        self.stop_waiters.clear()


def write_info(control_dir: Path, info: dict[str, Any]) -> None:
    """Write info.json atomically (readers see all of it or none)."""
    tmp = control_dir / f".{INFO_NAME}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, control_dir / INFO_NAME)


def read_info(control_dir: str | Path) -> dict[str, Any] | None:
    try:
        data = json.loads((Path(control_dir) / INFO_NAME).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
