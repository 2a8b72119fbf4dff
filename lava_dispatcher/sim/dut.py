"""The simulated board: a small state machine of boot stages.

    off -> [bootloader] -> kernel -> login -> shell
                             |        |        |
                             +--------+--------+--> dead (panic or hang)

`SimDUT` owns exactly one `StageHandler` at a time. A stage reacts to console
input (`input`), to its own deadlines (timers it starts through `call_at` /
`call_later`, cancelled when it is left) and to output draining
(`drained`), and moves the board on by calling one of the DUT's transition
methods (`start_kernel`, `start_userspace`, `start_shell`, `panic`, `hang`).
Power off leaves whatever stage is current, which kills the shell.

Bootloader hook: `SimDUT(..., bootloader=factory)` makes power-on (and
every reboot or reset) enter the stage `factory(dut)` returns (its `stage`
should be `Stage.BOOTLOADER`) instead of going straight to the kernel. Such
a stage prints its banner and countdown from `enter()`, reads keys in
`input()`, and boots with `dut.boot_linux(ramdisk=..., cmdline=...)` (or
`dut.start_kernel()`, the configured boot). A ramdisk handed over that way is
the board's initramfs for that boot only, in place of --ramdisk or a flashed
one; the next power-on, reset or reboot forgets it. `dut.warm_reset()`
restarts the board from the bootloader without a power cut, `dut.enter()`
switches to a stage of the bootloader's own. `uboot` is the built-in one
(`--bootloader u-boot`).

The shell is a real program (`/bin/sh -i` by default) started in a pty the
simulator owns, in a session of its own; its terminal echo and output are
relayed to the console. By default it runs on the host with the rights of
the user who started the simulator. Power commands never reach the host: a
typed ``reboot``/``poweroff``/``halt``/``shutdown`` line is taken off the
input path, and the shell's PATH starts with shims of those commands (for
scripts that call them); either way the simulated board reboots or powers
off.

Root file system (``--rootfs DIR``, ``--ramdisk FILE`` or a flashed ramdisk):
power-on first checks that the host can create the namespaces (`BoardError`
otherwise); the kernel stage unpacks the ramdisk into a fresh directory
(deleted at power-off and at every reboot, which unpacks it again) or takes
DIR, and panics if that fails or there is no shell in it; the shell stage
runs the shell as PID 1 of new namespaces chrooted there (see `namespace`),
with the shims inside the root and /dev/kmsg lines printed as kernel
messages. A box whose init was ended by reboot(2) (killed by SIGHUP or
SIGINT) reboots or powers off the board. Cursor-position queries the shell's
line editor sends (busybox ash) are swallowed, as the console does not
answer them.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import math
import os
import pty
import select
import shlex
import shutil
import signal
import struct
import tempfile
import termios
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lava_dispatcher.ramdisk import RamdiskError
from lava_dispatcher.sim import namespace, text
from lava_dispatcher.sim.config import SimConfig
from lava_dispatcher.sim.line import HIGH_WATER, LOW_WATER, SerialLine
from lava_dispatcher.sim.loop import EventLoop, Timer
from lava_dispatcher.sim.namespace import (
    INIT_FAILED,
    NO_INIT,
    POWER_MARK,
    POWER_WORDS,
    SHIM,
    BoardError,
    BootRoot,
    host_processes,
    write_shims,
)

__all__ = ["POWER_MARK", "POWER_WORDS", "SHIM", "BoardError", "SimDUT", "Stage", "StageHandler"]

CR, LF, NUL, BS, DEL, CTRL_C, CTRL_U = 13, 10, 0, 8, 127, 3, 21
CRLF = b"\r\n"
READ_SIZE = 65536
# How long a --panic-on panic waits for the terminal to echo the fatal
# command line before the panic text is printed.
ECHO_GRACE = 0.1
# A shell in a box ended: how long to wait for its exit status.
BOX_EXIT_WAIT = 1.0
# Terminal queries a line-editing shell (busybox ash) sends after its prompt;
# the simulated console swallows them, as it does not answer them.
TERMINAL_QUERIES = (b"\x1b[6n",)
EXIT_SIGNALS: dict[int, str] = {signal.SIGHUP: "reboot", signal.SIGINT: "poweroff"}
RAMDISK_PANIC = "VFS: Unable to mount root fs on unknown-block(0,0)"
KERNEL_COMMAND_LINE = "Kernel command line: "


def power_action(line: bytes) -> str | None:
    """'reboot' or 'poweroff' if a typed command line asks for one."""
    try:
        words = shlex.split(line.decode("utf-8", "replace"))
    except ValueError:
        words = line.decode("utf-8", "replace").split()
    while words and words[0] in ("sudo", "exec", "command"):
        words.pop(0)
    if not words:
        return None
    word = os.path.basename(words[0])
    if word == "reboot" or (word == "shutdown" and "-r" in words[1:]):
        return "reboot"
    if word in POWER_WORDS:
        return "poweroff"
    return None


def make_shims() -> str:
    """A directory of power-command shims for the shell's PATH."""
    directory = tempfile.mkdtemp(prefix="lava-sim-shims-")
    write_shims(directory)
    return directory


class Stage(enum.Enum):
    OFF = "off"
    BOOTLOADER = "bootloader"
    KERNEL = "kernel"
    LOGIN = "login"
    SHELL = "shell"
    DEAD = "dead"


class StageHandler:
    """One stage of the board's life (see the module docstring)."""

    stage: Stage = Stage.OFF

    def __init__(self, dut: SimDUT) -> None:
        self.dut = dut
        self.loop = dut.loop
        self.config = dut.config
        self.active = False
        self._timers: list[Timer] = []

    def enter(self) -> None:
        """The board has just entered this stage."""

    def leave(self) -> None:
        """The board leaves this stage (to another one or to power off)."""
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    def input(self, data: bytes) -> None:
        """Bytes typed on the console. The default ignores them."""

    def drained(self) -> None:
        """The console has taken most of the pending output."""

    def status(self) -> dict[str, Any]:
        return {}

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        def guarded() -> None:
            if self.active:
                callback()

        timer = self.loop.call_at(when, guarded)
        self._timers = [t for t in self._timers if not t.cancelled]
        self._timers.append(timer)
        return timer

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return self.call_at(self.loop.time() + delay, callback)

    def emit(self, data: bytes) -> None:
        self.dut.emit(data)


class OffStage(StageHandler):
    stage = Stage.OFF


class DeadStage(StageHandler):
    """Panicked or hung: silent, deaf, until power is cut."""

    stage = Stage.DEAD

    def __init__(self, dut: SimDUT, reason: str) -> None:
        super().__init__(dut)
        self.reason = reason

    def status(self) -> dict[str, Any]:
        return {"reason": self.reason}


class KernelStage(StageHandler):
    """Prints the kernel log, spread over --boot-time, then starts userspace."""

    stage = Stage.KERNEL

    def enter(self) -> None:
        self.lines = text.kernel_lines(
            self.config.boot_lines, self.config.baud, initramfs=bool(self.dut.booted_ramdisk)
        )
        if self.dut.boot_args is not None:
            # the bootloader's bootargs
            self.lines = [
                f"{KERNEL_COMMAND_LINE}{self.dut.boot_args}"
                if line.startswith(KERNEL_COMMAND_LINE)
                else line
                for line in self.lines
            ]
        if self.dut.root_mode:
            # unpack the initramfs (or take the root directory) now
            extra = self.dut.prepare_root()
            last = [self.lines.pop()] if len(self.lines) > 1 else []
            if self.dut.root_failure == RAMDISK_PANIC:
                last = []  # no root: init is never run
            self.lines += extra + last
        self.index = 0
        self.start = self.loop.time()
        self.hang_after = max(1, len(self.lines) // 2) if self.config.hang_at == "boot" else None
        self._schedule()

    def _offset(self, index: int) -> float:
        return self.config.boot_time * index / max(len(self.lines) - 1, 1)

    def _schedule(self) -> None:
        self.call_at(self.start + self._offset(self.index), self._next_lines)

    def _next_lines(self) -> None:
        now = self.loop.time()
        while self.index < len(self.lines) and self.start + self._offset(self.index) <= now:
            stamp = text.timestamp(self._offset(self.index))
            self.emit(f"{stamp} {self.lines[self.index]}".encode() + CRLF)
            self.index += 1
            if self.hang_after is not None and self.index >= self.hang_after:
                self.dut.hang("boot")
                return
        if self.index >= len(self.lines):
            if self.dut.root_failure is not None:
                self.dut.panic(self.dut.root_failure)
            else:
                self.dut.start_userspace()
        else:
            self._schedule()


class LoginStage(StageHandler):
    """A getty and login: banner, login prompt, optional password."""

    stage = Stage.LOGIN

    def enter(self) -> None:
        self._after_cr = False
        self.user = ""
        self.emit(CRLF + text.getty_banner(self.config.hostname).encode() + CRLF + CRLF)
        self._prompt()

    def _prompt(self) -> None:
        self.field = "user"
        self.typed = bytearray()
        self.emit(self.config.effective_login_prompt.encode())
        if self.config.hang_at == "login":
            self.dut.hang("login")

    def input(self, data: bytes) -> None:
        for i, byte in enumerate(data):
            if not self.active:
                # logged in: what was typed ahead goes to the shell
                rest = data[i:]
                if self._after_cr and rest[:1] in (b"\n", b"\0"):
                    rest = rest[1:]
                if rest:
                    self.dut.input(rest)
                return
            if self._after_cr and byte in (LF, NUL):
                self._after_cr = False
                continue
            self._after_cr = byte == CR
            echo = self.field == "user"
            if byte in (CR, LF):
                self._enter()
            elif byte in (BS, DEL):
                if self.typed:
                    self.typed.pop()
                    if echo:
                        self.emit(b"\b \b")
            elif byte == CTRL_U:
                if echo:
                    self.emit(b"\b \b" * len(self.typed))
                self.typed.clear()
            elif byte >= 0x20:
                self.typed.append(byte)
                if echo:
                    self.emit(bytes((byte,)))

    def _enter(self) -> None:
        self.emit(CRLF)
        typed = self.typed.decode(errors="replace")
        if self.field == "user":
            if not typed:
                self._prompt()
                return
            self.user = typed
            if self.config.password is None and typed == self.config.username:
                self._logged_in()
                return
            self.field = "password"
            self.typed = bytearray()
            self.emit(b"Password: ")
            return
        if (
            self.config.password is not None
            and self.user == self.config.username
            and typed == self.config.password
        ):
            self._logged_in()
            return
        self.emit(CRLF + b"Login incorrect" + CRLF)
        self._prompt()

    def _logged_in(self) -> None:
        self.emit(CRLF.join(line.encode() for line in text.motd(self.config.hostname)) + CRLF)
        self.dut.start_shell()


class ShellStage(StageHandler):
    """A real shell in a pty, relayed to the console, with the shell-time faults."""

    stage = Stage.SHELL

    def enter(self) -> None:
        self.pid: int | None = None
        self.fd: int | None = None
        self.pidfd: int | None = None
        self.reading = False
        self.to_shell = bytearray()
        self.writing = False
        self.typed = bytearray()
        self.panicking = False
        self.echo_wanted = b""
        self.recent = b""
        self.hang_pending = self.config.hang_at == "shell"
        self.prompt = self.config.effective_prompt.encode()
        self.burst_next = 0
        self.burst_count = 0
        self.burst_width = 6
        self.bursting = False
        self.pumping = False
        self.shims: str | None = None
        self.runtime: namespace.Runtime | None = None
        self.kmsg: namespace.KmsgTail | None = None
        root = self.dut.root
        if root is None:
            self.shims = make_shims()
            self.pid, self.fd = spawn_shell(self.config, path_prefix=self.shims)
        else:
            try:
                self._start_box(root)
            except OSError as exc:
                self.emit(f"sim: cannot start the shell in {root.path}: {exc}".encode() + CRLF)
                self.dut.panic(NO_INIT)
                return
        assert self.pid is not None
        with contextlib.suppress(OSError, AttributeError):
            self.pidfd = os.pidfd_open(self.pid)
            self.loop.add_reader(self.pidfd, self._shell_exited)
        self._resume()
        if self.config.panic_after is not None:
            self.call_later(self.config.panic_after, self._panic_after)
        if self.config.burst_mb is not None:
            self.call_later(self.config.burst_after, self._start_burst)

    def _start_box(self, root: BootRoot) -> None:
        """The shell as PID 1 of new namespaces, chrooted into the board's root."""
        self.runtime = namespace.Runtime()
        self.kmsg = namespace.KmsgTail(self.loop, self.runtime.kmsg, self.dut.kernel_message)
        inside = namespace.find_shell(root.path, self.config.shell) or self.config.shell
        argv, env = namespace.box_command(
            root.path,
            self.runtime,
            shell_argv(inside),
            hostname=self.config.hostname,
            env=box_env(self.config),
        )
        self.pid, self.fd = spawn_process(argv[0], argv, env, wide=True)

    def status(self) -> dict[str, Any]:
        return {"shell_pid": self.pid}

    # -- output: shell -> console ------------------------------------------

    def _resume(self) -> None:
        if not self.reading and self.fd is not None and not self.bursting:
            self.reading = True
            self.loop.add_reader(self.fd, self._readable)

    def _pause(self) -> None:
        if self.reading and self.fd is not None:
            self.reading = False
            self.loop.remove_reader(self.fd)

    def _read(self) -> bytes | None:
        """Bytes from the shell's pty; b'' at end, None when none are ready."""
        assert self.fd is not None
        try:
            return os.read(self.fd, READ_SIZE)
        except BlockingIOError:
            return None
        except OSError:  # EIO: every process holding the pty is gone
            return b""

    def _readable(self) -> None:
        data = self._read()
        if data is None:
            return
        if not data:
            self._shell_exited()
            return
        self._relay(data)
        if self.active and self.dut.line.backlog() >= HIGH_WATER:
            self._pause()

    def _relay(self, data: bytes) -> None:
        if self.runtime is not None:
            for query in TERMINAL_QUERIES:
                data = data.replace(query, b"")
        if POWER_MARK in self.recent[-64:] + data:
            data = self._power_request(data)
            if not self.active:
                return
        if self.hang_pending:
            window = self.recent[-len(self.prompt) :] + data
            found = window.find(self.prompt)
            if found >= 0:
                cut = found + len(self.prompt) - (len(window) - len(data))
                self.emit(data[:cut])
                self.dut.hang("shell")
                return
        self.emit(data)
        self.recent = (self.recent + data)[-256:]
        if self.panicking and self.echo_wanted in self.recent:
            self._panic_now()

    def drained(self) -> None:
        if self.bursting:
            self._pump_burst()
        elif self.dut.line.backlog() < LOW_WATER:
            self._resume()

    # -- input: console -> shell -------------------------------------------

    def input(self, data: bytes) -> None:
        if self.panicking or self.fd is None:
            return
        word = self.config.panic_on
        trigger = word.encode() if word else None
        for i, byte in enumerate(data):
            if byte in (CR, LF):
                if trigger is not None and trigger in self.typed:
                    self._to_shell(data[:i])
                    self._panic_on_word()
                    return
                action = power_action(bytes(self.typed))
                if action is not None:
                    # the line never reaches the host shell: erase it (^U)
                    self._to_shell(data[:i] + bytes([CTRL_U]))
                    self.emit(CRLF)
                    self._power(action)
                    return
                self.typed.clear()
            elif byte in (BS, DEL):
                if self.typed:
                    self.typed.pop()
            elif byte in (CTRL_C, CTRL_U):
                self.typed.clear()
            else:
                self.typed.append(byte)
        del self.typed[:-4096]
        self._to_shell(data)

    def _power_request(self, data: bytes) -> bytes:
        """A shim asked for a reboot or power-off: strip its mark and do it."""
        window = self.recent[-64:] + data
        start = window.find(POWER_MARK)
        end = window.find(b"\x07", start)
        if end < 0:
            return data  # the rest of the mark is still coming
        action = window[start + len(POWER_MARK) : end].decode("ascii", "replace")
        keep = len(window) - len(data)
        before = window[keep:start] if start >= keep else b""
        self.emit(before)
        self._power(action if action in ("reboot", INIT_FAILED) else "poweroff")
        return b""

    def _power(self, action: str) -> None:
        if action == "reboot":
            self.dut.soft_reboot()
        elif action == INIT_FAILED:
            self.dut.panic(NO_INIT)
        else:
            self.dut.soft_poweroff()

    def _to_shell(self, data: bytes) -> None:
        if not data or self.fd is None:
            return
        if not self.to_shell:
            try:
                sent = os.write(self.fd, data)
            except BlockingIOError:
                sent = 0
            except OSError:
                return
            data = data[sent:]
            if not data:
                return
        self.to_shell += data
        if not self.writing:
            self.writing = True
            self.loop.add_writer(self.fd, self._writable)

    def _writable(self) -> None:
        assert self.fd is not None
        try:
            sent = os.write(self.fd, bytes(self.to_shell[:4096]))
        except BlockingIOError:
            return
        except OSError:
            sent = len(self.to_shell)
        del self.to_shell[:sent]
        if not self.to_shell:
            self.writing = False
            self.loop.remove_writer(self.fd)

    # -- faults ----------------------------------------------------------------

    def _panic_on_word(self) -> None:
        """Panic once the terminal has echoed the fatal line (or shortly after)."""
        self.panicking = True
        self.echo_wanted = bytes(self.typed[-16:])
        if self.echo_wanted in self.recent:
            self._panic_now()
        else:
            self.call_later(ECHO_GRACE, self._panic_now)

    def _panic_now(self) -> None:
        if not self.active:
            return
        comm = os.path.basename(self.config.shell)[:15]
        self.dut.panic(
            "sysrq triggered crash",
            preamble=["sysrq: Trigger a crash"],
            pid=self.pid or 1,
            comm=comm,
        )

    def _panic_after(self) -> None:
        self.dut.panic("Attempted to kill init! exitcode=0x0000000b")

    def _start_burst(self) -> None:
        assert self.config.burst_mb is not None
        size = int(self.config.burst_mb * 1024 * 1024)
        self.burst_count = max(1, math.ceil(size / 80))
        self.burst_width = max(6, len(str(self.burst_count)))
        self.burst_next = 1
        self.bursting = True
        self._pause()
        if self.dut.last_byte != LF:
            self.emit(CRLF)
        self._pump_burst()

    def _pump_burst(self) -> None:
        if self.pumping:
            return
        self.pumping = True
        try:
            while self.active and self.bursting and self.dut.line.backlog() < HIGH_WATER:
                last = min(self.burst_next + 400, self.burst_count + 1)
                width = self.burst_width
                self.emit(b"".join(text.burst_line(n, width) for n in range(self.burst_next, last)))
                self.burst_next = last
                if self.burst_next > self.burst_count:
                    self.emit(f"burst done: {self.burst_count} lines".encode() + CRLF)
                    self.bursting = False
                    self._resume()
        finally:
            self.pumping = False

    # -- end of the shell ------------------------------------------------------

    def _shell_exited(self) -> None:
        """The shell ended (exit, logout): relay its last words, log in again."""
        while self.fd is not None and self.active:
            data = self._read()
            if not data:
                break
            self._relay(data)
        if not self.active:
            return
        action = self._box_power_action()
        if action is not None:
            # reboot(2) in the board's PID namespace: its init was killed
            # with SIGHUP (restart) or SIGINT (power off, halt)
            self._power(action)
            return
        self._cleanup()
        self.dut.start_userspace()

    def _box_power_action(self) -> str | None:
        """For a box that ended by reboot(2): 'reboot' or 'poweroff'."""
        if self.runtime is None or self.pid is None:
            return None
        if self.pidfd is not None:
            select.select([self.pidfd], [], [], BOX_EXIT_WAIT)
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return None
        if info is None or info.si_code not in (os.CLD_KILLED, os.CLD_DUMPED):
            return None
        return EXIT_SIGNALS.get(info.si_status)

    def leave(self) -> None:
        super().leave()
        self._cleanup()

    def _cleanup(self) -> None:
        if self.fd is not None:
            self._pause()
            if self.writing:
                self.loop.remove_writer(self.fd)
                self.writing = False
        if self.pidfd is not None:
            self.loop.remove_reader(self.pidfd)
            with contextlib.suppress(OSError):
                os.close(self.pidfd)
            self.pidfd = None
        if self.pid is not None:
            if self.runtime is not None:
                namespace.kill_box(self.pid)
            else:
                kill_session(self.pid)
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
        if self.pid is not None:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
            self.pid = None
        if self.shims is not None:
            shutil.rmtree(self.shims, ignore_errors=True)
            self.shims = None
        if self.kmsg is not None:
            self.kmsg.close()
            self.kmsg = None
        if self.runtime is not None:
            self.runtime.close()
            self.runtime = None


BootloaderFactory = Callable[["SimDUT"], StageHandler]


class SimDUT:
    """The board: power, stage transitions, and the console output path."""

    def __init__(
        self,
        loop: EventLoop,
        config: SimConfig,
        line: SerialLine,
        *,
        bootloader: BootloaderFactory | None = None,
    ) -> None:
        self.loop = loop
        self.config = config
        self.line = line
        self.bootloader = bootloader
        self.handler: StageHandler = OffStage(self)
        self.powered_at: float | None = None
        self.last_byte = LF
        # the ramdisk booted at power-on (--ramdisk, or what `flash` gave)
        self.ramdisk: str | None = config.ramdisk
        # this boot's ramdisk, handed over by the bootloader (a file of ours)
        self.boot_ramdisk: str | None = None
        # this boot's kernel command line, from the bootloader
        self.boot_args: str | None = None
        # this boot's root file system (None: the shell runs on the host)
        self.root: BootRoot | None = None
        # why this boot cannot start userspace (a panic reason)
        self.root_failure: str | None = None
        line.on_drain = self._drained

    # -- root file system ----------------------------------------------------------

    @property
    def booted_ramdisk(self) -> str | None:
        """The ramdisk of this boot: the bootloader's, else the board's."""
        return self.boot_ramdisk or self.ramdisk

    @property
    def root_mode(self) -> bool:
        """True when the shell runs in the board's own root file system."""
        return bool(self.booted_ramdisk or self.config.rootfs)

    def flash(self, ramdisk: str | None) -> None:
        """Boot this ramdisk from the next power-on (or reboot) on."""
        self.ramdisk = ramdisk

    def prepare_root(self) -> list[str]:
        """The kernel is starting: unpack the initramfs (or take --rootfs).
        Returns the kernel log lines that say so; sets `root_failure` when
        the boot cannot reach a shell."""
        self.release_root()
        self.root_failure = None
        lines: list[str] = []
        image = self.booted_ramdisk
        if image:
            lines.append("Trying to unpack rootfs image as initramfs...")
            try:
                size = os.path.getsize(image)
                self.root, extracted = namespace.unpack_ramdisk(image)
            except (RamdiskError, OSError) as exc:
                lines.append(f"Initramfs unpacking failed: {exc}")
                self.root_failure = RAMDISK_PANIC
                return lines
            segments = ", ".join(extracted.segments)
            lines.append(f"Unpacking initramfs... {extracted.count} files ({segments})")
            lines.append(f"Freeing initrd memory: {max(1, size // 1024)}K")
        elif self.config.rootfs:
            self.root = BootRoot(Path(self.config.rootfs))
            self.root.prepare()
        if self.root is None:
            return lines
        if namespace.mounted_noexec(self.root.path):
            lines.append(
                f"sim: {self.root.path} is on a file system mounted noexec: nothing can run "
                "from it (point TMPDIR elsewhere)"
            )
            self.root_failure = NO_INIT
        elif namespace.find_shell(self.root.path, self.config.shell) is None:
            self.root_failure = NO_INIT
        return lines

    def release_root(self) -> None:
        """Forget this boot's root (a ramdisk's is deleted)."""
        root, self.root = self.root, None
        if root is not None:
            root.close()

    def _forget_boot(self) -> None:
        """A new boot starts: what the bootloader handed over last time is gone."""
        path, self.boot_ramdisk = self.boot_ramdisk, None
        self.boot_args = None
        if path is not None:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def kernel_message(self, message: str) -> None:
        """A line written to /dev/kmsg reaches the console as the kernel's would."""
        if not self.powered:
            return
        if self.last_byte != LF:
            self.emit(CRLF)
        self.emit(f"{text.timestamp(self.uptime())} {message}".encode() + CRLF)

    # -- power -------------------------------------------------------------------

    @property
    def stage(self) -> Stage:
        return self.handler.stage

    @property
    def powered(self) -> bool:
        return self.stage is not Stage.OFF

    def power_on(self) -> bool:
        """Start booting; False when the board was already on."""
        if self.powered:
            return False
        if self.root_mode:
            namespace.check_host()  # BoardError: this host cannot run the board
        self.powered_at = self.loop.time()
        self.last_byte = LF
        self._boot()
        return True

    def _boot(self) -> None:
        """From the start: the bootloader if there is one, else the kernel."""
        self._forget_boot()
        if self.bootloader is not None:
            self._switch(self.bootloader(self))
        else:
            self.start_kernel()

    def power_off(self) -> bool:
        """Cut the power (kills the shell); False when it was already off."""
        if not self.powered:
            return False
        self._switch(OffStage(self))
        self.release_root()
        self._forget_boot()
        self.line.discard()
        self.powered_at = None
        return True

    def reset(self) -> None:
        self.power_off()
        self.power_on()

    def soft_reboot(self) -> None:
        """The OS rebooted itself: the shutdown message, then boot again (no power cut)."""
        if self.last_byte != LF:
            self.emit(CRLF)
        self.emit(b"The system is going down for reboot NOW!" + CRLF)
        self.warm_reset()

    def warm_reset(self) -> None:
        """The board resets itself (no power cut): boot again from the start."""
        self.powered_at = self.loop.time()
        self._boot()

    def soft_poweroff(self) -> None:
        """The OS powered itself off: the message reaches the console, then silence."""
        if self.last_byte != LF:
            self.emit(CRLF)
        self.emit(b"The system is going down for power off NOW!" + CRLF + b"reboot: Power down" + CRLF)
        self._switch(OffStage(self))
        self.release_root()
        self._forget_boot()
        self.powered_at = None

    def uptime(self) -> float:
        return 0.0 if self.powered_at is None else self.loop.time() - self.powered_at

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "power": "on" if self.powered else "off",
            "stage": self.stage.value,
            "uptime": round(self.uptime(), 3) if self.powered else None,
            "shell_pid": None,
            "root": str(self.root.path) if self.root is not None else None,
            "ramdisk": self.ramdisk,
            "boot_ramdisk": self.boot_ramdisk,
        }
        status.update(self.handler.status())
        return status

    # -- transitions (called by the stages) --------------------------------------

    def start_kernel(self) -> None:
        self._switch(KernelStage(self))

    def boot_linux(self, *, ramdisk: bytes | None = None, cmdline: str | None = None) -> None:
        """The bootloader starts Linux: `ramdisk` (the bytes the kernel gets,
        no bootloader header) is this boot's initramfs instead of the
        board's; `cmdline` the kernel command line."""
        self._forget_boot()
        self.boot_args = cmdline
        if ramdisk is not None:
            try:
                fd, path = tempfile.mkstemp(prefix="lava-sim-boot-ramdisk-")
                self.boot_ramdisk = path  # deleted by the next boot or power-off
                with os.fdopen(fd, "wb") as out:
                    out.write(ramdisk)
            except OSError as exc:
                self.emit(f"sim: cannot keep the ramdisk: {exc}".encode() + CRLF)
                self.panic(RAMDISK_PANIC)
                return
        if self.root_mode:
            try:
                namespace.check_host()
            except BoardError as exc:
                message = f"sim: this host cannot run the board's root file system: {exc}"
                self.emit(message.encode() + CRLF)
                self.panic(NO_INIT)
                return
        self.start_kernel()

    def enter(self, handler: StageHandler) -> None:
        """Switch to a stage of the caller's own (a bootloader's)."""
        self._switch(handler)

    def start_userspace(self) -> None:
        """After the kernel, or when a shell ends: a login prompt or a shell."""
        if self.config.no_login:
            self.start_shell()
        else:
            self._switch(LoginStage(self))

    def start_shell(self) -> None:
        self._switch(ShellStage(self))

    def hang(self, where: str) -> None:
        self._switch(DeadStage(self, f"hang at {where}"))

    def panic(
        self, reason: str, *, preamble: list[str] | None = None, pid: int = 1, comm: str = "init"
    ) -> None:
        """Print a kernel panic and die (the shell is killed first)."""
        self._switch(DeadStage(self, "panic"))
        if self.last_byte != LF:
            self.emit(CRLF)
        stamp = text.timestamp(self.uptime())
        lines = text.panic_lines(reason, preamble=preamble, pid=pid, comm=comm)
        self.emit(b"".join(f"{stamp} {line}".encode() + CRLF for line in lines))

    def _switch(self, handler: StageHandler) -> None:
        old = self.handler
        old.active = False
        old.leave()
        self.handler = handler
        handler.active = True
        handler.enter()

    # -- console -------------------------------------------------------------------

    def emit(self, data: bytes) -> None:
        if data:
            self.last_byte = data[-1]
            self.line.send(data)

    def input(self, data: bytes) -> None:
        self.handler.input(data)

    def _drained(self) -> None:
        self.handler.drained()


# -- the shell process ------------------------------------------------------------


def shell_argv(path: str) -> list[str]:
    name = os.path.basename(path)
    if name == "bash":
        # no rc files: they would replace PS1
        return [path, "--norc", "--noprofile", "-i"]
    return [path, "-i"]


def shell_env(config: SimConfig, path_prefix: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if path_prefix:
        env["PATH"] = path_prefix + os.pathsep + env.get("PATH", os.defpath)
    for name in ("ENV", "BASH_ENV", "PROMPT_COMMAND", "PS0"):
        env.pop(name, None)
    env["PS1"] = config.effective_prompt
    env["TERM"] = "dumb"
    env["HISTFILE"] = "/dev/null"
    return env


def box_env(config: SimConfig) -> dict[str, str]:
    """The environment of a shell in the board's own root file system: a
    clean one, as a login gives (the box adds PATH and ENV)."""
    home = "/root" if config.username == "root" else "/"
    return {
        "HOME": home,
        "USER": config.username,
        "LOGNAME": config.username,
        "SHELL": config.shell,
        "PS1": config.effective_prompt,
        "TERM": "dumb",
        "HISTFILE": "/dev/null",
    }


def spawn_shell(config: SimConfig, path_prefix: str | None = None) -> tuple[int, int]:
    """Start the shell in a new pty and session; return (pid, pty master)."""
    path = config.resolve_shell()
    if path is None:
        raise FileNotFoundError(f"shell {config.shell!r} not found")
    # line-editing shells mangle the echo of long lines on a narrow
    # terminal; a serial console reports 0x0, which they read as 80.
    wide = os.path.basename(path) in ("bash", "zsh")
    return spawn_process(path, shell_argv(path), shell_env(config, path_prefix), wide=wide)


def spawn_process(
    path: str, argv: list[str], env: dict[str, str], *, wide: bool = False
) -> tuple[int, int]:
    """Run `path` in a new pty and session; return (pid, pty master). With
    `wide`, the terminal says it has 1000 columns."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: a session leader with the pty as its terminal
        try:
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
            if wide:
                with contextlib.suppress(OSError):
                    fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 1000, 0, 0))
            os.execve(path, argv, env)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.write(2, f"sim: cannot run {path}: {exc}\r\n".encode())
        os._exit(127)
    os.set_blocking(fd, False)
    return pid, fd


def session_members(sid: int) -> list[int]:
    """Processes in session `sid` (the shell's, which the simulator created)."""
    return [pid for pid, _parent, session in host_processes() if session == sid]


def kill_session(pid: int) -> None:
    """SIGKILL the shell, its process group and the rest of its session.

    The shell is a child of ours that we have not reaped, so its pid (which is
    also its process group and session id) cannot have been reused.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)
    me = os.getpid()
    for member in session_members(pid):
        if member != me:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(member, signal.SIGKILL)
