"""Byte transports to a console: a local process on a pty, or a serial port.

A transport moves raw bytes. It knows nothing of lines, encodings or
prompts: :mod:`lava_dispatcher.console.reader` reads it all the time and the
expect engine works on what the reader decoded.

Every transport here can be read from one thread (the console reader) while
another thread writes to it and a third closes it: ``close()`` wakes a
blocked ``read()`` through a self-pipe and waits for it to leave before the
file descriptor is released, so a descriptor number is never reused under a
reader's feet.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import shlex
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from lava_dispatcher import errors

#: the window size given to a spawned process's pty: wide, so that nothing wraps
PTY_DIMENSIONS = (24, 32767)

#: how long close() waits for a process to exit after SIGTERM, then after SIGKILL
TERM_GRACE = 0.4
KILL_GRACE = 0.5

_POLL_IN = select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR | select.POLLNVAL


class TransportClosed(errors.ConnectionClosedError):
    """The far end of a transport went away (EOF), or it was closed."""


class TransportError(errors.InfrastructureError):
    """A transport could not be opened (missing command, unreachable port)."""


@runtime_checkable
class Transport(Protocol):
    """What the console reader and writers need from a connection."""

    def read(self, max_bytes: int, timeout: float) -> bytes:
        """Up to ``max_bytes`` that are available now, waiting up to ``timeout``
        seconds for the first one; ``b""`` when nothing came. Raises
        :class:`TransportClosed` at EOF."""
        ...

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...

    @property
    def closed(self) -> bool: ...

    def describe(self) -> str: ...


class _Waker:
    """A self-pipe that interrupts a poll() from another thread.

    After close() it never touches a descriptor again: the numbers may have
    been reused by then.
    """

    def __init__(self) -> None:
        self.rfd, self.wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._lock = threading.Lock()
        self._closed = False

    def wake(self) -> None:
        with self._lock:
            if self._closed:
                return
            with contextlib.suppress(BlockingIOError):  # full pipe: already awake
                os.write(self.wfd, b"x")

    def drain(self) -> None:
        with self._lock:
            if self._closed:
                return
            with contextlib.suppress(BlockingIOError):
                while os.read(self.rfd, 4096):
                    pass

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for fd in (self.rfd, self.wfd):
                with contextlib.suppress(OSError):
                    os.close(fd)


class _FdTransport:
    """Shared machinery: poll a readable descriptor plus a waker, under a read lock."""

    def __init__(self) -> None:
        self._closed = False
        self._read_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._waker = _Waker()
        self._read_poller: Any = None
        self._read_poller_fd = -1

    @property
    def closed(self) -> bool:
        return self._closed

    def cancel_read(self) -> None:
        """Make a blocked :meth:`read` return ``b""`` at once (extension used by the reader)."""
        self._waker.wake()

    def _wait_readable(self, fd: int, timeout: float) -> int:
        """The poll events of ``fd`` once readable (or hung up) within ``timeout``;
        0 on timeout or when woken. Called with the read lock held."""
        poller = self._read_poller
        if poller is None or self._read_poller_fd != fd:
            poller = self._read_poller = select.poll()
            self._read_poller_fd = fd
            poller.register(fd, _POLL_IN)
            poller.register(self._waker.rfd, select.POLLIN)
        events = poller.poll(max(0.0, timeout) * 1000.0)
        ready = 0
        for efd, mask in events:
            if efd == self._waker.rfd:
                if not self._closed:  # once closed, stay readable: it wakes every poller
                    self._waker.drain()
                return 0
            ready = mask
        return ready

    def _wait_writable(self, fd: int) -> None:
        """Wait until ``fd`` takes more bytes; raise TransportClosed if closed meanwhile."""
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        poller.register(self._waker.rfd, select.POLLIN)
        while not self._closed:
            for efd, mask in poller.poll(1000.0):
                if efd != self._waker.rfd:
                    if mask & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                        raise TransportClosed(f"{self.describe()} hung up while writing")
                    return
        raise TransportClosed(f"{self.describe()} closed while writing")

    def _begin_close(self) -> bool:
        """Mark closed and wake a blocked read() or write(); False if already closed.

        The caller then takes the locks (which those calls leave promptly)
        before it releases any descriptor."""
        if self._closed:
            return False
        self._closed = True
        self._waker.wake()
        return True

    def describe(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError


class ProcessTransport(_FdTransport):
    """A local process on a pty (QEMU, ``telnet host port``, ``ssh``...), spawned by pexpect.

    The process is started from an argument list, never through a shell. The
    pty has echo off and a very wide window so that long lines do not wrap.
    """

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> None:
        import pexpect

        args = [str(a) for a in argv]
        if not args or not args[0]:
            raise ValueError("ProcessTransport needs a non-empty argument list")
        super().__init__()
        self.argv: list[str] = args
        self.exit_status: int | None = None
        if len(args) > 1:
            command, rest = args[0], args[1:]
        else:
            # with no argument list pexpect splits the command on spaces: escape
            # every character so that it comes back exactly as given
            command, rest = "".join("\\" + c for c in args[0]), []
        try:
            self._child = pexpect.spawn(
                command,
                rest,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                echo=False,
                dimensions=PTY_DIMENSIONS,
                encoding=None,
                timeout=None,
            )
        except pexpect.ExceptionPexpect as exc:
            self._waker.close()
            raise TransportError(f"cannot start {shlex.join(args)!r}: {exc}") from exc
        except OSError as exc:
            self._waker.close()
            raise TransportError(f"cannot start {shlex.join(args)!r}: {exc}") from exc
        self.pid: int = int(self._child.pid)
        self._fd: int = int(self._child.child_fd)
        # non-blocking: a write to a DUT that stopped reading waits in poll(),
        # where close() can wake it, instead of in the kernel for ever
        os.set_blocking(self._fd, False)
        # pexpect's close() sleeps 0.1 s "to give the kernel time": we wait on the exit instead
        self._child.ptyproc.delayafterclose = 0.0
        self._child.delayafterclose = 0.0
        self._child.delayafterterminate = 0.0

    def describe(self) -> str:
        return f"process {shlex.join(self.argv)!r} pid {self.pid}"

    def read(self, max_bytes: int, timeout: float) -> bytes:
        with self._read_lock:
            if self._closed:
                raise TransportClosed(f"{self.describe()} is closed")
            # the fd is non-blocking: during a burst, read at once; poll only when dry
            data = self._read_now(max_bytes)
            if data is None:
                if not self._wait_readable(self._fd, timeout):
                    if self._closed:
                        raise TransportClosed(f"{self.describe()} is closed")
                    return b""
                data = self._read_now(max_bytes)
            return data or b""

    def _read_now(self, max_bytes: int) -> bytes | None:
        """What the pty has now; None if nothing; TransportClosed at EOF."""
        try:
            data = os.read(self._fd, max_bytes)
        except BlockingIOError:
            return None
        except OSError as exc:
            # EIO: every holder of the pty's slave side has gone: the process ended
            raise TransportClosed(f"{self.describe()} ended") from exc
        if not data:
            raise TransportClosed(f"{self.describe()} ended")
        return data

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        with self._write_lock:
            while view:
                if self._closed:
                    raise TransportClosed(f"{self.describe()} is closed")
                try:
                    written = os.write(self._fd, view)
                except BlockingIOError:
                    self._wait_writable(self._fd)
                    continue
                except OSError as exc:
                    raise TransportClosed(f"cannot write to {self.describe()}: {exc}") from exc
                view = view[written:]

    def alive(self) -> bool:
        """Whether the process is still running (reaps it if it has ended)."""
        if self.exit_status is not None:
            return False
        try:
            alive = bool(self._child.isalive())
        except Exception:  # already reaped elsewhere
            alive = False
        if not alive:
            self._record_status()
        return alive

    def _record_status(self) -> None:
        signalstatus = getattr(self._child, "signalstatus", None)
        exitstatus = getattr(self._child, "exitstatus", None)
        if signalstatus is not None:
            self.exit_status = -int(signalstatus)
        elif exitstatus is not None:
            self.exit_status = int(exitstatus)

    def _wait_exit(self, pidfd: int | None, timeout: float) -> bool:
        """Wait up to ``timeout`` for the process to end, on its pidfd when there is one."""
        end = time.monotonic() + timeout
        while self.alive():
            left = end - time.monotonic()
            if left <= 0:
                return False
            if pidfd is not None:
                poller = select.poll()
                poller.register(pidfd, select.POLLIN)
                poller.poll(left * 1000.0)
            else:  # pragma: no cover - kernels without pidfd_open (< 5.3)
                threading.Event().wait(min(left, 0.01))
        return True

    def close(self) -> None:
        """End the process for sure: SIGTERM (and SIGHUP), a brief wait on its
        exit, then SIGKILL; reap it. Never blocks much more than a second."""
        if not self._begin_close():
            return
        # a reader or a writer blocked in poll() was woken by _begin_close()
        with self._read_lock, self._write_lock:
            pidfd: int | None = None
            try:
                if self.alive():
                    try:
                        pidfd = os.pidfd_open(self.pid)
                    except (OSError, AttributeError):
                        pidfd = None
                    # SIGHUP too, as a hung-up line would: interactive shells ignore SIGTERM
                    for sig in (signal.SIGTERM, signal.SIGHUP):
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(self.pid, sig)
                    if not self._wait_exit(pidfd, TERM_GRACE):
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(self.pid, signal.SIGKILL)
                        self._wait_exit(pidfd, KILL_GRACE)
            finally:
                if pidfd is not None:
                    os.close(pidfd)
                if self.exit_status is None and not self.alive():
                    self._record_status()
                if self.exit_status is not None:
                    with contextlib.suppress(Exception):
                        self._child.close(force=False)
                else:  # pragma: no cover - unkillable (D state): release the pty anyway
                    with contextlib.suppress(OSError):
                        self._child.ptyproc.fileobj.close()
                self._waker.close()


class SerialTransport(_FdTransport):
    """A serial port through pyserial: a device path, a pty, ``socket://``, ``rfc2217://``..."""

    #: the slice a port without a pollable descriptor (rfc2217) waits in its own read()
    _SLICE = 0.05

    def __init__(self, port: str, baudrate: int = 115200) -> None:
        import serial

        if not isinstance(port, str) or not port:
            raise ValueError(f"serial port must be a non-empty string, got {port!r}")
        super().__init__()
        self.port = port
        self.baudrate = int(baudrate)
        try:
            self._serial = serial.serial_for_url(
                port, baudrate=self.baudrate, timeout=0, do_not_open=True
            )
            _open_keeping_input(self._serial)
        except (serial.SerialException, OSError, ValueError) as exc:
            self._waker.close()
            raise TransportError(f"cannot open serial {port!r}: {exc}") from exc
        self._fd: int | None
        try:
            self._fd = int(self._serial.fileno())
        except Exception:
            self._fd = None
        if self._fd is None:
            # rfc2217 and friends: reads block inside pyserial, in short slices
            self._serial.timeout = self._SLICE

    def describe(self) -> str:
        return f"serial {self.port}"

    def read(self, max_bytes: int, timeout: float) -> bytes:
        import serial

        with self._read_lock:
            if self._closed:
                raise TransportClosed(f"{self.describe()} is closed")
            try:
                if self._fd is not None:
                    events = self._wait_readable(self._fd, timeout)
                    if not events:
                        if self._closed:
                            raise TransportClosed(f"{self.describe()} is closed")
                        return b""
                    # timeout is 0: pyserial returns what is there now
                    data = bytes(self._serial.read(max_bytes))
                    if not data and events & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                        raise TransportClosed(f"{self.describe()} hung up")
                    return data
                return self._read_sliced(max_bytes, timeout)
            except serial.SerialException as exc:
                raise TransportClosed(f"{self.describe()} ended: {exc}") from exc
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EINTR):
                    return b""
                raise TransportClosed(f"{self.describe()} ended: {exc}") from exc

    def _read_sliced(self, max_bytes: int, timeout: float) -> bytes:
        end = time.monotonic() + max(0.0, timeout)
        while not self._closed:
            waiting = int(self._serial.in_waiting)
            if waiting:
                return bytes(self._serial.read(min(waiting, max_bytes)))
            first = bytes(self._serial.read(1))  # waits up to one slice
            if first:
                more = min(int(self._serial.in_waiting), max_bytes - 1)
                return first + (bytes(self._serial.read(more)) if more > 0 else b"")
            if time.monotonic() >= end:
                return b""
        raise TransportClosed(f"{self.describe()} is closed")

    def write(self, data: bytes) -> None:
        import serial

        with self._write_lock:
            if self._closed:
                raise TransportClosed(f"{self.describe()} is closed")
            view = memoryview(data)
            try:
                while view:
                    written = self._serial.write(view)
                    if written is None:  # some url handlers write everything and return None
                        break
                    view = view[written:]
                    if view and self._fd is not None:
                        self._wait_writable(self._fd)
            except serial.SerialException as exc:
                raise TransportClosed(f"cannot write to {self.describe()}: {exc}") from exc

    def close(self) -> None:
        if not self._begin_close():
            return
        for name in ("cancel_read", "cancel_write"):
            cancel = getattr(self._serial, name, None)
            if cancel is not None:
                with contextlib.suppress(Exception):
                    cancel()
        with self._read_lock:
            with contextlib.suppress(Exception):
                self._close_socket_url()
            with contextlib.suppress(Exception):
                self._serial.close()
            self._waker.close()

    def _close_socket_url(self) -> None:
        """pyserial's socket:// and rfc2217:// close() sleep 0.3 s "for quick
        reconnects": close their socket (and join rfc2217's reader thread)
        ourselves so that close() has nothing left to do."""
        port = self._serial
        module = type(port).__module__
        if module not in ("serial.urlhandler.protocol_socket", "serial.rfc2217"):
            return
        sock = getattr(port, "_socket", None)
        if sock is None:
            return
        import socket

        port.is_open = False
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        thread = getattr(port, "_thread", None)
        if thread is not None:
            thread.join(2.0)
            port._thread = None
        port._socket = None


def _open_keeping_input(port: Any) -> None:
    """Open a pyserial port without the input flush its open() does.

    pyserial discards pending input when it opens a port (a tcflush on a
    tty, a drain of a ``socket://`` connection): a banner or boot log the
    far end sent as we connected would be lost. Nothing may be lost, so the
    flush is disabled for the duration of open() only.
    """
    names = [n for n in ("reset_input_buffer", "_reset_input_buffer") if hasattr(port, n)]
    for name in names:
        setattr(port, name, lambda: None)  # an instance attribute hides the method
    try:
        port.open()
    finally:
        for name in names:
            with contextlib.suppress(AttributeError):
                delattr(port, name)


def _connect_argv(value: Any) -> list[str]:
    if isinstance(value, str):
        try:
            argv = shlex.split(value)
        except ValueError as exc:
            raise ValueError(
                f"connection 'connect' command {value!r} cannot be parsed: {exc}"
            ) from exc
    elif isinstance(value, Sequence) and all(isinstance(a, str) for a in value):
        argv = list(value)
    else:
        raise ValueError(
            f"connection 'connect' must be a command string or a list of strings, got {value!r}"
        )
    if not argv or not argv[0]:
        raise ValueError(f"connection 'connect' command is empty: {value!r}")
    return argv


def open_transport(spec: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Transport:
    """Open the transport a device dictionary connection entry describes.

    ``{"connect": "telnet localhost 7000"}`` (LAVA's connection command, a
    string split like a shell would but never run by one, or a list) spawns a
    :class:`ProcessTransport`; ``{"serial": "/dev/ttyUSB0" | "socket://host:port"
    | "rfc2217://host:port", "baudrate": 115200}`` opens a :class:`SerialTransport`.
    Other keys (LAVA's ``tags``...) are ignored. ``env`` is the environment
    of a spawned connection command.
    """
    if not isinstance(spec, Mapping):
        raise ValueError(f"a connection entry must be a mapping, got {spec!r}")
    has_connect = "connect" in spec
    has_serial = "serial" in spec
    if has_connect and has_serial:
        raise ValueError("a connection entry takes either 'connect' or 'serial', not both")
    if has_connect:
        if "baudrate" in spec:
            raise ValueError("'baudrate' only applies to a 'serial' connection, not to 'connect'")
        return ProcessTransport(_connect_argv(spec["connect"]), env=env)
    if has_serial:
        port = spec["serial"]
        if not isinstance(port, str) or not port.strip():
            raise ValueError(
                f"connection 'serial' must be a device path or a pyserial URL, got {port!r}"
            )
        baud = spec.get("baudrate", 115200)
        try:
            baudrate = int(baud)
            if isinstance(baud, bool) or baudrate <= 0:
                raise ValueError
        except (TypeError, ValueError):
            raise ValueError(
                f"connection 'baudrate' must be a positive integer, got {baud!r}"
            ) from None
        return SerialTransport(port.strip(), baudrate)
    raise ValueError(
        "a connection entry needs 'connect' (a command) or 'serial' (a port or URL); "
        f"got keys {sorted(map(str, spec))}"
    )
