"""Helpers for the console tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lava_dispatcher.console import Console, ProcessTransport, Transport

FAKE_DUT = str(Path(__file__).with_name("fake_dut.py"))
PROMPT = r"root@sim:~# "


def fake_dut_argv(*args: str) -> list[str]:
    return [sys.executable, FAKE_DUT, *args]


def pid_gone(pid: int) -> bool:
    """True once ``pid`` no longer exists (or is a zombie: not ours to reap here)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


class LineLog:
    """Collects ``on_line`` calls; tests wait on its condition, never sleep."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.lines: list[tuple[str, float]] = []
        self.inputs: list[str] = []
        self.closed: list[BaseException | None] = []

    def on_line(self, line: str, ts: float) -> None:
        with self.cond:
            self.lines.append((line, ts))
            self.cond.notify_all()

    def on_input(self, text: str) -> None:
        self.inputs.append(text)

    def on_closed(self, exc: BaseException | None) -> None:
        with self.cond:
            self.closed.append(exc)
            self.cond.notify_all()

    @property
    def texts(self) -> list[str]:
        with self.cond:
            return [line for line, _ in self.lines]

    def wait_for(self, predicate: Callable[[LineLog], bool], timeout: float = 5.0) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: predicate(self), timeout):
                raise AssertionError(
                    f"condition not met in {timeout}s; lines: {self.lines[-20:]!r}"
                )

    def wait_line(self, text: str, timeout: float = 5.0) -> tuple[str, float]:
        self.wait_for(lambda log: any(text in line for line, _ in log.lines), timeout)
        with self.cond:
            return next(item for item in self.lines if text in item[0])


class Resources:
    """Closes transports and consoles at teardown; checks spawned processes are gone."""

    def __init__(self) -> None:
        self.closers: list[Callable[[], Any]] = []
        self.pids: list[int] = []

    def transport(self, transport: Transport) -> Transport:
        self.closers.append(transport.close)
        if isinstance(transport, ProcessTransport):
            self.pids.append(transport.pid)
        return transport

    def process(self, argv: list[str], **kwargs: Any) -> ProcessTransport:
        transport = ProcessTransport(argv, **kwargs)
        self.transport(transport)
        return transport

    def console(self, transport: Transport, log: LineLog, **kwargs: Any) -> Console:
        self.transport(transport)
        console = Console(
            transport,
            name=kwargs.pop("name", "dut"),
            on_line=log.on_line,
            on_input=log.on_input,
            on_closed=log.on_closed,
            **kwargs,
        )
        self.closers.append(console.close)
        return console

    def add(self, closer: Callable[[], Any]) -> None:
        self.closers.append(closer)

    def close_all(self) -> None:
        errors: list[BaseException] = []
        for closer in reversed(self.closers):
            try:
                closer()
            except BaseException as exc:  # keep closing the rest
                errors.append(exc)
        self.closers.clear()
        leftovers = [pid for pid in self.pids if not pid_gone(pid)]
        for pid in leftovers:  # a bug in close(): do not leak the process
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        assert not leftovers, f"processes left running: {leftovers}"
        if errors:
            raise errors[0]


class TcpServer:
    """A loopback TCP server running ``handler(conn)`` for each connection in a thread."""

    def __init__(self, handler: Callable[[socket.socket], None]) -> None:
        self.handler = handler
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.stopping = threading.Event()
        self.conns: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []
        self.accepted = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        # blocking accept: close() shuts the listening socket down, which wakes it
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                if self.stopping.is_set():
                    conn.close()
                    return
                self.conns.append(conn)
            self.accepted.set()
            worker = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            self.threads.append(worker)
            worker.start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            self.handler(conn)
        except OSError:
            pass
        except BaseException as exc:
            self.errors.append(exc)

    def close(self) -> None:
        with self.lock:
            self.stopping.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.thread.join(2)
        self.sock.close()
        for conn in self.conns:  # wakes handlers blocked in recv()
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for worker in self.threads:
            worker.join(2)
        for conn in self.conns:
            conn.close()


def echo_handler(greeting: bytes = b"hello from server\r\n") -> Callable[[socket.socket], None]:
    """Greets, then answers each received line with ``echo: <line>``."""

    def handle(conn: socket.socket) -> None:
        conn.sendall(greeting)
        pending = b""
        while True:
            data = conn.recv(4096)
            if not data:
                return
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                conn.sendall(b"echo: " + line.rstrip(b"\r") + b"\r\n")

    return handle


def elapsed_since(start: float) -> float:
    return time.monotonic() - start


class QueueTransport:
    """An in-memory transport fed by the test: bytes, IDLE (one empty read) or END (EOF).

    read() waits on a queue with the given timeout, so an empty queue behaves
    like a quiet console.
    """

    IDLE = object()
    END = object()

    def __init__(self, items: list[Any] | tuple[Any, ...] = ()) -> None:
        import queue

        self._queue: queue.Queue[Any] = queue.Queue()
        self._empty = queue.Empty
        self._leftover = b""
        self._eof = False
        self._closed = False
        self.written: list[tuple[bytes, float]] = []
        for item in items:
            self._queue.put(item)

    def feed(self, item: Any) -> None:
        self._queue.put(item)

    def read(self, max_bytes: int, timeout: float) -> bytes:
        from lava_dispatcher.console import TransportClosed

        if self._closed or self._eof:
            raise TransportClosed("queue transport ended")
        if self._leftover:
            data, self._leftover = self._leftover[:max_bytes], self._leftover[max_bytes:]
            return data
        try:
            item = self._queue.get(timeout=timeout)
        except self._empty:
            return b""
        if item is self.IDLE:
            return b""
        if item is self.END:
            self._eof = True
            raise TransportClosed("queue transport ended")
        data, self._leftover = item[:max_bytes], item[max_bytes:]
        return data

    def cancel_read(self) -> None:
        self._queue.put(self.IDLE)

    def write(self, data: bytes) -> None:
        self.written.append((bytes(data), time.monotonic()))

    def close(self) -> None:
        self._closed = True
        self.cancel_read()

    @property
    def closed(self) -> bool:
        return self._closed

    def describe(self) -> str:
        return "queue"
