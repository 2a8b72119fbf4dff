"""A LAVA-style coordinator client for the tests, and coordinator processes to talk to."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lava_dispatcher.protocols.coordinator_auth import signed

ROOT = Path(__file__).resolve().parents[2]
#: Debian's package lava-coordinator: LAVA's coordinator and its status check client
LAVA_COORDINATOR = Path("/usr/bin/lava-coordinator")
LAVA_PACKAGE_DIR = Path("/usr/lib/python3/dist-packages")
SYSTEM_PYTHON = Path("/usr/bin/python3")
Address = tuple[str, int]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 just now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def frame(text: str) -> bytes:
    """LAVA's framing of a request: 8 hex digits of length in characters, then UTF-8."""
    return b"%08X" % len(text) + text.encode("utf-8")


def exchange(
    address: Address, data: bytes, *, half_close: bool = True, timeout: float = 10.0
) -> bytes:
    """Send raw bytes on a new connection and return everything the server sent back."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def decode_reply(data: bytes) -> dict[str, Any]:
    """A framed reply: checks that the header is the body's length."""
    assert len(data) >= 8, f"short reply {data!r}"
    header, body = data[:8], data[8:].decode("utf-8")
    assert header == header.upper() and int(header, 16) == len(body), data
    reply = json.loads(body)
    assert isinstance(reply, dict)
    return reply


def call(address: Address, request: dict[str, Any], *, timeout: float = 10.0) -> dict[str, Any]:
    """One request, one connection, as LAVA's dispatcher does it."""
    return decode_reply(exchange(address, frame(json.dumps(request)), timeout=timeout))


@dataclass
class Node:
    """One member of a group, sending what LAVA's MultinodeProtocol sends."""

    address: Address
    group: str
    client: str
    role: str
    size: int
    secret: str | None = None

    def message(self, request: str, **fields: Any) -> dict[str, Any]:
        message = {
            "port": self.address[1],
            "blocksize": 4096,
            "poll_delay": 1,
            "host": self.address[0],
            "hostname": f"worker-{self.client}",
            "client_name": self.client,
            "group_name": self.group,
            "role": self.role,
            "request": request,
        }
        if request in ("group_data", "clear_group"):
            message["group_size"] = self.size
        message.update(fields)
        return signed(self.secret, message) if self.secret else message

    def call(self, request: str, *, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        return call(self.address, self.message(request, **fields), timeout=timeout)

    def poll(self, request: str, *, within: float = 10.0, **fields: Any) -> dict[str, Any]:
        """Ask until the answer is not ``wait``, the way LAVA's clients poll (quickly here)."""
        deadline = time.monotonic() + within
        while True:
            reply = self.call(request, **fields)
            if reply["response"] != "wait":
                return reply
            assert time.monotonic() < deadline, f"{request} {fields} still waiting after {within} s"
            time.sleep(0.01)


def group(address: Address, name: str, roles: dict[str, str], **options: Any) -> list[Node]:
    """Nodes for a group: client name -> role."""
    return [
        Node(address, name, client, role, len(roles), **options) for client, role in roles.items()
    ]


def form(nodes: list[Node]) -> dict[str, str]:
    """Every node asks for group_data once (joining), then polls until the group is whole."""
    for node in nodes:
        node.call("group_data")
    replies = [node.poll("group_data") for node in nodes]
    assert all(reply == replies[0] for reply in replies)
    assert replies[0]["response"] == "group_data"
    return dict(replies[0]["roles"])


class CoordinatorProcess:
    """``lava-dispatch coordinator`` in a child process, its log in a file."""

    def __init__(self, log: Path, *args: str, listen: str | None = "127.0.0.1:0") -> None:
        self.log_path = log
        self.args = [*(["--listen", listen] if listen else []), "--loglevel", "DEBUG", *args]
        self.process: subprocess.Popen[bytes] | None = None
        self.address: Address = ("127.0.0.1", 0)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "lava_dispatcher", "coordinator", *self.args]

    def start(self, timeout: float = 20.0) -> Address:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=ROOT,
                env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
            )
        start = self.log_path.stat().st_size if self.log_path.exists() else 0
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_path.read_bytes()[start:].decode("utf-8", "replace")
            for line in text.splitlines():
                if " listening on " in line:
                    host, _, port = line.split(" listening on ")[1].split()[0].rpartition(":")
                    self.address = (host, int(port))
                    return self.address
            if self.process.poll() is not None:
                raise AssertionError(
                    f"the coordinator exited {self.process.returncode}: {self.log()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"the coordinator did not listen in {timeout} s: {self.log()}")
            time.sleep(0.02)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def signal(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def lava_coordinator_missing() -> str:
    """Why LAVA's coordinator cannot run here ("" when it can)."""
    for path in (LAVA_COORDINATOR, LAVA_PACKAGE_DIR / "lava/coordinator/status.py", SYSTEM_PYTHON):
        if not path.exists():
            return f"LAVA's coordinator is not installed ({path} missing): apt-get install lava-coordinator"
    return ""


def require_lava_coordinator() -> None:
    """Skip the calling test when LAVA's coordinator is not installed (fail in CI)."""
    reason = lava_coordinator_missing()
    if reason:
        if os.environ.get("LAVA_TESTS_REQUIRE_QEMU"):  # set by .ci/run
            pytest.fail(f"{reason} (.ci/run requires the LAVA compatibility tests to run)")
        pytest.skip(reason)


class LavaCoordinatorProcess:
    """Debian's ``lava-coordinator`` on a chosen (default: free) port, for compatibility tests.

    It takes its port from a JSON config file (``--config``), binds 0.0.0.0 whatever the
    config says, logs to stdout with ``--logfile -``, and never exits when it cannot bind
    (it retries): ready is its "Ready to accept new connections" log line.
    """

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.config = directory / f"lava-coordinator-{self.port}.conf"
        self.log_path = directory / f"lava-coordinator-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> Address:
        settings = {"port": self.port, "blocksize": 4096, "poll_delay": 1}
        self.config.write_text(json.dumps({**settings, "coordinator_hostname": "127.0.0.1"}))
        command = [str(LAVA_COORDINATOR), "--config", str(self.config), "--logfile", "-"]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [*command, "--loglevel", "DEBUG"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while b"Ready to accept new connections" not in self.log_path.read_bytes():
            assert self.process.poll() is None, self.log()
            assert time.monotonic() < deadline, self.log()
            time.sleep(0.02)
        return ("127.0.0.1", self.port)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
