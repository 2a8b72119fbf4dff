"""Fixtures for the file-transfer tests: simulated DUTs on a pty, file servers.

Everything a test starts (sim daemons, consoles, file servers, threads,
sockets) is registered here and stopped at teardown, whether the test
passed or not.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lava_dispatcher.console import Console, SerialTransport, ShellSession, Transport
from lava_dispatcher.fileserver import FileServer
from lava_dispatcher.sim import SimServer
from lava_dispatcher.timing import Interrupter

# quick boots
FAST = {"boot_time": 0.02, "boot_lines": 4}
PROMPT = "root@sim:~# "


class TapTransport:
    """Wraps a transport: records what is written, and can damage it.

    ``damage(data)`` returns the bytes really sent (line noise on the way to
    the DUT). ``writes`` keeps every write as the console made it.
    """

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.writes: list[bytes] = []
        self.damage: Callable[[bytes], bytes] | None = None
        self.lock = threading.Lock()

    def read(self, max_bytes: int, timeout: float) -> bytes:
        return self.inner.read(max_bytes, timeout)

    def write(self, data: bytes) -> None:
        with self.lock:
            self.writes.append(data)
            damage = self.damage
        self.inner.write(damage(data) if damage is not None else data)

    def close(self) -> None:
        self.inner.close()

    @property
    def closed(self) -> bool:
        return self.inner.closed

    def describe(self) -> str:
        return "tap " + self.inner.describe()

    def cancel_read(self) -> None:
        cancel = getattr(self.inner, "cancel_read", None)
        if cancel is not None:
            cancel()

    def typed_lines(self) -> list[bytes]:
        with self.lock:
            data = b"".join(self.writes)
        return re.split(rb"\r?\n", data)


_BASE64_BODY = re.compile(rb"[A-Za-z0-9+/=\r\n_]+")
_NOISE = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=!#%&*?@^_~"


class DataNoise:
    """Line noise on the typed base64 data only: each data character is
    replaced, with probability ``rate``, by another printable one (seeded,
    so a test always damages the same characters of the same stream)."""

    def __init__(self, rate: float, seed: int) -> None:
        self.rate = rate
        self.random = random.Random(seed)
        self.damaged = 0

    def __call__(self, data: bytes) -> bytes:
        if not _BASE64_BODY.fullmatch(data):
            return data  # a command line: left alone
        out = bytearray(data)
        draw = self.random.random
        for index, byte in enumerate(out):
            if byte in b"\r\n_" or draw() >= self.rate:
                continue
            replacement = byte
            while replacement == byte:
                replacement = self.random.choice(_NOISE)
            out[index] = replacement
            self.damaged += 1
        return bytes(out)


@dataclass
class SimShell:
    """A powered simulated DUT at its shell prompt, with a console on its pty."""

    sim: SimServer
    console: Console
    shell: ShellSession
    tap: TapTransport
    lines: list[str] = field(default_factory=list)
    typed: list[str] = field(default_factory=list)


@pytest.fixture
def sim_shell(tmp_path: Path) -> Iterator[Callable[..., SimShell]]:
    """Start a simulated DUT (``sim serve`` on a pty, no login) and open a
    console + shell session on it; all are closed at teardown."""
    started: list[SimShell] = []
    sims: list[SimServer] = []

    def start(
        *,
        interrupter: Interrupter | None = None,
        char_delay: float = 0.0,
        **knobs: Any,
    ) -> SimShell:
        sim = SimServer(tmp_path / f"sim{len(sims)}", no_login=True, **{**FAST, **knobs})
        sims.append(sim)
        sim.start()
        sim.power_on()
        assert sim.pty is not None
        lines: list[str] = []
        typed: list[str] = []
        tap = TapTransport(SerialTransport(sim.pty))
        console = Console(
            tap,
            name="dut",
            on_line=lambda text, _ts: lines.append(text),
            on_input=typed.append,
            interrupter=interrupter,
        )
        shell = ShellSession(console, prompts=[re.escape(PROMPT)], char_delay=char_delay)
        item = SimShell(sim, console, shell, tap, lines, typed)
        started.append(item)
        console.start()
        # a prompt, even through a noisy line (a mangled one is asked again)
        shell.force_prompt(30)
        return item

    try:
        yield start
    finally:
        for item in started:
            with contextlib.suppress(Exception):
                item.console.close()
        for sim in sims:
            sim.stop()


@pytest.fixture
def file_server() -> Iterator[Callable[..., FileServer]]:
    """Start FileServers on loopback; each is stopped at teardown."""
    servers: list[FileServer] = []

    def start(**kwargs: Any) -> FileServer:
        server = FileServer(**kwargs)
        servers.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


def random_file(path: Path, size: int, seed: int = 0) -> Path:
    """A file of ``size`` pseudo-random bytes (written in pieces)."""
    rng = random.Random(seed)
    with open(path, "wb") as out:
        left = size
        while left:
            piece = min(left, 1 << 20)
            out.write(rng.randbytes(piece))
            left -= piece
    return path


def tool_dir(path: Path, tools: list[str]) -> Path:
    """A directory of symlinks to the host's copies of ``tools`` (a PATH for a
    DUT that has only those)."""
    import shutil

    path.mkdir(parents=True, exist_ok=True)
    for tool in tools:
        found = shutil.which(tool)
        if found is None:
            pytest.skip(f"{tool} is not installed on this host")
        os.symlink(found, path / tool)
    return path
