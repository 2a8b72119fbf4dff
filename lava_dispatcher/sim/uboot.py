"""A U-Boot-like bootloader for the simulated board (`--bootloader u-boot`).

It behaves like U-Boot 2023.01 on a serial console, closely enough for a
LAVA `boot: method: u-boot` action (interrupt, commands, boot) to work as on
a real board. At power-on, at every reset and reboot:

    (blank lines)
    U-Boot 2023.01 (sim) (Jan 10 2023 - 00:00:00 +0000)
    DRAM, Core, MMC, Loading Environment, In/Out/Err, Net lines
    Hit any key to stop autoboot:  2

The countdown (`--autoboot-delay`, the `bootdelay` variable: -1 never
autoboots, -2 autoboots without a countdown) goes down each second as
U-Boot prints it (`\\b\\b\\b 1 `). Any key stops it (that key is used up,
what follows it is typed at the prompt) and gives the prompt `=> `
(`--bootloader-prompt`); else `bootcmd` runs, which by default boots the
board as without a bootloader (`sysboot`: the configured kernel, --ramdisk
or flashed ramdisk, --rootfs).

At the prompt: echo of what is typed, backspace, Ctrl-U, Ctrl-C
(`<INTERRUPT>`), CR or LF ends a line (so CR LF is a line and an empty
one), an open quote asks for more (`> `). The syntax is hush's subset
described in `uboot_env`: `;`, `&&`, `||`, quotes, `$var`/`${var}`,
`name=value`. Commands (unambiguous abbreviations work: `tftp`, `print`):

    help [cmd]                 version                echo [-n] ...
    setenv name [value ...]    printenv [name ...]    saveenv
    env default -a | print | set | delete | exists | save
    run var ...                boot / bootd (run bootcmd)    reset
    true  false  sleep N
    dhcp                       lease 10.0.2.15, server 10.0.2.2 (ipaddr,
                               serverip, netmask, gatewayip, dnsip); then a
                               tftp of `bootfile` unless autoload=no
    ping ADDR
    tftpboot [ADDR] [[IP:]FILE]  FILE under --tftp-root (a leading / is
                               dropped, `..` refused); sets filesize and
                               fileaddr (hex); errors as tftpd-hpa gives them
    booti|bootz|bootm KERNEL [RAMDISK[:SIZE]|-] [FDT]
    sysboot ...                the board's own boot (the default bootcmd)

Anything else: `Unknown command 'x' - try 'help'`. `if`, `for`, `while`,
`test` and `fdt` are not supported.

Booting. KERNEL, RAMDISK and FDT must be addresses `tftp` loaded (any
content: there is no real kernel), else U-Boot's errors: `Bad Linux ARM64
Image magic!` (booti), `zimage: Bad magic!` (bootz), `Wrong Image Format for
bootm command` (bootm), `Wrong Ramdisk Image Format` + `Ramdisk image is
corrupt or invalid`, `ERROR: Did not find a cmdline Flattened Device Tree`.
A ramdisk is either a legacy uImage (magic 0x27051956, `mkimage -T ramdisk`;
header and data CRCs checked, arch AArch64 for booti, ARM for bootz, OS
Linux) whose 64-byte header is dropped, or raw, which needs `:SIZE` (hex,
e.g. `${filesize}`). After `Starting kernel ...` the board boots Linux with
that ramdisk as its initramfs for this boot only (`SimDUT.boot_linux`), and
`bootargs` as the kernel command line; without a ramdisk, with the board's
own root (--ramdisk, flashed, --rootfs, or the host).

RAM: 2 GiB from 0x40000000; files load between 0x40000000 and 0xbe000000
(above: U-Boot's own; `TFTP error: trying to overwrite reserved memory...`
outside), which holds QEMU's addresses and LAVA's usual 0x8x000000 ones.
The environment starts as `uboot_env.default_env` (kernel_addr_r,
ramdisk_addr_r, fdt_addr_r, loadaddr...); `saveenv` keeps it for the next
boots of the same daemon, `env default -a` brings the defaults back.

Faults:

* `--ignore-interrupt N`: the first N attempts to stop the countdown are
  ignored: the countdown goes on as if nothing was typed, and autoboot runs
  unless a later attempt stops it. An attempt is a key and those typed less
  than ATTEMPT_GAP (0.15 s) after the one before (so " \n" is one, even
  typed with a character delay); attempts are counted over the daemon's
  life, across resets. A dispatcher has to interrupt again, or reset the
  board and try again;
* `--reset-loop`: every boot resets the board a few kernel lines after
  `Starting kernel ...`, back to the U-Boot banner, again and again;
* `--input-drop-rate P` (any stage, see `daemon`): typed characters lost.

Modules: this one (the stage: banner, countdown, line editing), `uboot_env`
(environment, syntax), `uboot_shell` (the interpreter, tftp and boot
logic), `uboot_cmds` (the command table), `uboot_image` (RAM, TFTP files,
uImage headers).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Generator
from typing import Any

from lava_dispatcher.sim import text
from lava_dispatcher.sim.config import SimConfig
from lava_dispatcher.sim.dut import BootloaderFactory, SimDUT, Stage, StageHandler
from lava_dispatcher.sim.loop import Timer
from lava_dispatcher.sim.uboot_cmds import COMMANDS
from lava_dispatcher.sim.uboot_env import (
    CBSIZE,
    ETHERNET,
    MMC,
    SERIAL,
    VERSION_STRING,
    default_env,
    split_commands,
)
from lava_dispatcher.sim.uboot_shell import Interpreter

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


def bootloader_factory(config: SimConfig) -> BootloaderFactory | None:
    """The `SimDUT` bootloader hook for `config.bootloader` (None: none)."""
    if config.bootloader == "u-boot":
        return UBoot(config)
    return None


class UBoot:
    """The bootloader of one board: makes its stage at every boot, and keeps
    what outlives a boot (the saved environment, interrupts ignored)."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.saved_env: dict[str, str] | None = None
        self.ignored = 0
        self.ignoring_until = -math.inf

    def __call__(self, dut: SimDUT) -> StageHandler:
        return UBootStage(dut, self)

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


class UBootStage(StageHandler):
    """One boot's U-Boot: banner, countdown, prompt, commands."""

    stage = Stage.BOOTLOADER

    def __init__(self, dut: SimDUT, uboot: UBoot) -> None:
        super().__init__(dut)
        self.uboot = uboot
        saved = uboot.saved_env
        env = dict(saved) if saved is not None else default_env(self.config)
        self.interpreter = Interpreter(self.config, env, self, COMMANDS)
        self.state = "banner"  # then countdown, prompt, running
        self.pending = bytearray()  # typed while a command runs
        self.line = bytearray()
        self.continued = ""  # earlier lines of a command with an open quote
        self.escape = bytearray()
        self.running: Generator[float, None, int] | None = None
        self.countdown_timer: Timer | None = None
        self.countdown_start = 0.0
        self.remaining = 0
        self.ticks = 0

    # -- power-on ----------------------------------------------------------------

    def enter(self) -> None:
        self.write(
            f"\n\n{VERSION_STRING}\n\n"
            "Model: LAVA simulated board\n"
            "DRAM:  2 GiB\n"
            "Core:  42 devices, 12 uclasses, devicetree: board\n"
            f"MMC:   {MMC}: 0\n"
        )
        if self.uboot.saved_env is None:
            self.write(
                "Loading Environment from MMC... *** Warning - bad CRC, "
                "using default environment\n\n"
            )
        else:
            self.write("Loading Environment from MMC... OK\n")
        self.write(f"In:    {SERIAL}\nOut:   {SERIAL}\nErr:   {SERIAL}\nNet:   eth0: {ETHERNET}\n")
        delay = self._bootdelay()
        if delay < -1:
            self._autoboot()
        elif delay < 0:
            self._prompt()
        else:
            self.write(f"Hit any key to stop autoboot: {delay:2d} ")
            self.state = "countdown"
            self.remaining = delay
            self.countdown_start = self.loop.time()
            self._next_tick()

    def _bootdelay(self) -> int:
        try:
            return int(self.interpreter.env.get("bootdelay", ""))
        except ValueError:
            return self.config.autoboot_delay

    def _next_tick(self) -> None:
        """A second from now (from the start: no drift), or autoboot now."""
        if self.remaining <= 0:
            self.countdown_timer = None
            self.write("\n")
            self._autoboot()
            return
        self.ticks += 1
        self.countdown_timer = self.call_at(self.countdown_start + self.ticks, self._tick)

    def _tick(self) -> None:
        self.remaining -= 1
        self.write(f"\b\b\b{self.remaining:2d} ")
        self._next_tick()

    def _autoboot(self) -> None:
        bootcmd = self.interpreter.env.get("bootcmd")
        if not bootcmd:
            self._prompt()
            return
        self._start(self.interpreter.execute(bootcmd))

    # -- console -----------------------------------------------------------------

    def write(self, out: str) -> None:
        self.emit(out.replace("\n", CRLF).encode("utf-8", "surrogateescape"))

    def input(self, data: bytes) -> None:
        if self.state == "countdown":
            if self.uboot.ignore_key(self.loop.time()):
                return  # as if nothing was typed
            if self.countdown_timer is not None:
                self.countdown_timer.cancel()
                self.countdown_timer = None
            self.write("\b\b\b 0 \n")
            data = data[1:]  # the key that stopped autoboot is used up
            self._prompt()
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
            self.write("<INTERRUPT>\n")
            self._prompt()
        elif byte == CTRL_U:
            self.write("\b \b" * len(self.line))
            self.line.clear()
        elif byte >= 0x20:
            if len(self.continued) + len(self.line) >= CBSIZE - 1:
                self.emit(bytes((BEL,)))
            else:
                self.line.append(byte)
                self.emit(bytes((byte,)))

    def _enter(self, typed: str) -> None:
        split = split_commands(typed)
        if split.incomplete:
            self.continued = typed + "\n"
            self.write("> ")
            return
        self.continued = ""
        if not split.commands:
            self._prompt()
            return
        self._start(self.interpreter.execute(typed))

    def _prompt(self) -> None:
        self.state = "prompt"
        self.write(self.config.bootloader_prompt)

    # -- running commands -----------------------------------------------------------

    def _start(self, run: Generator[float, None, int]) -> None:
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

    # -- what the interpreter asks of the board (uboot_shell.Host) ------------------

    def start_linux(self, ramdisk: bytes | None, cmdline: str | None) -> None:
        if self.config.reset_loop:
            self.dut.enter(ResetLoopKernel(self.dut))
        else:
            self.dut.boot_linux(ramdisk=ramdisk, cmdline=cmdline)

    def reset(self) -> None:
        self.dut.warm_reset()

    def save_env(self, env: dict[str, str]) -> None:
        self.uboot.saved_env = dict(env)

    def board_ramdisk(self) -> bool:
        return bool(self.dut.ramdisk)

    def status(self) -> dict[str, Any]:
        return {"bootloader": "u-boot", "bootloader_state": self.state}


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
