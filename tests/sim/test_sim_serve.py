"""`sim serve`: a board behind a pty and a TCP port, with power commands."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time

import pexpect
import pytest
import serial

from lava_dispatcher.sim import SimServer, child_env, sim_command

from .helpers import process_gone, read_until, run_cli, socket_reader

PROMPT = b"root@sim:~# "
IAC, DONT, DO, WONT, WILL = 255, 254, 253, 252, 251
ECHO, SGA, NAWS = 1, 3, 31


def serial_reader(port: serial.Serial):
    return lambda: port.read(65536)


def power(sim: SimServer, action: str) -> str:
    result = subprocess.run(
        sim.power_command(action), capture_output=True, text=True, timeout=30, env=child_env()
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def shell_pid(write, read) -> int:
    write(b"echo pid=$$\n")
    match = re.search(rb"pid=(\d+)\r\n", read_until(read, b"\r\n" + PROMPT))
    assert match
    return int(match.group(1))


def test_pty_with_pyserial_and_power_commands(server):
    sim = server(pty=True)
    assert os.path.islink(sim.pty)
    assert power(sim, "status").strip() == "off"
    port = serial.Serial(sim.pty, baudrate=115200, timeout=0.1)
    try:
        assert power(sim, "on").startswith("power on")
        boot = read_until(serial_reader(port), b"sim login: ")
        assert re.search(rb"Linux version [0-9]", boot)
        port.write(b"root\n")
        read_until(serial_reader(port), PROMPT)
        port.write(b"echo $((6*7))\n")
        assert read_until(serial_reader(port), b"\r\n" + PROMPT).endswith(
            b"echo $((6*7))\r\n42\r\n" + PROMPT
        )
        assert power(sim, "status").strip() == "on (shell)"
        pid = shell_pid(port.write, serial_reader(port))
        assert sim.status()["shell_pid"] == pid
        # power off kills the shell and silences the console
        power(sim, "off")
        assert process_gone(pid, timeout=0)
        port.write(b"echo hello\n")
        assert port.read(100) == b""
        assert power(sim, "status").strip() == "off"
    finally:
        port.close()
    # the pty survives its client going away: a new client, a new boot
    port = serial.Serial(sim.pty, timeout=0.1)
    try:
        sim.power_on()
        read_until(serial_reader(port), b"sim login: ")
        port.write(b"root\n")
        read_until(serial_reader(port), PROMPT)
    finally:
        port.close()


def test_tcp_socket_login_and_reset(server):
    sim = server(pty=False, tcp=True, password="pw")
    assert sim.pty is None and sim.tcp_port
    with socket.create_connection(("127.0.0.1", sim.tcp_port)) as sock:
        read = socket_reader(sock)
        power(sim, "on")
        read_until(read, b"sim login: ")
        sock.sendall(b"root\r\n")  # a network newline counts once
        read_until(read, b"Password: ")
        sock.sendall(b"pw\r\n")
        read_until(read, PROMPT)
        sock.sendall(b"echo $((6*7))\r\n")
        out = read_until(read, b"\r\n" + PROMPT)
        assert out.endswith(b"echo $((6*7))\r\n42\r\n" + PROMPT)
        pid = shell_pid(sock.sendall, read)
        assert power(sim, "reset").startswith("power reset")
        assert process_gone(pid, timeout=0)
        boot = read_until(read, b"sim login: ")
        assert re.search(rb"Linux version [0-9]", boot)
        assert sim.status()["stage"] == "login"


def test_telnet_program(server):
    sim = server(pty=False, tcp=True)
    child = pexpect.spawn("telnet", ["127.0.0.1", str(sim.tcp_port)], timeout=10)
    try:
        child.expect_exact("Escape character is")
        power(sim, "on")
        child.expect_exact("sim login: ")
        child.sendline("root")
        child.expect_exact(PROMPT)
        child.sendline("echo $((6*7))")
        child.expect(rb"\n42\r*\n")
        child.expect_exact(PROMPT)
    finally:
        child.close(force=True)


def test_telnet_negotiation_is_answered_not_started(server):
    sim = server(pty=False, tcp=True, no_login=True)
    with socket.create_connection(("127.0.0.1", sim.tcp_port)) as sock:
        read = socket_reader(sock)
        sim.power_on()
        boot = read_until(read, PROMPT)
        assert bytes([IAC]) not in boot, "a raw client must get raw bytes"
        sock.sendall(bytes([IAC, DO, ECHO, IAC, DO, SGA, IAC, WILL, NAWS]))
        reply = read_until(read, bytes([IAC, DONT, NAWS]), timeout=5)
        assert bytes([IAC, WILL, ECHO]) in reply
        assert bytes([IAC, WILL, SGA]) in reply
        # commands inside the data stream are stripped before the shell sees them
        sock.sendall(b"echo $((6" + bytes([IAC, 241]) + b"*7))\r\0")
        assert read_until(read, b"\r\n" + PROMPT).endswith(b"\r\n42\r\n" + PROMPT)


def test_tcp_is_one_client_at_a_time_and_discards_output_without_one(server):
    sim = server(pty=True, tcp=True)
    port = serial.Serial(sim.pty, timeout=0.1)
    try:
        sim.power_on()
        read_until(serial_reader(port), b"sim login: ")  # booted with no TCP client
        with socket.create_connection(("127.0.0.1", sim.tcp_port)) as sock:
            sock.settimeout(0.3)
            with pytest.raises(socket.timeout):
                sock.recv(100)  # nothing old is replayed
            sock.sendall(b"\r")
            assert read_until(socket_reader(sock), b"sim login: ").endswith(b"sim login: ")
            with socket.create_connection(("127.0.0.1", sim.tcp_port)) as second:
                second.settimeout(5)
                assert b"already in use" in second.recv(200)
                assert second.recv(200) == b""
    finally:
        port.close()


def test_burst_over_tcp(server):
    sim = server(pty=False, tcp=True, no_login=True, burst_mb=2, burst_after=0.2)
    with socket.create_connection(("127.0.0.1", sim.tcp_port)) as sock:
        sim.power_on()
        data = read_until(socket_reader(sock), b" lines\r\n", timeout=30)
    numbers = [int(n) for n in re.findall(rb"burst line (\d+) ", data)]
    total = int(re.search(rb"burst done: (\d+) lines", data).group(1))
    assert numbers == list(range(1, total + 1))


def test_stop_cleans_up_files_daemon_and_shell(tmp_path):
    sim = SimServer(tmp_path / "ctl", pty=True, tcp=True, no_login=True, boot_time=0)
    with sim:
        daemon = sim.pid
        files = [tmp_path / "ctl" / "info.json", tmp_path / "ctl" / "control.sock", sim.pty]
        info = json.loads((tmp_path / "ctl" / "info.json").read_text())
        assert info["pid"] == daemon and info["tcp_port"] == sim.tcp_port
        assert info["pty"] == sim.pty and info["control"] == sim.control
        assert info["socket"] == os.path.join(sim.control, "control.sock")
        with socket.create_connection(("127.0.0.1", sim.tcp_port)) as sock:
            read = socket_reader(sock)
            sim.power_on()
            read_until(read, PROMPT)
            sock.sendall(b"sleep 1000 & echo pids=$$,$!\n")
            match = re.search(rb"pids=(\d+),(\d+)\r\n", read_until(read, b"\r\n" + PROMPT))
        shell, job = int(match.group(1)), int(match.group(2))
        assert all(os.path.lexists(f) for f in files)
        result = run_cli("stop", "--control", sim.control)
        assert result.returncode == 0, result.stderr
        # `sim stop` returns once the daemon has finished cleaning up
        assert not any(os.path.lexists(f) for f in files)
        assert process_gone(shell, timeout=0)
        assert process_gone(job)
        assert sim.stop() == 0
    assert process_gone(daemon, timeout=0)


def test_sigterm_stops_the_daemon_cleanly(server):
    sim = server(pty=True, no_login=True)
    port = serial.Serial(sim.pty, timeout=0.1)
    try:
        sim.power_on()
        read_until(serial_reader(port), PROMPT)
        pid = shell_pid(port.write, serial_reader(port))
    finally:
        port.close()
    os.kill(sim.pid, signal.SIGTERM)
    assert sim.stop() == 0
    assert process_gone(pid, timeout=0)
    assert not os.path.lexists(sim.pty)
    assert not os.path.exists(os.path.join(sim.control, "info.json"))


def test_power_commands_without_a_daemon(tmp_path):
    result = run_cli("power", "on", "--control", str(tmp_path))
    assert result.returncode == 1
    assert "no simulator daemon" in result.stderr
    result = run_cli("stop", "--control", str(tmp_path / "nowhere"))
    assert result.returncode == 1
    assert "no simulator daemon" in result.stderr


def test_power_is_idempotent_and_status_is_json(server):
    sim = server(pty=True)
    assert power(sim, "off").startswith("power off (no change): off")
    power(sim, "on")
    assert "(no change)" in power(sim, "on")
    status = json.loads(run_cli("power", "status", "--json", "--control", sim.control).stdout)
    assert status["power"] == "on"


def test_second_daemon_on_one_directory_is_refused(server):
    sim = server(pty=False, tcp=True)
    result = run_cli("serve", "--control", sim.control, "--tcp", "0")
    assert result.returncode == 1
    assert "already running" in result.stderr
    assert sim.status()["power"] == "off"  # the first one is untouched


def test_detach(tmp_path):
    control = tmp_path / "d"
    started = time.monotonic()
    try:
        result = run_cli("serve", "--detach", "--control", str(control), "--tcp", "0", "--no-login")
        assert result.returncode == 0, result.stderr
        assert time.monotonic() - started < 10
        info = json.loads(result.stdout)
        assert json.loads((control / "info.json").read_text()) == info
        assert not process_gone(info["pid"], timeout=0)
        with socket.create_connection(("127.0.0.1", info["tcp_port"])) as sock:
            assert run_cli("power", "on", "--control", str(control)).returncode == 0
            read_until(socket_reader(sock), PROMPT)
            sock.sendall(b"echo $((6*7))\n")
            read_until(socket_reader(sock), b"42\r\n")
        assert run_cli("stop", "--control", str(control)).returncode == 0
        assert process_gone(info["pid"])
        assert not (control / "info.json").exists()
    finally:
        # whatever failed above, the daemon this test started does not outlive it
        with contextlib.suppress(OSError, ValueError, KeyError):
            pid = json.loads((control / "info.json").read_text())["pid"]
            os.kill(pid, signal.SIGTERM)
            process_gone(pid)


def test_python_api_argv_helpers(tmp_path):
    sim = SimServer(tmp_path, pty=True, password="x", hang_at="shell")
    assert sim.power_command("reset") == sim_command("power", "reset", "--control", str(tmp_path))
    run = sim.run_command(baud=9600)
    assert run[:4] == sim_command("run")
    assert run[4:] == ["--password", "x", "--hang-at", "shell", "--baud", "9600"]
    with pytest.raises(TypeError, match="knob"):
        SimServer(tmp_path, bogus=1)
    with pytest.raises(ValueError, match="--drop-rate"):
        SimServer(tmp_path, drop_rate=3)
    with pytest.raises(ValueError):
        sim.power_command("explode")


def test_pyserial_socket_url_reaches_the_tcp_port(server):
    sim = server(pty=False, tcp=True, no_login=True)
    port = serial.serial_for_url(f"socket://127.0.0.1:{sim.tcp_port}", timeout=0.1)
    try:
        sim.power_on()
        read_until(serial_reader(port), PROMPT)
        port.write(b"echo $((6*7))\n")
        assert read_until(serial_reader(port), b"\r\n" + PROMPT).endswith(b"\r\n42\r\n" + PROMPT)
    finally:
        port.close()
