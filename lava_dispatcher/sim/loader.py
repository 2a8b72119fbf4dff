"""What the simulated bootloaders share (`--bootloader u-boot|grub|ipxe|barebox|depthcharge`).

A bootloader is two objects. A `Firmware` is the board's: one per daemon,
it is the `SimDUT` bootloader factory (called at every power-on, reset and
reboot) and keeps what outlives a boot (interrupts ignored so far, a saved
environment). A `ConsoleStage` is one boot's: it prints the banner, runs
the autoboot countdown, reads keys, edits the command line, runs commands
(generators of delays, on the event loop, so a `sleep` blocks nothing) and
hands over to Linux. Each bootloader fills in the hooks (banner, countdown
texts, what a key does to the countdown, how a line is run); the machinery
is here once, so the five behave the same where real ones do: echo,
backspace, Ctrl-U, Ctrl-C (cancels the line and gives a fresh prompt, which
the dispatcher's echo check relies on), escape sequences skipped, CR or LF
ends a line, input typed while a command runs waits for the next prompt
(a UART FIFO).

`--ignore-interrupt N` works the same for every bootloader with a
countdown: the first N attempts to stop it are ignored (an attempt: keys
typed less than ATTEMPT_GAP apart), counted over the daemon's life.
`--reset-loop`: the kernel prints a few lines and the board resets.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Generator
from typing import Any, ClassVar

from lava_dispatcher.sim import text
from lava_dispatcher.sim.config import SimConfig
from lava_dispatcher.sim.dut import SimDUT, Stage, StageHandler
from lava_dispatcher.sim.loop import Timer
from lava_dispatcher.sim.uboot_env import DHCP_LEASE, assignment, expand_words, split_commands
from lava_dispatcher.sim.uboot_image import tftp_read

#: a running command: yields seconds to wait, returns its status (0: success)
Run = Generator[float, None, int]
SUCCESS, FAILURE = 0, 1

CR, LF, BS, DEL, CTRL_C, CTRL_U, ESC, BEL = 13, 10, 8, 127, 3, 21, 27, 7
CRLF = "\r\n"
# --ignore-interrupt: a key typed less than this many seconds after the
# previous one belongs to the same attempt to stop the countdown (a
# dispatcher's " \n", even typed with a character delay), a later one starts
# another attempt (a dispatcher interrupting again)
ATTEMPT_GAP = 0.15
# --reset-loop: kernel lines printed, and when the board resets after them
RESET_LOOP_LINES = 3
RESET_LOOP_LINE_GAP = 0.02
RESET_LOOP_AFTER = 0.1
#: the board's network card, and what the lab's DHCP server gives it
MAC = "52:54:00:12:34:56"
LEASE = DHCP_LEASE


class Firmware:
    """The bootloader of one board: makes its stage at every boot, and keeps
    what outlives a boot (interrupts ignored so far)."""

    name: ClassVar[str] = ""
    default_prompt: ClassVar[str] = ""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.ignored = 0
        self.ignoring_until = -math.inf

    def __call__(self, dut: SimDUT) -> StageHandler:
        return self.make_stage(dut)

    def make_stage(self, dut: SimDUT) -> ConsoleStage:
        raise NotImplementedError

    @property
    def prompt(self) -> str:
        """--bootloader-prompt, else the bootloader's own."""
        return self.config.bootloader_prompt or self.default_prompt

    def ignore_key(self, now: float) -> bool:
        """A key stops the countdown: True if its attempt is to be ignored."""
        if now < self.ignoring_until:
            self.ignoring_until = now + ATTEMPT_GAP  # the same attempt goes on
            return True
        if self.ignored < self.config.ignore_interrupt:
            self.ignored += 1
            self.ignoring_until = now + ATTEMPT_GAP
            return True
        return False


class ConsoleStage(StageHandler):
    """One boot of a bootloader with a countdown and a command line (see the
    module docstring); subclasses override the hooks below."""

    stage = Stage.BOOTLOADER
    #: characters a command line may hold; more ring the bell
    max_line = 1023
    #: echoed when Ctrl-C cancels the line being typed
    cancel_text = "^C\n"
    #: printed when a line ends inside an open quote (see `incomplete`)
    continuation_prompt = "> "

    def __init__(self, dut: SimDUT, firmware: Firmware) -> None:
        super().__init__(dut)
        self.firmware = firmware
        self.state = "banner"  # countdown, prompt, running, booting (or a subclass's own)
        self.pending = bytearray()  # typed while a command runs
        self.line = bytearray()
        self.continued = ""  # earlier lines of a command with an open quote
        self.escape = bytearray()
        self.running: Run | None = None
        self.countdown_timer: Timer | None = None
        self.countdown_start = 0.0
        self.remaining = 0
        self.ticks = 0

    # -- hooks ---------------------------------------------------------------------

    def banner(self) -> None:
        """Print what the bootloader prints at power-on, before any countdown."""

    def autoboot_delay(self) -> int:
        """Seconds of countdown; -1: a prompt at once, -2: autoboot at once."""
        return self.config.autoboot_delay

    def countdown_text(self, remaining: int, first: bool) -> str:
        """The countdown as it starts (`first`) and at each second."""
        return ""

    def interrupted(self, data: bytes) -> bytes:
        """A key (`data[0]`) stopped the countdown; return what is left to type.
        The default: the key is used up and the prompt comes."""
        self._prompt()
        return data[1:]

    def autoboot(self) -> None:
        """The countdown ran out (or there was none): boot on."""
        self.boot_board()

    def other_input(self, data: bytes) -> bytes:
        """Keys typed in a state of the subclass's own (a menu); return what
        is left for the prompt."""
        return b""

    def incomplete(self, typed: str) -> bool:
        """Whether `typed` needs another line (an open quote)."""
        return False

    def execute(self, line: str) -> Run:
        """Run a command line."""
        raise NotImplementedError

    def prompt_text(self) -> str:
        return self.firmware.prompt

    # -- power-on ------------------------------------------------------------------

    def enter(self) -> None:
        self.banner()
        delay = self.autoboot_delay()
        if delay < -1:
            self.autoboot()
        elif delay < 0:
            self._prompt()
        else:
            self.write(self.countdown_text(delay, True))
            self.state = "countdown"
            self.remaining = delay
            self.countdown_start = self.loop.time()
            self._next_tick()

    def _next_tick(self) -> None:
        """A second from now (from the start: no drift), or autoboot now."""
        if self.remaining <= 0:
            self.countdown_timer = None
            self.write("\n")
            self.state = "booting"
            self.autoboot()
            return
        self.ticks += 1
        self.countdown_timer = self.call_at(self.countdown_start + self.ticks, self._tick)

    def _tick(self) -> None:
        self.remaining -= 1
        self.write(self.countdown_text(self.remaining, False))
        self._next_tick()

    def cancel_countdown(self) -> None:
        if self.countdown_timer is not None:
            self.countdown_timer.cancel()
            self.countdown_timer = None

    # -- console ---------------------------------------------------------------------

    def write(self, out: str) -> None:
        self.emit(out.replace("\n", CRLF).encode("utf-8", "surrogateescape"))

    def input(self, data: bytes) -> None:
        if self.state == "countdown":
            if self.firmware.ignore_key(self.loop.time()):
                return  # as if nothing was typed
            self.cancel_countdown()
            data = self.interrupted(data)
        if not self.active:
            return
        if self.state not in ("prompt", "running"):
            data = self.other_input(data)
            if not self.active:
                return
        self.pending += data
        self._feed()

    def _feed(self) -> None:
        """Type what is pending, while the prompt is there to read it."""
        while self.active and self.state == "prompt" and self.pending:
            data = bytes(self.pending)
            self.pending.clear()
            for index, byte in enumerate(data):
                self._key(byte)
                if not self.active:
                    return
                if self.state != "prompt":
                    # a command runs: the rest waits (UART FIFO)
                    self.pending[:0] = data[index + 1 :]
                    return

    def _key(self, byte: int) -> None:
        if self.escape:
            # skip terminal escape sequences (arrow keys...)
            self.escape.append(byte)
            if (len(self.escape) > 2 and 0x40 <= byte <= 0x7E) or len(self.escape) > 8:
                self.escape.clear()
            return
        if byte == ESC:
            self.escape.append(byte)
        elif byte in (CR, LF):
            self.write("\n")
            typed = self.continued + self.line.decode("utf-8", "surrogateescape")
            self.line.clear()
            self._enter(typed)
        elif byte in (BS, DEL):
            if self.line:
                self.line.pop()
                self.write("\b \b")
        elif byte == CTRL_C:
            self.line.clear()
            self.continued = ""
            self.write(self.cancel_text)
            self._prompt()
        elif byte == CTRL_U:
            self.write("\b \b" * len(self.line))
            self.line.clear()
        elif byte >= 0x20:
            if len(self.continued) + len(self.line) >= self.max_line:
                self.emit(bytes((BEL,)))
            else:
                self.line.append(byte)
                self.emit(bytes((byte,)))

    def _enter(self, typed: str) -> None:
        if self.incomplete(typed):
            self.continued = typed + "\n"
            self.write(self.continuation_prompt)
            return
        self.continued = ""
        self.start(self.execute(typed))

    def _prompt(self) -> None:
        self.state = "prompt"
        self.write(self.prompt_text())

    # -- running commands -----------------------------------------------------------

    def start(self, run: Run) -> None:
        """Run a command (a generator of delays) on the event loop; the prompt after."""
        self.state = "running"
        self.running = run
        self._step()

    def _step(self) -> None:
        assert self.running is not None
        try:
            delay = next(self.running)
        except StopIteration:
            self.running = None
            if self.active:
                self._prompt()
            return
        if self.active:
            self.call_later(delay, self._resume)

    def _resume(self) -> None:
        self._step()
        self._feed()

    # -- what commands ask of the board -----------------------------------------------

    def start_linux(self, ramdisk: bytes | None, cmdline: str | None) -> None:
        """Hand over to Linux: `ramdisk` (None: the board's own root) and
        its command line (None: the board's)."""
        if self.config.reset_loop:
            self.dut.enter(ResetLoopKernel(self.dut))
        else:
            self.dut.boot_linux(ramdisk=ramdisk, cmdline=cmdline)

    def boot_board(self) -> None:
        """The board's own boot (what autoboot does): its kernel and root."""
        self.start_linux(None, None)

    def reset(self) -> None:
        self.dut.warm_reset()

    def status(self) -> dict[str, Any]:
        return {"bootloader": self.firmware.name, "bootloader_state": self.state}


class ResetLoopKernel(StageHandler):
    """--reset-loop: the kernel starts, prints a few lines, and the board resets."""

    stage = Stage.KERNEL

    def enter(self) -> None:
        lines = text.kernel_lines(RESET_LOOP_LINES + 1, self.config.baud)[:RESET_LOOP_LINES]
        start = self.loop.time()
        for index, line in enumerate(lines):
            stamp = text.timestamp(index * RESET_LOOP_LINE_GAP)
            data = f"{stamp} {line}\r\n".encode()
            self.call_at(start + index * RESET_LOOP_LINE_GAP, functools.partial(self.emit, data))
        self.call_at(start + RESET_LOOP_AFTER, self.dut.warm_reset)


def split_args(argv: list[str], flags: str, valued: str) -> tuple[dict[str, str], list[str]] | None:
    """getopt-style options of a bootloader command, anywhere on the line
    (barebox's `bootm ... FILE -a ADDR`): `flags` take no value, `valued` take
    one (`-r FILE` or `-rFILE`); None on an unknown option or a missing value."""
    options: dict[str, str] = {}
    rest: list[str] = []
    args = iter(argv)
    for arg in args:
        if len(arg) < 2 or not arg.startswith("-"):
            rest.append(arg)
            continue
        letters = arg[1:]
        while letters:
            letter, letters = letters[0], letters[1:]
            if letter in flags:
                options[letter] = ""
            elif letter in valued:
                value = letters or next(args, None)
                if value is None:
                    return None
                options[letter] = value
                letters = ""
            else:
                return None
    return options, rest


class Shell:
    """A bootloader's command interpreter: hush-like lines (`;`, `&&`, `||`,
    quotes, `$var`/`${var}`, `name=value`; see `uboot_env`) run against a
    table of commands. `COMMANDS` maps each name to its one-line help; the
    command is the method `do_<name>` (dashes and dots made underscores),
    called with argv, returning a status or a `Run` generator."""

    COMMANDS: ClassVar[dict[str, str]] = {}
    #: printed when a line ends inside a quote
    syntax_error = "syntax error\n"

    def __init__(self, stage: ConsoleStage) -> None:
        self.stage = stage
        self.config = stage.config
        self.variables: dict[str, str] = {}

    def write(self, out: str) -> None:
        self.stage.write(out)

    @property
    def halted(self) -> bool:
        """Linux started or the board reset: the rest of the line is not run."""
        return not self.stage.active

    def lookup(self, name: str) -> str | None:
        return self.variables.get(name)

    def assignment(self, text: str) -> tuple[str, str] | None:
        """(name, unexpanded value) when the command is `name=value`."""
        return assignment(text)

    def assign(self, name: str, value: str) -> None:
        self.variables[name] = value

    def unknown(self, name: str) -> None:
        """Say that there is no command `name`."""
        self.write(f"{name}: command not found\n")

    def command(self, name: str) -> Callable[[list[str]], int | Run] | None:
        if name not in self.COMMANDS:
            return None
        method: Callable[[list[str]], int | Run] = getattr(
            self, "do_" + name.replace("-", "_").replace(".", "_")
        )
        return method

    def execute(self, line: str) -> Run:
        """Run a command line; return the status of the last command run."""
        split = split_commands(line)
        if split.incomplete:
            self.write(self.syntax_error)
            return FAILURE
        status = SUCCESS
        for connector, command in split.commands:
            if self.halted:
                break
            if (connector == "&&" and status != SUCCESS) or (
                connector == "||" and status == SUCCESS
            ):
                continue
            assign = self.assignment(command)
            if assign is not None:
                name, value = assign
                self.assign(name, " ".join(expand_words(value, self.lookup)))
                status = SUCCESS
                continue
            argv = expand_words(command, self.lookup)
            if argv:
                status = yield from self.run_argv(argv)
        return status

    def run_argv(self, argv: list[str]) -> Run:
        command = self.command(argv[0])
        if command is None:
            self.unknown(argv[0])
            return FAILURE
        result = command(argv)
        status = (yield from result) if inspect.isgenerator(result) else result
        assert isinstance(status, int)
        return status

    def do_help(self, argv: list[str]) -> int:
        for name in sorted(self.COMMANDS):
            self.write(f"{name:<16} {self.COMMANDS[name]}\n")
        return SUCCESS

    def do_sleep(self, argv: list[str]) -> Run:
        try:
            seconds = float(argv[1])
        except (IndexError, ValueError):
            seconds = -1.0
        if seconds < 0:
            self.write(f"usage: {argv[0]} SECONDS\n")
            return FAILURE
        yield seconds
        return SUCCESS

    def fetch(self, name: str) -> bytes | tuple[int, str]:
        """A file of the TFTP server (`--tftp-root`), or its error (code, message)."""
        return tftp_read(self.config.tftp_root, name)


class ShellStage(ConsoleStage):
    """A bootloader whose command lines a `Shell` runs."""

    shell: Shell

    def incomplete(self, typed: str) -> bool:
        return split_commands(typed).incomplete

    def execute(self, line: str) -> Run:
        return self.shell.execute(line)
