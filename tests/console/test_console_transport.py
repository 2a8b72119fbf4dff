"""Transports for real: spawned processes on ptys, a pty pair, loopback TCP (telnet, socket://, rfc2217://)."""

from __future__ import annotations

import ast
import os
import socket
import stat
import sys
import threading
import time
from pathlib import Path

import pytest
import serial
import serial.rfc2217
from console_helpers import echo_handler, pid_gone

from lava_dispatcher import errors
from lava_dispatcher.console import (
    ProcessTransport,
    SerialTransport,
    TransportClosed,
    TransportError,
    open_transport,
)
from lava_dispatcher.console.transport import PTY_DIMENSIONS


def read_until(transport, needle: bytes, timeout: float = 5.0) -> bytes:
    """Read until ``needle`` shows up (read timeouts, no sleeps)."""
    end = time.monotonic() + timeout
    data = b""
    while needle not in data:
        left = end - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{needle!r} not read in {timeout}s; got {data!r}")
        data += transport.read(65536, min(left, 0.5))
    return data


def read_to_eof(transport, timeout: float = 5.0) -> bytes:
    end = time.monotonic() + timeout
    data = b""
    with pytest.raises(TransportClosed):
        while time.monotonic() < end:
            data += transport.read(65536, 0.5)
    return data


PY = sys.executable


# -- ProcessTransport ------------------------------------------------------------------


def test_process_output_then_eof(resources):
    transport = resources.process([PY, "-c", "print('hello'); print('world')"])
    data = read_to_eof(transport)
    assert data == b"hello\r\nworld\r\n"  # the pty's ONLCR adds the \r
    assert transport.closed is False
    transport.close()
    assert transport.closed is True
    assert transport.exit_status == 0
    assert pid_gone(transport.pid)
    with pytest.raises(TransportClosed):
        transport.read(10, 0.1)
    transport.cancel_read()  # a late wake-up is harmless (touches no reused fd)


def test_transport_closed_is_a_connection_closed_error():
    assert issubclass(TransportClosed, errors.ConnectionClosedError)
    assert issubclass(TransportClosed, errors.InfrastructureError)


def test_process_describe_and_pid(resources):
    transport = resources.process(["cat", "-u"])
    assert transport.pid > 0
    assert not pid_gone(transport.pid)
    assert transport.describe() == f"process 'cat -u' pid {transport.pid}"


def test_process_argv_is_never_given_to_a_shell(resources, tmp_path):
    marker = tmp_path / "pwned"
    args = ["a b", "$HOME", ";", "*", f"$(touch {marker})", "'quoted'"]
    code = "import sys; print(repr(sys.argv[1:]))"
    transport = resources.process([PY, "-c", code, *args], cwd=str(tmp_path))
    data = read_to_eof(transport).decode()
    assert ast.literal_eval(data.strip()) == args
    assert not marker.exists()


def test_process_single_argument_with_spaces(resources, tmp_path):
    script = tmp_path / "my dut console"
    script.write_text(f"#!{PY}\nimport os\nprint('cwd', os.getcwd())\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    transport = resources.process([str(script)], cwd=str(tmp_path))
    assert read_to_eof(transport) == f"cwd {tmp_path}\r\n".encode()


def test_process_env_is_passed(resources):
    transport = resources.process(
        [PY, "-c", "import os; print(os.environ['LAVA_TEST_VAR'])"],
        env={"LAVA_TEST_VAR": "value with spaces", "PATH": os.environ["PATH"]},
    )
    assert read_to_eof(transport) == b"value with spaces\r\n"


def test_process_pty_echo_is_off(resources):
    transport = resources.process(["cat"])
    transport.write(b"ping\n")
    data = read_until(transport, b"ping")
    # cat prints the line once; a pty with echo on would show it twice
    data += transport.read(1024, 0.2)
    assert data == b"ping\r\n"


def test_process_window_is_wide(resources):
    transport = resources.process([PY, "-c", "import os; print(tuple(os.get_terminal_size()))"])
    columns, lines = ast.literal_eval(read_to_eof(transport).decode().strip())
    assert (lines, columns) == PTY_DIMENSIONS
    assert columns >= 10000


def test_process_read_times_out_with_empty_bytes(resources):
    transport = resources.process(["cat"])
    start = time.monotonic()
    assert transport.read(100, 0.2) == b""
    elapsed = time.monotonic() - start
    assert 0.15 <= elapsed < 1.5


def test_process_missing_command():
    with pytest.raises(TransportError, match="no-such-command-here"):
        ProcessTransport(["no-such-command-here", "x"])
    with pytest.raises(ValueError):
        ProcessTransport([])


def test_close_ends_a_process_that_ignores_sigterm(resources):
    code = (
        "import signal, sys\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "signal.signal(signal.SIGHUP, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
    )
    transport = resources.process([PY, "-c", code])
    read_until(transport, b"ready")
    start = time.monotonic()
    transport.close()
    elapsed = time.monotonic() - start
    assert elapsed < 1.5
    assert pid_gone(transport.pid)
    assert transport.exit_status == -9


def test_close_terminates_a_polite_process_quickly(resources):
    transport = resources.process(
        [PY, "-c", "print('ready', flush=True); import sys; sys.stdin.read()"]
    )
    read_until(transport, b"ready")
    start = time.monotonic()
    transport.close()
    assert time.monotonic() - start < 0.5
    assert pid_gone(transport.pid)
    assert transport.exit_status in (-15, -1)  # SIGTERM (or the SIGHUP sent with it)
    transport.close()  # twice is fine


def test_close_wakes_a_blocked_reader(resources):
    transport = resources.process(["cat"])
    outcome: list[object] = []
    started = threading.Event()

    def reader():
        started.set()
        try:
            outcome.append(transport.read(100, 30.0))
        except TransportClosed as exc:
            outcome.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        started.wait(5)
        start = time.monotonic()
        transport.close()
        thread.join(5)
        assert not thread.is_alive()
        assert time.monotonic() - start < 1.0
        assert len(outcome) == 1 and (outcome[0] == b"" or isinstance(outcome[0], TransportClosed))
    finally:
        transport.close()
        thread.join(5)


def test_close_unblocks_a_write_to_a_dut_that_stopped_reading(resources):
    transport = resources.process(
        [PY, "-c", "import signal; print('ready', flush=True); signal.pause()"]
    )
    read_until(transport, b"ready")
    outcome: list[BaseException] = []
    blocked = threading.Event()

    def writer():
        blocked.set()
        try:
            # far more than the pty's input queue holds (in lines: a canonical
            # tty drops the characters of an over-long line instead of blocking)
            transport.write((b"x" * 99 + b"\n") * 10000)
        except TransportClosed as exc:
            outcome.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        blocked.wait(5)
        thread.join(0.3)
        assert thread.is_alive()  # the write really is stuck
        start = time.monotonic()
        transport.close()
        thread.join(5)
        assert not thread.is_alive()
        assert time.monotonic() - start < 1.5
        assert len(outcome) == 1
    finally:
        transport.close()
        thread.join(5)


def test_write_after_close_raises(resources):
    transport = resources.process(["cat"])
    transport.close()
    with pytest.raises(TransportClosed):
        transport.write(b"x")


# -- SerialTransport on a pty pair -------------------------------------------------------


def read_master(master: int, needle: bytes, timeout: float = 5.0) -> bytes:
    import select

    end = time.monotonic() + timeout
    data = b""
    while needle not in data:
        left = end - time.monotonic()
        assert left > 0, f"{needle!r} not seen on the pty master; got {data!r}"
        ready, _, _ = select.select([master], [], [], left)
        if ready:
            data += os.read(master, 4096)
    return data


def test_serial_on_a_pty(resources, pty_pair):
    master, path = pty_pair
    os.write(master, b"U-Boot 2024.01\r\n")  # before the port is opened: not lost
    transport = resources.transport(SerialTransport(path, baudrate=115200))
    assert transport.describe() == f"serial {path}"
    os.write(master, b"=> ")
    assert read_until(transport, b"=> ") == b"U-Boot 2024.01\r\n=> "
    transport.write(b"printenv\n")
    assert read_master(master, b"printenv\n") == b"printenv\n"  # raw mode: bytes as sent
    assert transport.read(100, 0.1) == b""
    os.close(master)
    with pytest.raises(TransportClosed):
        for _ in range(20):
            transport.read(100, 0.5)
    transport.close()
    assert transport.closed


def test_serial_open_failure():
    with pytest.raises(TransportError, match="/dev/does-not-exist"):
        SerialTransport("/dev/does-not-exist")


def test_serial_close_wakes_reader(resources, pty_pair):
    _master, path = pty_pair
    transport = resources.transport(SerialTransport(path))
    done = threading.Event()

    def reader():
        try:
            transport.read(100, 30.0)
        except TransportClosed:
            pass
        done.set()

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        start = time.monotonic()
        # let the reader block: wait until it holds the read lock
        end = start + 5
        while not transport._read_lock.locked() and time.monotonic() < end:
            done.wait(0.005)
        transport.close()
        assert done.wait(2)
        assert time.monotonic() - start < 2
    finally:
        transport.close()
        thread.join(5)


# -- loopback TCP: socket://, telnet, rfc2217:// ------------------------------------------


def test_serial_socket_url(resources, tcp_server):
    server = tcp_server(echo_handler())
    transport = resources.transport(open_transport({"serial": f"socket://127.0.0.1:{server.port}"}))
    # the greeting is sent the moment the server accepts: it must not be lost
    # whether it arrives before or after pyserial finished opening the port
    assert isinstance(transport, SerialTransport)
    assert transport.describe() == f"serial socket://127.0.0.1:{server.port}"
    assert read_until(transport, b"\r\n") == b"hello from server\r\n"
    transport.write(b"ping\n")
    assert read_until(transport, b"echo: ping\r\n") == b"echo: ping\r\n"


def test_serial_socket_eof_when_server_closes(resources, tcp_server):
    def greet_and_close(conn: socket.socket) -> None:
        conn.sendall(b"bye\r\n")
        conn.shutdown(socket.SHUT_RDWR)

    server = tcp_server(greet_and_close)
    transport = resources.transport(SerialTransport(f"socket://127.0.0.1:{server.port}"))
    assert read_to_eof(transport) == b"bye\r\n"


def test_telnet_through_open_transport(resources, tcp_server):
    server = tcp_server(echo_handler())
    transport = resources.transport(open_transport({"connect": f"telnet 127.0.0.1 {server.port}"}))
    assert isinstance(transport, ProcessTransport)
    assert transport.describe() == f"process 'telnet 127.0.0.1 {server.port}' pid {transport.pid}"
    greeting = read_until(transport, b"hello from server")
    assert b"Connected to 127.0.0.1" in greeting
    transport.write(b"ping\n")
    read_until(transport, b"echo: ping")
    transport.close()
    assert pid_gone(transport.pid)


def test_telnet_connect_as_a_list(resources, tcp_server):
    server = tcp_server(echo_handler(b"list form\r\n"))
    transport = resources.transport(
        open_transport({"connect": ["telnet", "127.0.0.1", str(server.port)], "tags": ["primary"]})
    )
    read_until(transport, b"list form")


def _rfc2217_handler(conn: socket.socket) -> None:
    """An RFC 2217 server (pyserial's PortManager) in front of a loop:// port."""
    port = serial.serial_for_url("loop://", timeout=0)

    class Net:
        def write(self, data: bytes) -> None:
            conn.sendall(data)

    # (no greeting: the client purges its input when it has opened the port)
    manager = serial.rfc2217.PortManager(port, Net())
    conn.settimeout(0.02)
    while True:
        try:
            data = conn.recv(4096)
        except TimeoutError:
            data = None
        if data == b"":
            return
        if data:
            for byte in manager.filter(data):
                port.write(byte)
        echoed = port.read(4096)
        if echoed:
            conn.sendall(b"".join(manager.escape(echoed)))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pyserial's own rfc2217 thread setup
def test_serial_rfc2217_url(resources, tcp_server):
    server = tcp_server(_rfc2217_handler)
    transport = resources.transport(
        open_transport({"serial": f"rfc2217://127.0.0.1:{server.port}", "baudrate": 9600})
    )
    assert transport.describe() == f"serial rfc2217://127.0.0.1:{server.port}"
    transport.write(b"ping\r\n")
    assert read_until(transport, b"ping\r\n") == b"ping\r\n"  # the loop:// port echoes
    assert transport.read(100, 0.1) == b""
    transport.write(bytes(range(256)))  # binary, including the telnet IAC byte
    assert read_until(transport, b"\xfe\xff") == bytes(range(256))


# -- open_transport --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, "needs 'connect'"),
        ({"tags": ["primary"]}, r"got keys \['tags'\]"),
        ({"connect": ""}, "'connect' command is empty"),
        ({"connect": 42}, "'connect' must be a command string or a list"),
        ({"connect": ["telnet", 7000]}, "'connect' must be a command string or a list"),
        ({"connect": "telnet 'unterminated"}, "cannot be parsed"),
        ({"connect": "telnet x", "serial": "/dev/ttyUSB0"}, "either 'connect' or 'serial'"),
        ({"connect": "telnet x", "baudrate": 9600}, "'baudrate' only applies"),
        ({"serial": ""}, "'serial' must be a device path or a pyserial URL"),
        ({"serial": 3}, "'serial' must be a device path or a pyserial URL"),
        (
            {"serial": "/dev/ttyUSB0", "baudrate": "fast"},
            "'baudrate' must be a positive integer, got 'fast'",
        ),
        ({"serial": "/dev/ttyUSB0", "baudrate": -1}, "'baudrate' must be a positive integer"),
        ("telnet localhost 7000", "must be a mapping"),
    ],
)
def test_open_transport_rejects_bad_entries(spec, message):
    with pytest.raises(ValueError, match=message):
        open_transport(spec)


def test_open_transport_command_string_is_split_like_a_shell(resources, tmp_path):
    script = Path(tmp_path) / "args.py"
    script.write_text("import sys; print(sys.argv[1:])")
    transport = resources.transport(open_transport({"connect": f"{PY} {script} 'a b' c"}))
    assert read_to_eof(transport) == b"['a b', 'c']\r\n"
