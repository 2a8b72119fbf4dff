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

Modules: this one (the stage: banner, countdown; the line editing and the
running of commands are `loader`'s, shared with the other bootloaders), `uboot_env`
(environment, syntax), `uboot_shell` (the interpreter, tftp and boot
logic), `uboot_cmds` (the command table), `uboot_image` (RAM, TFTP files,
uImage headers).
"""

from __future__ import annotations

from lava_dispatcher.sim.config import SimConfig
from lava_dispatcher.sim.dut import SimDUT
from lava_dispatcher.sim.loader import ConsoleStage, Firmware, Run
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

PROMPT = "=> "


class UBoot(Firmware):
    """The board's U-Boot: keeps the saved environment across boots."""

    name = "u-boot"
    default_prompt = PROMPT

    def __init__(self, config: SimConfig) -> None:
        super().__init__(config)
        self.saved_env: dict[str, str] | None = None

    def make_stage(self, dut: SimDUT) -> UBootStage:
        return UBootStage(dut, self)


class UBootStage(ConsoleStage):
    """One boot's U-Boot: banner, countdown, prompt, commands."""

    max_line = CBSIZE - 1
    cancel_text = "<INTERRUPT>\n"

    def __init__(self, dut: SimDUT, uboot: UBoot) -> None:
        super().__init__(dut, uboot)
        self.uboot = uboot
        saved = uboot.saved_env
        env = dict(saved) if saved is not None else default_env(self.config)
        self.interpreter = Interpreter(self.config, env, self, COMMANDS)

    def banner(self) -> None:
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

    def autoboot_delay(self) -> int:
        try:
            return int(self.interpreter.env.get("bootdelay", ""))
        except ValueError:
            return self.config.autoboot_delay

    def countdown_text(self, remaining: int, first: bool) -> str:
        if first:
            return f"Hit any key to stop autoboot: {remaining:2d} "
        return f"\b\b\b{remaining:2d} "

    def interrupted(self, data: bytes) -> bytes:
        self.write("\b\b\b 0 \n")
        return super().interrupted(data)

    def autoboot(self) -> None:
        bootcmd = self.interpreter.env.get("bootcmd")
        if not bootcmd:
            self._prompt()
            return
        self.start(self.interpreter.execute(bootcmd))

    def incomplete(self, typed: str) -> bool:
        return split_commands(typed).incomplete

    def execute(self, line: str) -> Run:
        return self.interpreter.execute(line)

    # -- what the interpreter asks of the board (uboot_shell.Host) ------------------

    def save_env(self, env: dict[str, str]) -> None:
        self.uboot.saved_env = dict(env)

    def board_ramdisk(self) -> bool:
        return bool(self.dut.ramdisk)
