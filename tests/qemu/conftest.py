"""Fixtures for the real-Linux tests.

* `qemu_images` (session): per arch, the Debian kernel, a busybox initramfs
  built for this session, and why the arch cannot be booted here ("" if it
  can). Nothing is downloaded or installed here: .ci/qemu-images does that.
* `qemu_spawn` (per test): QEMU under pexpect (an argv list, no shell);
  every QEMU it started is killed by pid and reaped at teardown, whatever
  the test did, and the end of its console output is printed (shown when
  the test fails).
* `image_server` (session): a quiet HTTP server on 127.0.0.1 serving a
  temporary directory, counting the requests it receives per path.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import os
import select
import shutil
import signal
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pexpect
import pytest

from . import images

# Deadlines are generous multiples of what a boot takes under TCG (seconds);
# LAVA_QEMU_TIMEOUT_FACTOR scales them on slow machines.
FACTOR = float(os.environ.get("LAVA_QEMU_TIMEOUT_FACTOR", "1"))
BOOT_DEADLINE = 180 * FACTOR  # spawn to a shell prompt
STEP_DEADLINE = 60 * FACTOR  # one command, or power-off to QEMU's exit


@dataclass(frozen=True)
class QemuImage:
    """What boots one arch: kernel + initramfs, or why it cannot here."""

    arch: str
    reason: str  # "" when it can boot here
    kernel: Path
    initramfs: Path | None

    def require(self) -> QemuImage:
        """Skip the calling test when this arch cannot be booted here."""
        if self.reason:
            if os.environ.get("LAVA_TESTS_REQUIRE_QEMU"):  # set by .ci/run
                pytest.fail(f"{self.reason} (.ci/run requires the QEMU tests to run)")
            pytest.skip(self.reason)
        return self

    def command(
        self, initramfs: Path | None = None, append: str = "", extra: Sequence[str] = ()
    ) -> list[str]:
        """The QEMU argv booting the kernel with `initramfs` (default: this
        session's); see images.boot_command."""
        ramdisk = initramfs or self.initramfs
        if ramdisk is None:
            raise RuntimeError(f"{self.arch}: no initramfs ({self.reason})")
        return images.boot_command(self.arch, ramdisk, append, extra)


class QemuImages:
    """The session's images, per arch; initramfs images are built on first use."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._images: dict[str, QemuImage] = {}
        self._lock = threading.Lock()

    def available(self, arch: str) -> str:
        return images.available(arch)

    def __getitem__(self, arch: str) -> QemuImage:
        name = images.arch_info(arch).name
        with self._lock:
            if name not in self._images:
                reason = images.available(name)
                initramfs = None
                if not reason:
                    initramfs = images.build_initramfs(self.directory / f"{name}.cpio.gz", name)
                self._images[name] = QemuImage(name, reason, images.kernel(name), initramfs)
            return self._images[name]

    def require(self, arch: str) -> QemuImage:
        """The arch's images, or skip the test with the reason it cannot boot."""
        return self[arch].require()

    def build(self, arch: str, name: str, **kwargs: Any) -> Path:
        """Another initramfs for `arch` (images.build_initramfs keywords: init,
        login, compression, console_loglevel), kept for the session as `name`."""
        self.require(arch)
        return images.build_initramfs(self.directory / f"{arch}-{name}", arch, **kwargs)


@pytest.fixture(scope="session")
def qemu_images(tmp_path_factory: pytest.TempPathFactory) -> QemuImages:
    return QemuImages(tmp_path_factory.mktemp("qemu-images"))


class QemuProcess:
    """One QEMU under pexpect, with the times at which patterns were seen."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.argv = argv
        self.log_path = log
        self.log = io.StringIO()
        self.started = time.monotonic()
        self.child = pexpect.spawn(
            argv[0], argv[1:], encoding="utf-8", codec_errors="replace",
            timeout=STEP_DEADLINE, dimensions=(24, 200), env=_child_env(),
        )  # fmt: skip
        self.child.logfile_read = self.log
        self.times: dict[str, float] = {}

    @property
    def pid(self) -> int:
        return int(self.child.pid)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def expect(
        self, text: str, timeout: float = STEP_DEADLINE, *, name: str | None = None
    ) -> float:
        """Wait for `text` (exactly) on the console; the seconds since spawn."""
        self.child.expect_exact(text, timeout=timeout)
        seen = self.elapsed()
        self.times.setdefault(name or text, seen)
        return seen

    def run(self, command: str, timeout: float = STEP_DEADLINE) -> str:
        """Type `command` at the shell prompt; what it printed (echo and
        terminal queries removed) once the prompt is back."""
        self.child.sendline(command)
        self.child.expect_exact(images.PROMPT, timeout=timeout)
        output = (self.child.before or "").replace("\x1b[6n", "").replace("\r", "")
        lines = output.split("\n")
        if lines and lines[0].strip() == command.strip():
            lines = lines[1:]
        return "\n".join(lines).strip("\n")

    def wait_exit(self, timeout: float = STEP_DEADLINE) -> int | None:
        """Wait for QEMU to end by itself: its console closes, then the
        process exits. Its exit status; pexpect.TIMEOUT past the deadline."""
        self.child.expect(pexpect.EOF, timeout=timeout)
        if not _wait_exit(self.pid, timeout):
            raise pexpect.TIMEOUT(f"QEMU (pid {self.pid}) still runs {timeout} s after its EOF")
        self.child.wait()  # reap it
        self.times.setdefault("exit", self.elapsed())
        return self.child.exitstatus

    def stop(self) -> None:
        """Kill QEMU by its pid if it still runs (SIGTERM, then SIGKILL), and reap it."""
        child = self.child
        try:
            if child.isalive():
                for sig in (signal.SIGTERM, signal.SIGKILL):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.pid, sig)
                    if _wait_exit(self.pid, 10):
                        break
            with contextlib.suppress(pexpect.ExceptionPexpect, ChildProcessError):
                child.wait()
        finally:
            with contextlib.suppress(OSError, pexpect.ExceptionPexpect):
                child.close(force=True)
            with contextlib.suppress(OSError):
                self.log_path.write_text(self.log.getvalue())


def _wait_exit(pid: int, timeout: float) -> bool:
    """Wait until process `pid` (our child) has ended, without reaping it;
    False if it still runs after `timeout` seconds."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True  # already reaped
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TERM", "vt100")
    return env


@pytest.fixture
def qemu_spawn(tmp_path: Path) -> Iterator[Any]:
    """start(argv) -> QemuProcess; all are stopped (by pid) and reaped at teardown."""
    started: list[QemuProcess] = []

    def start(argv: list[str]) -> QemuProcess:
        process = QemuProcess(argv, tmp_path / f"console-{len(started)}.log")
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
        text = process.log.getvalue()
        print(f"--- console of {' '.join(process.argv)} (pid {process.pid}), last 4000 chars:")
        print(text[-4000:])


# -- the HTTP server -------------------------------------------------------------------


class ImageServer:
    """A directory served on 127.0.0.1; `requests` counts what it was asked."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(root), **kwargs)

            def _count(self) -> None:
                path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
                with server._lock:
                    server.counts[path.lstrip("/")] += 1

            def do_GET(self) -> None:
                self._count()
                super().do_GET()

            def do_HEAD(self) -> None:
                self._count()
                super().do_HEAD()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="image-server", daemon=True
        )
        self._thread.start()

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}/{urllib.parse.quote(path.lstrip('/'))}"

    def publish(self, file: str | os.PathLike[str], name: str | None = None) -> str:
        """Put `file` in the served directory (a hard link, else a copy) as
        `name` (default: its own name); its URL."""
        source = Path(file)
        relative = name or source.name
        target = self.root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
        return self.url(relative)

    def requests(self, path: str | None = None) -> int:
        """Requests received for `path` (as published), or in all."""
        with self._lock:
            if path is None:
                return sum(self.counts.values())
            return self.counts[path.lstrip("/")]

    def reset(self) -> None:
        """Forget the counts (between jobs of one test)."""
        with self._lock:
            self.counts.clear()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=10)


@pytest.fixture(scope="session")
def image_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImageServer]:
    server = ImageServer(tmp_path_factory.mktemp("image-server"))
    try:
        yield server
    finally:
        server.close()
