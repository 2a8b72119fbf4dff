"""The simulated board's knobs: one dataclass, its command-line form, and checks."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
from dataclasses import dataclass

HANG_STAGES = ("boot", "login", "shell")
#: the simulated bootloaders (`sim.bootloaders` has which module is which)
BOOTLOADERS = ("u-boot", "grub", "ipxe", "barebox", "depthcharge")
#: bootloaders that wait at their prompt: nothing to interrupt, no autoboot
NO_COUNTDOWN = ("depthcharge",)
DEFAULT_AUTOBOOT_DELAY = 2


class ConfigError(ValueError):
    """A knob has a value the simulator cannot honour."""


@dataclass(frozen=True)
class SimConfig:
    """Everything that makes one simulated board differ from another.

    Field names are the command-line options with dashes turned into
    underscores (`boot_time` is `--boot-time`); `SimConfig.to_argv()` gives
    the options back, so a configuration travels to a child process intact.
    """

    # boot and login
    hostname: str = "sim"
    boot_lines: int = 20
    boot_time: float = 0.2
    login_prompt: str | None = None
    username: str = "root"
    password: str | None = None
    no_login: bool = False
    prompt: str | None = None
    shell: str = "/bin/sh"
    # root file system (default: the shell runs on the host)
    rootfs: str | None = None
    ramdisk: str | None = None
    # bootloader (default: none, power-on starts the kernel)
    bootloader: str | None = None
    bootloader_prompt: str | None = None  # None: the bootloader's own
    autoboot_delay: int = DEFAULT_AUTOBOOT_DELAY
    tftp_root: str | None = None
    # faults
    panic_after: float | None = None
    panic_on: str | None = None
    hang_at: str | None = None
    drop_rate: float = 0.0
    garble_rate: float = 0.0
    seed: int | None = None
    baud: int | None = None
    burst_mb: float | None = None
    burst_after: float = 0.0
    input_drop_rate: float = 0.0
    ignore_interrupt: int = 0
    reset_loop: bool = False

    def __post_init__(self) -> None:
        # a daemon or a child process may run elsewhere: keep paths absolute
        for name in ("rootfs", "ramdisk", "tftp_root"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, os.path.abspath(os.fspath(value)))

    @property
    def root_mode(self) -> bool:
        """The shell runs in the board's own root file system."""
        return self.rootfs is not None or self.ramdisk is not None

    @property
    def effective_prompt(self) -> str:
        if self.prompt is not None:
            return self.prompt
        sigil = "#" if self.username == "root" else "$"
        return f"{self.username}@{self.hostname}:~{sigil} "

    @property
    def effective_login_prompt(self) -> str:
        if self.login_prompt is not None:
            return self.login_prompt
        return f"{self.hostname} login: "

    def validate(self) -> None:
        """Raise ConfigError naming the knob and the problem."""

        def positive(name: str, value: float | None, allow_zero: bool = True) -> None:
            if value is None:
                return
            if value < 0 or (value == 0 and not allow_zero):
                need = "0 or more" if allow_zero else "more than 0"
                raise ConfigError(f"--{name}: must be {need}, not {value}")

        if not self.hostname or any(c.isspace() for c in self.hostname):
            raise ConfigError(f"--hostname: must be one non-empty word, not {self.hostname!r}")
        if self.boot_lines < 1:
            raise ConfigError(f"--boot-lines: must be 1 or more, not {self.boot_lines}")
        positive("boot-time", self.boot_time)
        positive("panic-after", self.panic_after)
        positive("burst-after", self.burst_after)
        positive("burst-mb", self.burst_mb, allow_zero=False)
        positive("baud", self.baud, allow_zero=False)
        if not self.username:
            raise ConfigError("--username: must not be empty")
        if self.panic_on is not None and not self.panic_on:
            raise ConfigError("--panic-on: the word must not be empty")
        if self.hang_at is not None and self.hang_at not in HANG_STAGES:
            raise ConfigError(
                f"--hang-at: must be one of {', '.join(HANG_STAGES)}, not {self.hang_at!r}"
            )
        rates = (
            ("drop-rate", self.drop_rate),
            ("garble-rate", self.garble_rate),
            ("input-drop-rate", self.input_drop_rate),
        )
        for name, rate in rates:
            if not 0.0 <= rate <= 1.0:
                raise ConfigError(f"--{name}: must be a fraction between 0 and 1, not {rate}")
        if self.drop_rate + self.garble_rate > 1.0:
            raise ConfigError("--drop-rate plus --garble-rate must not exceed 1")
        if self.burst_after and self.burst_mb is None:
            raise ConfigError("--burst-after needs --burst-mb")
        if self.rootfs is not None and self.ramdisk is not None:
            raise ConfigError("--rootfs and --ramdisk: give one root file system, not both")
        if self.rootfs is not None and not os.path.isdir(self.rootfs):
            raise ConfigError(f"--rootfs: {self.rootfs!r} is not a directory")
        if self.ramdisk is not None and not os.path.isfile(self.ramdisk):
            raise ConfigError(f"--ramdisk: {self.ramdisk!r} is not a file")
        self._validate_bootloader()
        if self.root_mode:
            # the shell is looked for inside the root file system, at boot
            if not self.shell:
                raise ConfigError("--shell: must not be empty")
        elif self.resolve_shell() is None:
            raise ConfigError(f"--shell: {self.shell!r} is not an executable program")

    def _validate_bootloader(self) -> None:
        if self.bootloader is not None and self.bootloader not in BOOTLOADERS:
            raise ConfigError(
                f"--bootloader: must be one of {', '.join(BOOTLOADERS)}, not {self.bootloader!r}"
            )
        if self.autoboot_delay < -2:
            raise ConfigError(
                f"--autoboot-delay: must be -2 or more (-1: no autoboot, -2: autoboot "
                f"without a countdown), not {self.autoboot_delay}"
            )
        if self.bootloader_prompt is not None and not self.bootloader_prompt:
            raise ConfigError("--bootloader-prompt: must not be empty")
        if self.bootloader in NO_COUNTDOWN and self.ignore_interrupt:
            raise ConfigError(
                f"--ignore-interrupt: {self.bootloader} has no autoboot countdown to interrupt"
            )
        if self.ignore_interrupt < 0:
            raise ConfigError(f"--ignore-interrupt: must be 0 or more, not {self.ignore_interrupt}")
        if self.tftp_root is not None and not os.path.isdir(self.tftp_root):
            raise ConfigError(f"--tftp-root: {self.tftp_root!r} is not a directory")
        if self.bootloader is None:
            given = [
                option
                for option, value, default in (
                    ("--bootloader-prompt", self.bootloader_prompt, None),
                    ("--autoboot-delay", self.autoboot_delay, DEFAULT_AUTOBOOT_DELAY),
                    ("--tftp-root", self.tftp_root, None),
                    ("--ignore-interrupt", self.ignore_interrupt, 0),
                    ("--reset-loop", self.reset_loop, False),
                )
                if value != default
            ]
            if given:
                others = ", ".join(BOOTLOADERS[1:])
                raise ConfigError(f"{', '.join(given)}: need --bootloader u-boot (or {others})")

    def resolve_shell(self) -> str | None:
        """The shell's full path, or None when it cannot be run."""
        if os.sep in self.shell:
            return self.shell if os.access(self.shell, os.X_OK) else None
        return shutil.which(self.shell)

    def to_argv(self) -> list[str]:
        """The command-line options that recreate this configuration."""
        argv: list[str] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value == f.default:
                continue
            option = "--" + f.name.replace("_", "-")
            if isinstance(value, bool):
                if value:
                    argv.append(option)
            else:
                argv += [option, str(value)]
        return argv

    @classmethod
    def from_namespace(cls, namespace: argparse.Namespace) -> SimConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{n: getattr(namespace, n) for n in names if hasattr(namespace, n)})

    @classmethod
    def knob_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}


def add_knob_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the board and fault knobs (shared by `sim run` and `sim serve`)."""
    d = SimConfig()
    board = parser.add_argument_group("board (boot and login)")
    board.add_argument(
        "--hostname",
        default=d.hostname,
        help="host name in the boot log and default prompts (default: %(default)s)",
    )
    board.add_argument(
        "--boot-lines",
        type=int,
        default=d.boot_lines,
        metavar="N",
        help="kernel log lines printed at boot (default: %(default)s)",
    )
    board.add_argument(
        "--boot-time",
        type=float,
        default=d.boot_time,
        metavar="SECONDS",
        help="time the kernel log takes (default: %(default)s)",
    )
    board.add_argument(
        "--login-prompt",
        default=None,
        metavar="TEXT",
        help="login prompt (default: '<hostname> login: ')",
    )
    board.add_argument(
        "--username", default=d.username, help="the user that may log in (default: %(default)s)"
    )
    board.add_argument(
        "--password",
        default=None,
        help="ask for this password after the user name (default: no password)",
    )
    board.add_argument("--no-login", action="store_true", help="boot straight to the shell")
    board.add_argument(
        "--prompt",
        default=None,
        metavar="TEXT",
        help="shell prompt, PS1 (default: '<user>@<hostname>:~# ')",
    )
    board.add_argument(
        "--shell",
        default=d.shell,
        help="shell run after login, on the host or in the root file system "
        "(default: %(default)s)",
    )
    root = parser.add_argument_group(
        "root file system (default: the shell runs on the host, with your rights)"
    )
    root.add_argument(
        "--rootfs",
        default=None,
        metavar="DIR",
        help="run the shell chrooted into DIR (which has /bin/sh), in new PID, mount, "
        "UTS and IPC namespaces (and a user namespace when not root)",
    )
    root.add_argument(
        "--ramdisk",
        default=None,
        metavar="FILE",
        help="at every power-on, unpack the initramfs FILE (cpio newc, compressed or "
        "not, segments one after the other) into a fresh root and run the shell there",
    )
    loader = parser.add_argument_group(
        "bootloader (default: none, power-on boots the kernel at once)"
    )
    loader.add_argument(
        "--bootloader",
        choices=BOOTLOADERS,
        default=None,
        help="power-on and reboots enter a bootloader first: its banner, an autoboot countdown "
        "its key interrupts, then its prompt and the commands that load files from "
        "--tftp-root and boot them. u-boot: any key, '=> ', setenv, dhcp, tftp, "
        "booti/bootz/bootm... (sim/uboot.py); grub: 'c' for a command line, 'grub> ', "
        "net_bootp, linux, initrd, devicetree, boot (sim/grub.py); ipxe: Ctrl-B, 'iPXE> ', "
        "dhcp, set, kernel, initrd, chain, boot (sim/ipxe.py); barebox: any key, "
        "'barebox@...:/ ', global, tftp, bootm (sim/barebox.py); depthcharge: no countdown, "
        "'dpch: ', tftpboot SERVER KERNEL CMDLINE [RAMDISK] (sim/depthcharge.py)",
    )
    loader.add_argument(
        "--bootloader-prompt",
        default=None,
        metavar="TEXT",
        help="the bootloader's command prompt (default: its own, e.g. '=> ' for u-boot)",
    )
    loader.add_argument(
        "--autoboot-delay",
        type=int,
        default=d.autoboot_delay,
        metavar="SECONDS",
        help="the autoboot countdown (U-Boot's bootdelay, GRUB's timeout...): -1 never "
        "autoboots, -2 autoboots without a countdown (default: %(default)s)",
    )
    loader.add_argument(
        "--tftp-root",
        default=None,
        metavar="DIR",
        help="the TFTP server's root: the bootloader's 'tftp ADDR FILE' (or 'linux "
        "(tftp,IP)/FILE', 'kernel tftp://IP/FILE'...) loads DIR/FILE (default: no TFTP "
        "server, every file is 'not found')",
    )
    faults = parser.add_argument_group("faults")
    faults.add_argument(
        "--panic-after",
        type=float,
        default=None,
        metavar="SECONDS",
        help="kernel panic this long after the shell starts",
    )
    faults.add_argument(
        "--panic-on",
        default=None,
        metavar="WORD",
        help="kernel panic when a command line typed into the shell contains WORD",
    )
    faults.add_argument(
        "--hang-at",
        choices=HANG_STAGES,
        default=None,
        help="the board stops (silent, deaf) at this stage",
    )
    faults.add_argument(
        "--drop-rate",
        type=float,
        default=d.drop_rate,
        metavar="P",
        help="fraction of output characters lost",
    )
    faults.add_argument(
        "--garble-rate",
        type=float,
        default=d.garble_rate,
        metavar="P",
        help="fraction of output characters replaced by random bytes",
    )
    faults.add_argument(
        "--seed",
        type=int,
        default=None,
        metavar="N",
        help="random seed for --drop-rate/--garble-rate/--input-drop-rate",
    )
    faults.add_argument(
        "--input-drop-rate",
        type=float,
        default=d.input_drop_rate,
        metavar="P",
        help="fraction of the characters typed into the board that are lost (all stages)",
    )
    faults.add_argument(
        "--ignore-interrupt",
        type=int,
        default=d.ignore_interrupt,
        metavar="N",
        help="with --bootloader: the first N attempts to interrupt the autoboot countdown "
        "are ignored (an attempt: keys typed less than 0.15 s apart)",
    )
    faults.add_argument(
        "--reset-loop",
        action="store_true",
        help="with --bootloader: the board resets a few kernel lines after 'Starting "
        "kernel ...', back to the bootloader banner, again and again",
    )
    faults.add_argument(
        "--baud",
        type=int,
        default=None,
        metavar="N",
        help="pace output like a serial line at N baud (10 bits a byte)",
    )
    faults.add_argument(
        "--burst-mb",
        type=float,
        default=None,
        metavar="N",
        help="after the shell starts, print N MB of numbered lines",
    )
    faults.add_argument(
        "--burst-after",
        type=float,
        default=d.burst_after,
        metavar="SECONDS",
        help="delay before the burst (default: %(default)s)",
    )
