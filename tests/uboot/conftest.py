"""Fixtures for the U-Boot board (QEMU arm64 + Debian's u-boot-qemu, see README.md).

* `uboot_board` (per test): a board set up but powered off: a free loopback
  port for its serial console, a state directory with board.json, a TFTP root
  (QEMU's user-net TFTP server, 10.0.2.2 from the guest), and its power and
  connect commands as a LAVA device dictionary holds them. Whatever the test
  did, the board is powered off at teardown and its QEMU is checked gone.
* `uboot_images` (session): the Debian arm64 kernel, a busybox initramfs
  (tests/qemu/images.py) and that initramfs with a U-Boot legacy header
  (mkimage -A arm64 -T ramdisk -C none).

Skipped with the reason when qemu-system-aarch64, u-boot.bin, mkimage,
telnet or the Debian arm64 kernel and busybox are missing; failed instead
when LAVA_TESTS_REQUIRE_QEMU is set (.ci/run). .ci/qemu-images installs it all.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pexpect
import pytest

# tests/qemu/images.py, as pytest imports it (tests/, without an __init__.py,
# is on sys.path: the packages below it are top-level ones)
from qemu import images

from . import board as board_module

HERE = Path(__file__).resolve().parent
BOARD = HERE / "board.py"
TEMPLATE = HERE / "device-template.yaml"
UBOOT_BIN = Path(board_module.DEFAULT_BIOS)
QEMU = board_module.DEFAULT_QEMU
SCRIPT = ".ci/qemu-images"

# Deadlines: generous multiples of what it takes under TCG on 2 cores
# (LAVA_QEMU_TIMEOUT_FACTOR scales them, as for tests/qemu).
FACTOR = float(os.environ.get("LAVA_QEMU_TIMEOUT_FACTOR", "1"))
STEP_DEADLINE = 30 * FACTOR  # one U-Boot command (a 33 MB tftp takes ~2 s)
BOOT_DEADLINE = 60 * FACTOR  # booti to the busybox shell (~2 s)

# What this U-Boot build prints (measured; see README.md)
UBOOT_BANNER = "U-Boot 2023.01"
AUTOBOOT_PROMPT = "Hit any key to stop autoboot"
UBOOT_PROMPT = "=> "
PROMPT_LINE = "\n" + UBOOT_PROMPT  # the prompt where it is one (see Console.command)


def unavailable() -> str:
    """Why the board cannot run here ("" when it can)."""
    hint = f"(run {SCRIPT} as root)"
    if shutil.which(QEMU) is None:
        return f"{QEMU} is not installed {hint}"
    if not UBOOT_BIN.is_file():
        return f"no U-Boot at {UBOOT_BIN}: u-boot-qemu is not installed {hint}"
    if shutil.which("mkimage") is None:
        return f"mkimage is not installed: u-boot-tools {hint}"
    if shutil.which("telnet") is None:
        return "telnet is not installed (run .ci/setup as root)"
    return images.available("arm64")


def require() -> None:
    """Skip the calling test when the board cannot run here (fail in CI)."""
    reason = unavailable()
    if reason:
        if os.environ.get("LAVA_TESTS_REQUIRE_QEMU"):  # set by .ci/run
            pytest.fail(f"{reason} (.ci/run requires the QEMU tests to run)")
        pytest.skip(reason)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 just now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _command(action: str, state: Path) -> str:
    return shlex.join([sys.executable, str(BOARD), action, "--state", str(state)])


@dataclass
class UBootBoard:
    """One board: its state directory, console port, TFTP root and commands."""

    port: int
    state: Path
    tftp_root: Path
    power_on_cmd: str = ""
    power_off_cmd: str = ""
    reset_cmd: str = ""
    status_cmd: str = ""
    connect_cmd: str = ""
    consoles: list[Console] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.power_on_cmd = self.power_on_cmd or _command("on", self.state)
        self.power_off_cmd = self.power_off_cmd or _command("off", self.state)
        self.reset_cmd = self.reset_cmd or _command("reset", self.state)
        self.status_cmd = self.status_cmd or _command("status", self.state)
        self.connect_cmd = self.connect_cmd or f"telnet 127.0.0.1 {self.port}"

    def run(self, command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a power command as the dispatcher does: split like a shell, no shell."""
        result = subprocess.run(
            shlex.split(command), capture_output=True, text=True, timeout=60 * FACTOR, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{command} exited {result.returncode}: {result.stdout}{result.stderr}"
            )
        return result

    def power_on(self) -> None:
        self.run(self.power_on_cmd)

    def power_off(self) -> None:
        self.run(self.power_off_cmd)

    def reset(self) -> None:
        self.run(self.reset_cmd)

    def pid(self) -> int | None:
        """The pid in qemu.pid (written by `on`), whether it still runs or not."""
        try:
            return int((self.state / board_module.PIDFILE).read_text())
        except (OSError, ValueError):
            return None

    def connect(self) -> Console:
        """Open the console with the connect command (closed at teardown)."""
        console = Console(self.connect_cmd, self.state / f"console-{len(self.consoles)}.log")
        self.consoles.append(console)
        return console

    def dumpdtb(self, dest: Path) -> Path:
        """The board's device tree as QEMU generates it (what a LAVA job deploys)."""
        self.run(shlex.join([sys.executable, str(BOARD), "dumpdtb", str(dest), "--state",
                             str(self.state)]))  # fmt: skip
        return dest

    def device_yaml(self, template: Path = TEMPLATE) -> str:
        """device-template.yaml with this board's values: {port}, {power_on},
        {power_off}, {reset}, {state} are replaced as text (see
        `render_device`; LAVA's own placeholders such as {KERNEL_ADDR} stay
        for the dispatcher)."""
        return render_device(template.read_text(), self)


def render_device(text: str, board: UBootBoard) -> str:
    """`text` with the board's values: {port} becomes the port number, the
    others YAML double-quoted strings (JSON strings are), so that any path
    (spaces, quotes, colons) stays one valid scalar."""
    values = {
        "{port}": str(board.port),
        "{power_on}": json.dumps(board.power_on_cmd),
        "{power_off}": json.dumps(board.power_off_cmd),
        "{reset}": json.dumps(board.reset_cmd),
        "{state}": json.dumps(str(board.state)),
    }
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    return text


def make_board(base: Path, port: int | None = None, **config: object) -> UBootBoard:
    """A board under `base` (state/, tftp/ and board.json), not powered on.
    `config` adds to board.json (bios, qemu, memory: see board.py)."""
    state = base / "state"
    tftp_root = base / "tftp"
    state.mkdir(parents=True, exist_ok=True)
    tftp_root.mkdir(parents=True, exist_ok=True)
    board = UBootBoard(port=port or free_port(), state=state, tftp_root=tftp_root)
    settings = {"port": board.port, "tftp_root": str(tftp_root), **config}
    (state / board_module.CONFIG).write_text(json.dumps(settings, indent=2) + "\n")
    return board


def _gone(pid: int) -> bool:
    """Whether `pid` has ended (a zombie has ended)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return any(
        line.split()[1:2] == ["Z"] for line in status.splitlines() if line.startswith("State:")
    )


@pytest.fixture
def uboot_board(tmp_path: Path) -> Iterator[UBootBoard]:
    require()
    board = make_board(tmp_path)
    try:
        yield board
    finally:
        for console in board.consoles:
            console.close()
        pid = board.pid()
        off = board.run(board.power_off_cmd, check=False)
        if pid is not None and not _gone(pid) and board_module.Board(board.state).is_ours(pid):
            # `off` failed to end it: end it here, by its pid only
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        log = board.state / board_module.LOG
        if log.is_file():
            print(f"--- {log}:\n{log.read_text(errors='replace')[-2000:]}")
        for console in board.consoles:
            print(f"--- console {console.log_path} (last 3000 chars):\n{console.text()[-3000:]}")
        assert off.returncode == 0, f"power off failed: {off.stdout}{off.stderr}"


@pytest.fixture
def uboot_lab_board(tmp_path: Path) -> Iterator[UBootBoard]:
    """A board in lab mode (see board.py): its QEMU started, paused and
    powered off, its console port listening as a ser2net port does, before
    the test connects; the QEMU ended by its pid at teardown."""
    require()
    board = make_board(tmp_path, lab=True)
    start = board.run(_command("start", board.state))
    assert "pid" in start.stdout, start.stdout
    pid = board.pid()
    try:
        yield board
    finally:
        for console in board.consoles:
            console.close()
        stop = board.run(_command("stop", board.state), check=False)
        if pid is not None and not _gone(pid) and board_module.Board(board.state).is_ours(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        log = board.state / board_module.LOG
        if log.is_file():
            print(f"--- {log}:\n{log.read_text(errors='replace')[-2000:]}")
        assert stop.returncode == 0, f"stopping the board failed: {stop.stdout}{stop.stderr}"


@dataclass(frozen=True)
class UBootImages:
    kernel: Path  # the Debian arm64 kernel (a raw Image)
    initramfs: Path  # busybox, cpio.gz (no login: a root shell on the console)
    initramfs_uimage: Path  # the same behind a legacy U-Boot header


@pytest.fixture(scope="session")
def uboot_images(tmp_path_factory: pytest.TempPathFactory) -> UBootImages:
    require()
    directory = tmp_path_factory.mktemp("uboot-images")
    initramfs = images.build_initramfs(directory / "initramfs.cpio.gz", "arm64", login=False)
    wrapped = directory / "initramfs.uimg"
    subprocess.run(
        ["mkimage", "-A", "arm64", "-O", "linux", "-T", "ramdisk", "-C", "none",
         "-n", "lava-qemu initramfs", "-d", str(initramfs), str(wrapped)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return UBootImages(images.kernel("arm64").resolve(), initramfs, wrapped)


class Console:
    """The board's console through its connect command (telnet) under pexpect."""

    def __init__(self, command: str, log_path: Path) -> None:
        argv = shlex.split(command)
        self.log_path = log_path
        self.log = open(log_path, "w", encoding="utf-8", errors="replace")  # noqa: SIM115
        self.child = pexpect.spawn(
            argv[0], argv[1:], encoding="utf-8", codec_errors="replace",
            timeout=STEP_DEADLINE, dimensions=(24, 200),
        )  # fmt: skip
        self.child.logfile_read = self.log
        self.started = time.monotonic()

    def expect(self, text: str, timeout: float = STEP_DEADLINE) -> str:
        """Wait for `text` (exactly); what came before it."""
        self.child.expect_exact(text, timeout=timeout)
        return str(self.child.before)

    def expect_any(self, texts: list[str], timeout: float = STEP_DEADLINE) -> int:
        """Wait for the first of `texts`; its index."""
        return int(self.child.expect_exact(texts, timeout=timeout))

    def sendline(self, line: str = "") -> None:
        self.child.sendline(line)

    def command(self, line: str, timeout: float = STEP_DEADLINE, prompt: str = PROMPT_LINE) -> str:
        """Type `line` at the prompt; its output (echo removed, \\n line ends)
        once the prompt is back. The U-Boot prompt is matched at the start of
        a line: "=> " alone also matches crc32's "... ==> 1234abcd"."""
        self.child.sendline(line)
        self.child.expect_exact(prompt, timeout=timeout)
        # busybox ash asks the terminal for the cursor position after its prompt
        output = str(self.child.before).replace("\r", "").replace("\x1b[6n", "")
        lines = output.split("\n")
        if lines and lines[0].strip() == line.strip():
            lines = lines[1:]
        return "\n".join(lines).strip("\n")

    def wait_eof(self, timeout: float = STEP_DEADLINE) -> str:
        self.child.expect(pexpect.EOF, timeout=timeout)
        return str(self.child.before)

    def text(self) -> str:
        with contextlib.suppress(OSError, ValueError):
            self.log.flush()
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        with contextlib.suppress(OSError, pexpect.ExceptionPexpect):
            self.child.close(force=True)
        with contextlib.suppress(OSError, ValueError):
            self.log.flush()
            self.log.close()
