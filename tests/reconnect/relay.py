"""A ser2net-like console port for tests: it outlives its clients.

`ConsolePort` listens on 127.0.0.1 and serves one client at a time, as a
ser2net port does. What "the board" prints (`board_print`, or what comes
from the serial line it relays: ``uart=`` a pty path such as the
simulator's) goes to the connected client; while none is connected it is
dropped (`lost` counts it) or, with ``buffer=True``, kept and delivered to
the next client. The test drops the client (`drop_client`, or when the
board prints each of `drop_on`, after the line that holds it), makes
the port refuse the next connections
(`refuse`, like ser2net's "port already in use") and waits for clients
(`wait_client`). Everything runs in one thread with a selector; `close`
stops it. With ``telnet=True`` it speaks telnet to each client as ser2net
in telnet mode does (the simulator's TelnetFilter, one per client: a new
client negotiates afresh).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import threading
import tty
from collections.abc import Iterator

from lava_dispatcher.sim.transports import TelnetFilter


class ConsolePort:
    BUSY = b"\r\nPort already in use\r\n"

    def __init__(
        self,
        uart: str | None = None,
        *,
        telnet: bool = False,
        buffer: bool = False,
        drop_on: tuple[bytes, ...] = (),
    ) -> None:
        self.buffer = buffer
        self.telnet = telnet
        self._filter = TelnetFilter()
        self.drop_on = list(drop_on)  # each once, in this order
        self.drops = 0
        self.lost = 0
        self.received = bytearray()  # what clients typed
        self.clients = 0  # connections served
        self.refused = 0
        self._refuse_next = 0
        self._pending = bytearray()
        self._lock = threading.Lock()
        self._client_event = threading.Condition(self._lock)
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(4)
        self.port: int = self._listener.getsockname()[1]
        self._client: socket.socket | None = None
        self._uart: int | None = None
        if uart is not None:
            self._uart = os.open(uart, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            tty.setraw(self._uart)
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        if self._uart is not None:
            self._selector.register(self._uart, selectors.EVENT_READ, "uart")
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="console-port", daemon=True)
        self._thread.start()

    # -- what tests call ---------------------------------------------------------------

    def board_print(self, data: bytes) -> None:
        with self._lock:
            self._to_client(data)

    def drop_client(self) -> None:
        with self._lock:
            self._close_client()

    def refuse(self, count: int) -> None:
        """Accept and at once close the next `count` connections."""
        with self._lock:
            self._refuse_next = count

    def wait_client(self, number: int, timeout: float = 30.0) -> bool:
        """Wait until `number` clients have connected in all (True) or `timeout`."""
        with self._client_event:
            return self._client_event.wait_for(lambda: self.clients >= number, timeout)

    @property
    def connected(self) -> bool:
        return self._client is not None

    def close(self) -> None:
        self._stopped = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._thread.join(10)
        with self._lock:
            self._close_client()
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()
        if self._uart is not None:
            os.close(self._uart)
        self._selector.close()

    def __enter__(self) -> ConsolePort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the thread --------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopped:
            for key, _ in self._selector.select(0.5):
                if key.data == "accept":
                    self._accept()
                elif key.data == "client":
                    self._from_client()
                elif key.data == "uart":
                    self._from_uart()

    def _accept(self) -> None:
        sock, _ = self._listener.accept()
        with self._lock:
            if self._refuse_next > 0 or self._client is not None:
                self._refuse_next = max(0, self._refuse_next - 1)
                self.refused += 1
                with contextlib.suppress(OSError):
                    sock.sendall(self.BUSY)
                sock.close()
                return
            self._client = sock
            self._filter = TelnetFilter()
            if self.telnet:  # as ser2net: we echo, no go-ahead (character mode)
                sock.sendall(bytes((255, 251, 1, 255, 251, 3)))
            self._selector.register(sock, selectors.EVENT_READ, "client")
            self.clients += 1
            if self._pending:
                data, self._pending = bytes(self._pending), bytearray()
                self._send(data)
            self._client_event.notify_all()

    def _from_client(self) -> None:
        with self._lock:
            sock = self._client
            if sock is None:
                return
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                self._close_client()
                return
            if self.telnet:
                data, reply = self._filter.feed(data)
                if reply:
                    self._send(reply)
            self.received += data
        if self._uart is not None and data:
            os.write(self._uart, data)  # a few bytes typed: the pty takes them

    def _from_uart(self) -> None:
        assert self._uart is not None
        try:
            data = os.read(self._uart, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._selector.unregister(self._uart)
            return
        with self._lock:
            self._to_client(self._filter.escape(data) if self.telnet else data)

    def _to_client(self, data: bytes) -> None:
        for piece, drop in self._split_on_marker(data):
            if piece:
                if self._client is not None:
                    self._send(piece)
                elif self.buffer:
                    self._pending += piece
                else:
                    self.lost += len(piece)
            if drop:
                self._close_client()

    def _split_on_marker(self, data: bytes) -> Iterator[tuple[bytes, bool]]:
        """`data` in pieces, each with whether to drop the client after it
        (after the line that holds the marker, once)."""
        marker = self.drop_on[0] if self.drop_on else None
        if marker is None or marker not in data:
            yield data, False
            return
        start = data.index(marker)
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end + 1
        self.drop_on.pop(0)
        self.drops += 1
        yield data[:end], True
        yield from self._split_on_marker(data[end:])

    def _send(self, data: bytes) -> None:
        assert self._client is not None
        try:
            self._client.sendall(data)
        except OSError:
            self._close_client()

    def _close_client(self) -> None:
        sock, self._client = self._client, None
        if sock is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)
            sock.close()
