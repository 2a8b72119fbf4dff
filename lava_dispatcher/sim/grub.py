"""A GRUB-like bootloader for the simulated board (`--bootloader grub`).

At power-on and every reset, GRUB 2's menu on a serial console (as LAVA's
grub constants expect: interrupt prompt 'for a command-line', interrupt
character 'c' sent without a newline, prompt 'grub>'):

    GNU GRUB  version 2.06 (sim)
    (the menu: one entry, the board's own boot)
    Press enter to boot the selected OS, `e' to edit the commands
    before booting or `c' for a command-line.
    The highlighted entry will be executed automatically in 2s.

The countdown (`--autoboot-delay`, GRUB's timeout) is rewritten in place
each second. `c` opens the command line (`grub> `); Enter, or the end of
the countdown, boots the entry (the board's own kernel and root); any
other key stops the countdown and leaves the menu waiting.

Commands (GRUB 2.06's messages, errors as `error: ...`):

    net_bootp [CARD]          configure efinet0 by DHCP (net_default_server...)
    net_add_addr NAME CARD IP, net_ls_addr, net_ls_cards, net_add_route, net_add_dns
    linux FILE [ARGS...]      load the kernel (any content), ARGS its command line
    initrd FILE...            load the initramfs (files concatenated)
    devicetree FILE           load a device tree
    boot                      start Linux with that initramfs and command line
    insmod MODULE, clear, set [NAME=VALUE], unset NAME, echo [-n] ...,
    ls [DEVICE], sleep N, reboot, help

FILE is `(tftp,SERVER)/path`, `(tftp)/path` (the DHCP server), or a path
on `$root`; TFTP files come from `--tftp-root`. A file the server does not
have gives `error: file '/path' not found.`, TFTP before the network is
configured `error: destination unreachable.`, a disk other than hd0
`error: disk 'hdX' not found.`, `initrd`/`boot` before `linux`
`error: you need to load the kernel first.`: all in LAVA's grub
error-messages. `name=value` sets a variable, as `set` does.
"""

from __future__ import annotations

from lava_dispatcher.sim.dut import SimDUT
from lava_dispatcher.sim.loader import (
    FAILURE,
    LEASE,
    MAC,
    SUCCESS,
    ConsoleStage,
    Firmware,
    Shell,
    ShellStage,
)

PROMPT = "grub> "
VERSION = "2.06"
CARD = "efinet0"
ENTRY = "LAVA simulated board"
WIDTH = 76
# modules `insmod` finds (the others are not on the EFI system partition)
MODULES = frozenset(
    [
        "boot",
        "chain",
        "configfile",
        "echo",
        "efinet",
        "ext2",
        "fat",
        "fdt",
        "gzio",
        "http",
        "linux",
        "loadenv",
        "ls",
        "net",
        "normal",
        "part_gpt",
        "part_msdos",
        "reboot",
        "search",
        "search_fs_uuid",
        "search_label",
        "sleep",
        "test",
        "tftp",
    ]
)
DISKS = ("hd0", "hd0,gpt1", "hd0,gpt2")
ENTER_KEYS = (10, 13)


class Grub(Firmware):
    """The board's GRUB (nothing outlives a boot but the ignored interrupts)."""

    name = "grub"
    default_prompt = PROMPT

    def make_stage(self, dut: SimDUT) -> ConsoleStage:
        return GrubStage(dut, self)


class GrubStage(ShellStage):
    """One boot's GRUB: the menu and its countdown, then the command line."""

    cancel_text = "\n"

    def __init__(self, dut: SimDUT, firmware: Grub) -> None:
        super().__init__(dut, firmware)
        self.shell = GrubShell(self)

    def banner(self) -> None:
        rule = " +" + "-" * WIDTH + "+\n"
        self.write(
            f"\n{'GNU GRUB  version ' + VERSION + ' (sim)':^80}\n\n"
            + rule
            + f" |*{ENTRY:<{WIDTH - 1}}|\n"
            + rule
            + "\n      Use the ^ and v keys to select which entry is highlighted.\n"
            "      Press enter to boot the selected OS, `e' to edit the commands\n"
            "      before booting or `c' for a command-line.\n"
        )

    def countdown_text(self, remaining: int, first: bool) -> str:
        start = "" if first else "\r"
        return f"{start}   The highlighted entry will be executed automatically in {remaining}s. "

    def interrupted(self, data: bytes) -> bytes:
        self.write("\n")
        self.state = "menu"
        return self.other_input(data)

    def other_input(self, data: bytes) -> bytes:
        """The menu: `c` for the command line, Enter to boot, the rest ignored."""
        for index, byte in enumerate(data):
            if byte == ord("c"):
                self.command_line()
                return data[index + 1 :]
            if byte in ENTER_KEYS:
                self.state = "booting"
                self.autoboot()
                return b""
        return b""

    def command_line(self) -> None:
        self.write(
            f"\n{'GNU GRUB  version ' + VERSION + ' (sim)':^80}\n\n"
            "   Minimal BASH-like line editing is supported. For the first word, TAB\n"
            "   lists possible command completions. Anywhere else TAB lists possible\n"
            "   device or file completions. ESC at any time exits.\n\n\n"
        )
        self._prompt()

    def autoboot(self) -> None:
        self.write(f"  Booting `{ENTRY}'\n\n")
        self.boot_board()


class GrubShell(Shell):
    """GRUB's commands, and what they have loaded for `boot`."""

    COMMANDS = {
        "boot": "Boot the loaded kernel",
        "clear": "Clear the screen",
        "devicetree": "Load a device tree blob",
        "echo": "Display a line of text",
        "help": "Show a help message",
        "initrd": "Load an initrd",
        "insmod": "Insert a module",
        "linux": "Load Linux",
        "ls": "List devices and files",
        "net_add_addr": "Add a network address",
        "net_add_dns": "Add a DNS server",
        "net_add_route": "Add a network route",
        "net_bootp": "Perform a bootp autoconfiguration",
        "net_ls_addr": "List network addresses",
        "net_ls_cards": "List network cards",
        "reboot": "Reboot the computer",
        "set": "Set an environment variable",
        "sleep": "Wait for a specified number of seconds",
        "unset": "Remove an environment variable",
    }
    syntax_error = "error: syntax error.\n"

    def __init__(self, stage: GrubStage) -> None:
        super().__init__(stage)
        self.variables.update(
            {"root": "hd0,gpt1", "prefix": "(hd0,gpt1)/EFI/BOOT", "grub_platform": "efi"}
        )
        self.address: str | None = None
        self.kernel: tuple[str, list[str]] | None = None  # (file, arguments)
        self.initrd: bytes | None = None
        self.fdt: bytes | None = None

    def error(self, message: str) -> int:
        self.write(f"error: {message}.\n")
        return FAILURE

    def unknown(self, name: str) -> None:
        self.error(f"can't find command `{name}'")

    # -- files -------------------------------------------------------------------

    def load(self, path: str) -> bytes | None:
        """The file `path` names (its error printed: None)."""
        device = self.variables.get("root", "")
        if path.startswith("("):
            device, closing, path = path[1:].partition(")")
            if not closing:
                self.error("missing `)' in device name")
                return None
        kind, _, server = device.partition(",")
        if kind != "tftp":
            if device not in DISKS:
                self.error(f"disk '{device}' not found")
            else:
                self.error(f"file '{path}' not found")
            return None
        server = server or self.variables.get("net_default_server", "")
        if not server:
            self.error("no server is specified")
            return None
        if self.address is None:
            self.error("destination unreachable")
            return None
        data = self.fetch(path)
        if isinstance(data, tuple):
            code, message = data
            if code == 1:
                self.error(f"file '{path}' not found")
            else:
                self.error(f"{message.lower()}")
            return None
        return data

    # -- network -----------------------------------------------------------------

    def configure(self, card: str, address: str, dhcp: bool) -> None:
        self.address = address
        self.variables[f"net_{card}_ip"] = address
        self.variables[f"net_{card}_mac"] = MAC
        self.variables["net_default_ip"] = address
        self.variables["net_default_mac"] = MAC
        self.variables["net_default_interface"] = card
        if dhcp:
            self.variables[f"net_{card}_next_server"] = LEASE["serverip"]
            self.variables[f"net_{card}_dhcp_server_name"] = LEASE["serverip"]
            self.variables.setdefault("net_default_server", LEASE["serverip"])

    def do_net_bootp(self, argv: list[str]) -> int:
        card = argv[1] if len(argv) > 1 else CARD
        if card != CARD:
            return self.error(f"no such device: {card}")
        self.configure(card, LEASE["ipaddr"], dhcp=True)
        return SUCCESS

    def do_net_add_addr(self, argv: list[str]) -> int:
        if len(argv) != 4:
            return self.error("three arguments expected")
        if argv[2] != CARD:
            return self.error("card not found")
        self.configure(argv[2], argv[3], dhcp=False)
        return SUCCESS

    def do_net_add_route(self, argv: list[str]) -> int:
        return SUCCESS if len(argv) >= 3 else self.error("three arguments expected")

    def do_net_add_dns(self, argv: list[str]) -> int:
        return SUCCESS if len(argv) == 2 else self.error("one argument expected")

    def do_net_ls_addr(self, argv: list[str]) -> int:
        if self.address is not None:
            self.write(f"{CARD}:dhcp {MAC} {self.address}\n")
        return SUCCESS

    def do_net_ls_cards(self, argv: list[str]) -> int:
        self.write(f"{CARD} {MAC}\n")
        return SUCCESS

    # -- loading and booting --------------------------------------------------------

    def do_linux(self, argv: list[str]) -> int:
        if len(argv) < 2:
            return self.error("filename expected")
        self.kernel = None
        self.initrd = None
        if self.load(argv[1]) is None:
            return FAILURE
        self.kernel = (argv[1], argv[2:])
        return SUCCESS

    def do_initrd(self, argv: list[str]) -> int:
        if len(argv) < 2:
            return self.error("filename expected")
        if self.kernel is None:
            return self.error("you need to load the kernel first")
        parts = []
        for path in argv[1:]:
            data = self.load(path)
            if data is None:
                return FAILURE
            parts.append(data)
        self.initrd = b"".join(parts)
        return SUCCESS

    def do_devicetree(self, argv: list[str]) -> int:
        if len(argv) != 2:
            return self.error("filename expected")
        data = self.load(argv[1])
        if data is None:
            return FAILURE
        self.fdt = data
        return SUCCESS

    def do_boot(self, argv: list[str]) -> int:
        if self.kernel is None:
            return self.error("you need to load the kernel first")
        path, args = self.kernel
        self.write("EFI stub: Booting Linux Kernel...\nEFI stub: Exiting boot services...\n")
        image = path.split(")", 1)[-1]
        self.stage.start_linux(self.initrd, " ".join([f"BOOT_IMAGE={image}", *args]))
        return SUCCESS

    def do_reboot(self, argv: list[str]) -> int:
        self.stage.reset()
        return SUCCESS

    # -- the rest ------------------------------------------------------------------

    def do_insmod(self, argv: list[str]) -> int:
        if len(argv) != 2:
            return self.error("one argument expected")
        if argv[1] not in MODULES:
            prefix = self.variables.get("prefix", "").split(")", 1)[-1]
            return self.error(f"file '{prefix}/arm64-efi/{argv[1]}.mod' not found")
        return SUCCESS

    def do_clear(self, argv: list[str]) -> int:
        return SUCCESS

    def do_set(self, argv: list[str]) -> int:
        if len(argv) == 1:
            for name in sorted(self.variables):
                self.write(f"{name}={self.variables[name]}\n")
            return SUCCESS
        name, _, value = argv[1].partition("=")
        self.variables[name] = value
        return SUCCESS

    def do_unset(self, argv: list[str]) -> int:
        for name in argv[1:]:
            self.variables.pop(name, None)
        return SUCCESS

    def do_echo(self, argv: list[str]) -> int:
        words = argv[1:]
        newline = "\n"
        while words and words[0] in ("-n", "-e"):
            if words.pop(0) == "-n":
                newline = ""
        self.write(" ".join(words) + newline)
        return SUCCESS

    def do_ls(self, argv: list[str]) -> int:
        if len(argv) == 1:
            devices = [f"({d})" for d in DISKS]
            if self.address is not None:
                devices.append("(tftp)")
            self.write(" ".join(devices) + "\n")
            return SUCCESS
        device = argv[1].strip("()")
        if device not in DISKS:
            return self.error(f"disk '{device}' not found")
        self.write(f"        Partition {device}: Filesystem type ext* - Label `rootfs'\n")
        return SUCCESS
