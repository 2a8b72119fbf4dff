"""Console transports of the simulated board: stdio, a pty, a TCP port.

Each transport moves bytes between the board and whoever is on the other end
of the "serial cable", without blocking the event loop:

* `StdioConsole`: this process's stdin/stdout (`sim run`, a spawned process
  like QEMU). A tty on stdin is put in raw mode and restored at close.
* `PtyConsole`: a pty pair whose slave path is published as a symlink; a
  client (pyserial, minicom, `cat`) opens it like a serial port. The pty
  master reports a hang-up while nobody has the slave open; output is then
  discarded, as bits sent down a cable nobody listens to. Openers are noticed
  through inotify on the slave device (with a timer fallback).
* `TcpConsole`: 127.0.0.1:PORT relaying the console raw, ser2net style: one
  client at a time, output discarded while nobody is connected, telnet option
  negotiation answered (not started) so that the `telnet` program works.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import select
import socket
import struct
import termios
import tty
from collections.abc import Callable
from typing import Any

from lava_dispatcher.sim.loop import EventLoop, Timer

READ_SIZE = 65536


class ConsoleError(OSError):
    """A transport could not be set up."""


def _ignore_input(data: bytes) -> None:
    return None


class Console:
    """Base class: `on_input` gets what the far end typed, `on_drain` fires
    when queued output has been taken by the far end."""

    def __init__(self, loop: EventLoop) -> None:
        self.loop = loop
        self.on_input: Callable[[bytes], None] = _ignore_input
        self.on_drain: Callable[[], None] | None = None

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def backlog(self) -> int:
        return 0

    def close(self) -> None:
        pass

    def _drained(self) -> None:
        if self.on_drain is not None:
            self.on_drain()


class _Writer:
    """A non-blocking output queue on one file descriptor."""

    def __init__(
        self,
        loop: EventLoop,
        fd: int,
        send: Callable[[bytes], int],
        on_drain: Callable[[], None],
        on_error: Callable[[OSError], None],
    ) -> None:
        self.loop = loop
        self.fd = fd
        self._send = send
        self._on_drain = on_drain
        self._on_error = on_error
        self.queue = bytearray()
        self._waiting = False

    def write(self, data: bytes) -> None:
        if self.queue:
            self.queue += data
            return
        try:
            sent = self._send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._on_error(exc)
            return
        if sent < len(data):
            self.queue += data[sent:]
            self._wait()

    def _wait(self) -> None:
        if not self._waiting:
            self._waiting = True
            self.loop.add_writer(self.fd, self._writable)

    def _writable(self) -> None:
        try:
            sent = self._send(bytes(self.queue[:READ_SIZE]))
        except BlockingIOError:
            return
        except OSError as exc:
            self.clear()
            self._on_error(exc)
            return
        del self.queue[:sent]
        if not self.queue:
            self._stop_waiting()
        self._on_drain()

    def _stop_waiting(self) -> None:
        if self._waiting:
            self._waiting = False
            self.loop.remove_writer(self.fd)

    def clear(self) -> None:
        self.queue.clear()
        self._stop_waiting()


# -- stdio -----------------------------------------------------------------


class StdioConsole(Console):
    """The console on this process's stdin and stdout."""

    def __init__(
        self,
        loop: EventLoop,
        on_eof: Callable[[], None],
        in_fd: int = 0,
        out_fd: int = 1,
    ) -> None:
        super().__init__(loop)
        self._on_eof = on_eof
        self._in_fd = in_fd
        self._saved_termios: list[Any] | None = None
        self._restore_flags: list[tuple[int, int]] = []
        self._owned: list[int] = []
        if os.isatty(in_fd):
            # No local echo or line editing: the shell's own pty echoes.
            self._saved_termios = termios.tcgetattr(in_fd)
            tty.setraw(in_fd, termios.TCSANOW)
        self._in = self._nonblocking(in_fd, os.O_RDONLY)
        self._out = self._nonblocking(out_fd, os.O_WRONLY)
        self._writer = _Writer(loop, self._out, self._send, self._drained, self._failed)
        self._eof = False
        loop.add_reader(self._in, self._readable)

    def _nonblocking(self, fd: int, mode: int) -> int:
        """A non-blocking descriptor for fd that leaves fd's own flags alone.

        Re-opening through /proc gives a new open file description (a tty or
        a pipe), so O_NONBLOCK does not leak to the processes that share
        ours; sockets cannot be re-opened, so there the flag is set and put
        back at close.
        """
        try:
            new = os.open(f"/proc/self/fd/{fd}", mode | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError:
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
            if not flags & os.O_NONBLOCK:
                self._restore_flags.append((fd, flags))
                fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
            return fd
        self._owned.append(new)
        return new

    def _send(self, data: bytes) -> int:
        return os.write(self._out, data)

    def _failed(self, exc: OSError) -> None:
        self._end()

    def _end(self) -> None:
        if not self._eof:
            self._eof = True
            self.loop.remove_reader(self._in)
            self._writer.clear()
            self._on_eof()

    def _readable(self) -> None:
        try:
            data = os.read(self._in, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:  # EIO: the terminal hung up
            data = b""
        if not data:
            self._end()
            return
        self.on_input(data)

    def write(self, data: bytes) -> None:
        if not self._eof:
            self._writer.write(data)

    def backlog(self) -> int:
        return len(self._writer.queue)

    def close(self) -> None:
        self.loop.remove_reader(self._in)
        self._writer.clear()
        if self._saved_termios is not None:
            with contextlib.suppress(termios.error, OSError):
                termios.tcsetattr(self._in_fd, termios.TCSADRAIN, self._saved_termios)
            self._saved_termios = None
        for fd, flags in self._restore_flags:
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, fcntl.F_SETFL, flags)
        self._restore_flags.clear()
        for fd in self._owned:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._owned.clear()


# -- pty ---------------------------------------------------------------------

IN_MODIFY = 0x02
IN_CLOSE_WRITE = 0x08
IN_CLOSE_NOWRITE = 0x10
IN_OPEN = 0x20


class _Inotify:
    """inotify on one path (by default its open and close events), through libc."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def watch(
        cls, path: str, mask: int = IN_OPEN | IN_CLOSE_WRITE | IN_CLOSE_NOWRITE
    ) -> _Inotify | None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        except (OSError, AttributeError):
            return None
        if fd < 0:
            return None
        if libc.inotify_add_watch(fd, os.fsencode(path), mask) < 0:
            os.close(fd)
            return None
        return cls(fd)

    def drain(self) -> int:
        """Read every pending event; return the union of their masks."""
        events = 0
        with contextlib.suppress(OSError):
            while data := os.read(self.fd, 4096):
                pos = 0
                while pos + 16 <= len(data):
                    _, mask, _, length = struct.unpack_from("iIII", data, pos)
                    events |= mask
                    pos += 16 + length
        return events

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


Inotify = _Inotify


class PtyConsole(Console):
    """The console on a pty whose slave is published at `link`."""

    RECHECK = 0.05  # only without inotify: how often to look for an opener

    def __init__(self, loop: EventLoop, link: str) -> None:
        super().__init__(loop)
        self.link = os.path.abspath(link)
        if os.path.lexists(self.link) and not os.path.islink(self.link):
            raise ConsoleError(f"{self.link} exists and is not a symlink: not replacing it")
        self._master, slave = os.openpty()
        try:
            tty.setraw(slave)
            self.device = os.ttyname(slave)
        finally:
            os.close(slave)
        os.set_blocking(self._master, False)
        tmp = f"{self.link}.{os.getpid()}.tmp"
        try:
            os.symlink(self.device, tmp)
            os.replace(tmp, self.link)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            os.close(self._master)
            raise ConsoleError(f"cannot create the pty link {self.link}: {exc.strerror}")
        self._writer = _Writer(loop, self._master, self._send, self._drained, self._failed)
        self.connected = False
        self._reading = False
        self._recheck: Timer | None = None
        self._inotify = _Inotify.watch(self.device)
        if self._inotify is not None:
            loop.add_reader(self._inotify.fd, self._opened_or_closed)
        self._check_client()

    def _send(self, data: bytes) -> int:
        return os.write(self._master, data)

    def _failed(self, exc: OSError) -> None:
        self._check_client()

    def _opened_or_closed(self) -> None:
        if self._inotify is not None:
            self._inotify.drain()
        self._check_client()

    def _check_client(self) -> None:
        poller = select.poll()
        poller.register(self._master, select.POLLIN)
        hung_up = any(mask & select.POLLHUP for _, mask in poller.poll(0))
        self.connected = not hung_up
        if self.connected and not self._reading:
            self._reading = True
            self.loop.add_reader(self._master, self._readable)
        elif not self.connected:
            if self._reading:
                self._reading = False
                self.loop.remove_reader(self._master)
            self._writer.clear()
            if self._inotify is None and self._recheck is None:
                self._recheck = self.loop.call_later(self.RECHECK, self._recheck_client)
            self._drained()

    def _recheck_client(self) -> None:
        self._recheck = None
        self._check_client()

    def _readable(self) -> None:
        try:
            data = os.read(self._master, READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno != errno.EIO:
                raise
            data = b""
        if not data:  # the last opener closed the slave
            self._check_client()
            return
        self.on_input(data)

    def write(self, data: bytes) -> None:
        if self.connected:
            self._writer.write(data)

    def backlog(self) -> int:
        return len(self._writer.queue)

    def close(self) -> None:
        self._writer.clear()
        if self._recheck is not None:
            self._recheck.cancel()
        if self._reading:
            self.loop.remove_reader(self._master)
            self._reading = False
        if self._inotify is not None:
            self.loop.remove_reader(self._inotify.fd)
            self._inotify.close()
            self._inotify = None
        with contextlib.suppress(OSError):
            if os.readlink(self.link) == self.device:
                os.unlink(self.link)
        with contextlib.suppress(OSError):
            os.close(self._master)


# -- tcp ---------------------------------------------------------------------

IAC, DONT, DO, WONT, WILL, SB, SE = 255, 254, 253, 252, 251, 250, 240
OPT_ECHO, OPT_SGA = 1, 3
CR, LF, NUL = 13, 10, 0


class TelnetFilter:
    """Input side of a ser2net-style port.

    Strips telnet commands, answers option negotiation the client starts (we
    agree to echo and to suppress go-ahead, and refuse everything else), and
    turns the network newlines CR LF and CR NUL into the CR a terminal sends.
    `active` becomes true once the client has spoken telnet; from then on
    output bytes 0xFF are doubled.
    """

    def __init__(self) -> None:
        self.active = False
        self._state = "data"
        self._command = 0
        self._after_cr = False
        self._we_do: set[int] = set()
        self._they_do: set[int] = set()

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        """Return (payload for the board, reply for the client)."""
        out = bytearray()
        reply = bytearray()
        for byte in data:
            state = self._state
            if state == "data":
                if byte == IAC:
                    self._state = "iac"
                else:
                    self._data(byte, out)
            elif state == "iac":
                self.active = True
                self._state = "data"
                if byte == IAC:
                    self._data(byte, out)
                elif byte in (WILL, WONT, DO, DONT):
                    self._command = byte
                    self._state = "option"
                elif byte == SB:
                    self._state = "sb"
                # NOP, AYT, BRK, GA...: nothing to do
            elif state == "option":
                reply += self._negotiate(self._command, byte)
                self._state = "data"
            elif state == "sb":
                if byte == IAC:
                    self._state = "sb-iac"
            elif state == "sb-iac":
                self._state = "data" if byte == SE else "sb"
        return bytes(out), bytes(reply)

    def _data(self, byte: int, out: bytearray) -> None:
        if self._after_cr and byte in (LF, NUL):
            self._after_cr = False
            return
        self._after_cr = byte == CR
        out.append(byte)

    def _negotiate(self, command: int, option: int) -> bytes:
        if command == DO:
            if option in (OPT_ECHO, OPT_SGA):
                if option in self._we_do:
                    return b""
                self._we_do.add(option)
                return bytes((IAC, WILL, option))
            return bytes((IAC, WONT, option))
        if command == DONT:
            if option in self._we_do:
                self._we_do.discard(option)
                return bytes((IAC, WONT, option))
            return b""
        if command == WILL:
            if option == OPT_SGA:
                if option in self._they_do:
                    return b""
                self._they_do.add(option)
                return bytes((IAC, DO, option))
            return bytes((IAC, DONT, option))
        # WONT
        if option in self._they_do:
            self._they_do.discard(option)
            return bytes((IAC, DONT, option))
        return b""

    def escape(self, data: bytes) -> bytes:
        return data.replace(b"\xff", b"\xff\xff") if self.active else data


class TcpConsole(Console):
    """The console on 127.0.0.1:port, one client at a time."""

    BUSY_MESSAGE = b"\r\nlava-dispatcher sim: console port already in use\r\n"

    def __init__(self, loop: EventLoop, port: int, host: str = "127.0.0.1") -> None:
        super().__init__(loop)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind((host, port))
            self._listener.listen(8)
        except OSError as exc:
            self._listener.close()
            raise ConsoleError(f"cannot listen on {host}:{port}: {exc.strerror}")
        self._listener.setblocking(False)
        self.host = host
        self.port: int = self._listener.getsockname()[1]
        self._client: socket.socket | None = None
        self._writer: _Writer | None = None
        self._telnet = TelnetFilter()
        loop.add_reader(self._listener.fileno(), self._accept)

    @property
    def connected(self) -> bool:
        return self._client is not None

    def _accept(self) -> None:
        try:
            sock, _ = self._listener.accept()
        except OSError:
            return
        sock.setblocking(False)
        if self._client is not None:
            with contextlib.suppress(OSError):
                sock.send(self.BUSY_MESSAGE)
            sock.close()
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._client = sock
        self._telnet = TelnetFilter()
        self._writer = _Writer(self.loop, sock.fileno(), sock.send, self._drained, self._failed)
        self.loop.add_reader(sock.fileno(), self._readable)

    def _failed(self, exc: OSError) -> None:
        self._drop_client()

    def _drop_client(self) -> None:
        sock, self._client = self._client, None
        if sock is None:
            return
        self.loop.remove_reader(sock.fileno())
        if self._writer is not None:
            self._writer.clear()
            self._writer = None
        sock.close()
        self._drained()

    def _readable(self) -> None:
        sock = self._client
        if sock is None:
            return
        try:
            data = sock.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop_client()
            return
        payload, reply = self._telnet.feed(data)
        if reply and self._writer is not None:
            self._writer.write(reply)
        if payload:
            self.on_input(payload)

    def write(self, data: bytes) -> None:
        if self._writer is not None:
            self._writer.write(self._telnet.escape(data))

    def backlog(self) -> int:
        return len(self._writer.queue) if self._writer is not None else 0

    def close(self) -> None:
        self._drop_client()
        self.loop.remove_reader(self._listener.fileno())
        self._listener.close()


class FanoutConsole(Console):
    """Several transports wired to one board: output goes to all of them."""

    def __init__(self, loop: EventLoop, consoles: list[Console]) -> None:
        super().__init__(loop)
        self.consoles = consoles
        for console in consoles:
            console.on_input = self._input
            console.on_drain = self._drained

    def _input(self, data: bytes) -> None:
        self.on_input(data)

    def write(self, data: bytes) -> None:
        for console in self.consoles:
            console.write(data)

    def backlog(self) -> int:
        return max((c.backlog() for c in self.consoles), default=0)

    def close(self) -> None:
        for console in self.consoles:
            console.close()
