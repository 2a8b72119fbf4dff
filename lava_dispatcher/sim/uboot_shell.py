"""The simulated U-Boot's command interpreter (the commands: `uboot_cmds`).

`Interpreter.execute(line)` is a generator: it yields how many seconds to
wait (`sleep`) and returns the status of the last command (0: success), so
the stage can run it on the event loop without blocking. Commands print
through the `Host` (the bootloader stage), which also starts Linux, resets
the board and keeps the saved environment. What the network and boot
commands do is here too (`tftp`, `boot_linux`); messages are U-Boot 2023.01's.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import Protocol

from lava_dispatcher.sim.config import SimConfig
from lava_dispatcher.sim.uboot_env import (
    ENV_SIZE,
    ETHERNET,
    RAM_START,
    RESERVED_START,
    assignment,
    env_size,
    expand_words,
    format_size,
    parse_hex,
    split_commands,
)
from lava_dispatcher.sim.uboot_image import (
    ARCH_ARM,
    ARCH_ARM64,
    ARCH_NAMES,
    OS_LINUX,
    TYPE_KERNEL,
    TYPE_RAMDISK,
    LegacyImage,
    Memory,
    tftp_read,
)

Run = Generator[float, None, int]
SUCCESS, FAILURE, USAGE = 0, 1, -1
MAX_RUN_DEPTH = 64
# TFTP: U-Boot's block size and a '#' every 10 blocks, 65 to a line
TFTP_BLOCK = 1468
HASHES_PER_LINE = 65
TFTP_RATE = 11 * 1024 * 1024  # the notional transfer rate, bytes per second
FDT_PAD = 0x3000
ALL_ONES = 0xFFFF_FFFF_FFFF_FFFF
# booti boots arm64 Images, bootz arm zImages, bootm either (from a uImage)
BOOT_ARCHES = {"booti": (ARCH_ARM64,), "bootz": (ARCH_ARM,), "bootm": (ARCH_ARM64, ARCH_ARM)}
BAD_KERNEL = {
    "booti": "Bad Linux ARM64 Image magic!",
    "bootz": "zimage: Bad magic!",
    "bootm": "Wrong Image Format for bootm command\nERROR: can't get kernel image!",
}


class Host(Protocol):
    """What the interpreter needs from the board."""

    def write(self, text: str) -> None: ...

    def start_linux(self, ramdisk: bytes | None, cmdline: str | None) -> None: ...

    def reset(self) -> None: ...

    def save_env(self, env: dict[str, str]) -> None: ...

    def board_ramdisk(self) -> bool: ...


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    usage: str
    run: Callable[[Interpreter, list[str]], int | Run]


class Interpreter:
    """One boot's U-Boot: environment, hush variables, RAM, commands."""

    def __init__(
        self,
        config: SimConfig,
        env: dict[str, str],
        host: Host,
        commands: Mapping[str, Command],
    ) -> None:
        self.config = config
        self.env = env
        self.host = host
        self.commands = commands
        self.locals: dict[str, str] = {}
        self.memory = Memory()
        self.status = SUCCESS
        self.halted = False  # Linux started or the board reset: stop here
        self.depth = 0
        self.load_addr = parse_hex(env.get("loadaddr", "")) or RAM_START

    def write(self, text: str) -> None:
        self.host.write(text)

    def lookup(self, name: str) -> str | None:
        if name == "?":
            return str(self.status)
        return self.locals.get(name, self.env.get(name))

    # -- running command lines ------------------------------------------------

    def execute(self, line: str) -> Run:
        """Run a command line; return the status of the last command run."""
        split = split_commands(line)
        if split.incomplete:
            self.write("syntax error\n")
            return FAILURE
        status = SUCCESS
        for connector, text in split.commands:
            if self.halted:
                break
            if (connector == "&&" and status != SUCCESS) or (
                connector == "||" and status == SUCCESS
            ):
                continue
            status = yield from self._run_one(text)
            self.status = status
        return status

    def _run_one(self, text: str) -> Run:
        assign = assignment(text)
        if assign is not None:
            name, value = assign
            self.locals[name] = " ".join(expand_words(value, self.lookup))
            return SUCCESS
        argv = expand_words(text, self.lookup)
        if not argv:
            return SUCCESS
        command = find_command(self.commands, argv[0])
        if command is None:
            self.write(f"Unknown command '{argv[0]}' - try 'help'\n")
            return FAILURE
        result = command.run(self, argv)
        status = (yield from result) if inspect.isgenerator(result) else result
        assert isinstance(status, int)
        if status == USAGE:
            self.write(usage_text(command))
            return FAILURE
        return status

    # -- environment ------------------------------------------------------------

    def set_env(self, name: str, value: str | None) -> int:
        if "=" in name:
            self.write(f"## Error: illegal character '=' in variable name \"{name}\"\n")
            return FAILURE
        if value is None:
            self.env.pop(name, None)
        else:
            self.env[name] = value
            if name == "loadaddr":
                self.load_addr = parse_hex(value) or self.load_addr
        return SUCCESS

    def print_env(self, names: list[str]) -> int:
        if not names:
            for name in sorted(self.env):
                self.write(f"{name}={self.env[name]}\n")
            self.write(f"\nEnvironment size: {env_size(self.env)}/{ENV_SIZE} bytes\n")
            return SUCCESS
        status = SUCCESS
        for name in names:
            if name in self.env:
                self.write(f"{name}={self.env[name]}\n")
            else:
                self.write(f'## Error: "{name}" not defined\n')
                status = FAILURE
        return status

    # -- network ----------------------------------------------------------------

    def tftp(self, addr: int, filename: str) -> int:
        server = self.env.get("serverip")
        host, colon, rest = filename.partition(":")
        if colon and is_ip(host):
            server, filename = host, rest
        if not server:
            self.write("*** ERROR: `serverip' not set\n")
            return FAILURE
        if not self.env.get("ipaddr"):
            self.write("*** ERROR: `ipaddr' not set\n")
            return FAILURE
        self.env["ethact"] = ETHERNET
        self.write(
            f"Using {ETHERNET} device\n"
            f"TFTP from server {server}; our IP address is {self.env['ipaddr']}\n"
            f"Filename '{filename}'.\nLoad address: 0x{addr:x}\nLoading: *\b"
        )
        data = tftp_read(self.config.tftp_root, filename)
        if isinstance(data, tuple):
            code, message = data
            self.write(f"\nTFTP error: '{message}' ({code})\nNot retrying...\n")
            return FAILURE
        if addr < RAM_START or addr + len(data) > RESERVED_START:
            self.write("\nTFTP error: trying to overwrite reserved memory...\n")
            return FAILURE
        self.write(_hashes(len(data)))
        elapsed_ms = len(data) * 1000 // TFTP_RATE
        if elapsed_ms:
            self.write("\n\t " + format_size(len(data) * 1000 // elapsed_ms, "/s"))
        self.write(f"\ndone\nBytes transferred = {len(data)} ({len(data):x} hex)\n")
        self.memory.write(addr, data)
        self.env["filesize"] = f"{len(data):x}"
        self.env["fileaddr"] = f"{addr:x}"
        self.load_addr = addr
        return SUCCESS

    # -- booting ------------------------------------------------------------------

    def boot_linux(self, kind: str, args: list[str]) -> int:
        """booti/bootz/bootm KERNEL [RAMDISK[:SIZE]|-] [FDT]"""
        kernel_addr = parse_hex(args[0]) if args else self.load_addr
        kernel = None if kernel_addr is None else self.memory.read(kernel_addr)
        if kernel_addr is None or kernel is None:
            self.write(BAD_KERNEL[kind] + "\n")
            return FAILURE
        legacy = LegacyImage.parse(kernel) if kind == "bootm" else None
        if legacy is not None and not self._check_legacy(
            legacy, "Booting kernel", kernel_addr, TYPE_KERNEL, BOOT_ARCHES[kind]
        ):
            self.write("ERROR: can't get kernel image!\n")
            return FAILURE
        ramdisk = None
        if len(args) > 1 and args[1] != "-":
            ramdisk = self._ramdisk(args[1], BOOT_ARCHES[kind])
            if ramdisk is None:
                self.write("Ramdisk image is corrupt or invalid\n")
                return FAILURE
        fdt: tuple[int, int] | None = None
        if len(args) > 2:
            fdt_addr = parse_hex(args[2])
            blob = None if fdt_addr is None else self.memory.read(fdt_addr)
            if fdt_addr is None or blob is None:
                self.write(
                    "ERROR: Did not find a cmdline Flattened Device Tree\n"
                    "Could not find a valid device tree\n"
                )
                return FAILURE
            fdt = (fdt_addr, len(blob))
        self.hand_over(ramdisk, fdt, self.env.get("bootargs"), kernel_image=legacy is not None)
        return SUCCESS

    def _check_legacy(
        self, image: LegacyImage, what: str, addr: int, kind: int, arches: tuple[int, ...]
    ) -> bool:
        self.write(f"## {what} from Legacy Image at {addr:08x} ...\n")
        if not image.header_ok():
            self.write("Bad Header Checksum\n")
            return False
        self.write("\n".join(image.describe(format_size(image.size))) + "\n")
        self.write("   Verifying Checksum ... ")
        if not image.data_ok():
            self.write("Bad Data CRC\n")
            return False
        self.write("OK\n")
        if image.os != OS_LINUX or image.arch not in arches or image.type != kind:
            arch = ARCH_NAMES[arches[0]]
            self.write(f"No Linux {arch} {'Ramdisk' if kind == TYPE_RAMDISK else 'Kernel'} Image\n")
            return False
        return True

    def _ramdisk(self, spec: str, arches: tuple[int, ...]) -> bytes | None:
        """The ramdisk at ADDR[:SIZE], as the kernel gets it (None: refused)."""
        addr_text, colon, size_text = spec.partition(":")
        addr = parse_hex(addr_text)
        data = None if addr is None else self.memory.read(addr)
        legacy = None if data is None else LegacyImage.parse(data)
        if addr is not None and legacy is not None:
            ok = self._check_legacy(legacy, "Loading init Ramdisk", addr, TYPE_RAMDISK, arches)
            return legacy.payload if ok else None
        size = parse_hex(size_text) if colon else None
        if data is None or size is None:
            self.write("Wrong Ramdisk Image Format\n")
            return None
        return data[:size]

    def hand_over(
        self,
        ramdisk: bytes | None,
        fdt: tuple[int, int] | None,
        cmdline: str | None,
        *,
        kernel_image: bool = False,
    ) -> None:
        """Print the last lines of a boot (where the ramdisk and the device
        tree (address, size) go), then start Linux."""
        top = RESERVED_START
        if fdt is not None:
            self.write(
                f"## Flattened Device Tree blob at {fdt[0]:08x}\n"
                f"   Booting using the fdt blob at 0x{fdt[0]:x}\n"
                f"Working FDT set to {fdt[0]:x}\n"
            )
        if kernel_image:
            self.write("   Loading Kernel Image\n")
        initrd_high = parse_hex(self.env.get("initrd_high", ""))
        if ramdisk and initrd_high != ALL_ONES:
            limit = min(top, initrd_high + 1) if initrd_high else top
            start = (limit - len(ramdisk)) & ~0xFFF
            self.write(
                f"   Loading Ramdisk to {start:08x}, end {start + len(ramdisk):08x} ... OK\n"
            )
            top = start
        if fdt is not None:
            total = fdt[1] + FDT_PAD
            if parse_hex(self.env.get("fdt_high", "")) == ALL_ONES:
                where = f"{fdt[0]:016x}, end {fdt[0] + total - 1:016x}"
                self.write(f"   Using Device Tree in place at {where}\n")
            else:
                start = (top - total) & ~0xFFF
                self.write(
                    f"   Loading Device Tree to {start:016x}, end {start + total - 1:016x} ... OK\n"
                    f"Working FDT set to {start:x}\n"
                )
        self.write("\nStarting kernel ...\n\n")
        self.halted = True
        self.host.start_linux(ramdisk, cmdline)


def is_ip(text: str) -> bool:
    parts = text.split(".")
    return len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts)


def _hashes(size: int) -> str:
    """TFTP progress: '#' every 10 blocks, a new line every 650."""
    out = []
    for block in range(1, size // TFTP_BLOCK + 2):
        if (block - 1) % 10 == 0:
            out.append("#")
        elif block % (10 * HASHES_PER_LINE) == 0:
            out.append("\n\t ")
    return "".join(out)


def usage_text(command: Command) -> str:
    return f"{command.name} - {command.summary}\n\nUsage:\n{command.name} {command.usage}\n"


def find_command(commands: Mapping[str, Command], name: str) -> Command | None:
    """The command named `name`, or the only one whose name starts with it
    (U-Boot takes unambiguous abbreviations: 'tftp', 'print')."""
    if name in commands:
        return commands[name]
    matches = [command for key, command in commands.items() if key.startswith(name)]
    return matches[0] if len(matches) == 1 else None
