"""A barebox-like bootloader for the simulated board (`--bootloader barebox`).

At power-on and every reset (as LAVA's barebox constants expect: interrupt
prompt 'Hit m for menu or any other key to stop autoboot', interrupt
character a newline, final message 'Starting kernel', errors 'ERROR: .*'):

    barebox 2023.01.0-sim #1 Tue Jan 10 00:00:00 UTC 2023
    Board: LAVA simulated board
    ...
    Hit m for menu or any other key to stop autoboot:    2

The countdown (`--autoboot-delay`) counts down in place. Any key stops it
(`m` too: the simulator has no boot menu) and is used up; the prompt is
`barebox@LAVA simulated board:/ `. Else the board boots its own kernel.

The shell is hush, as U-Boot's (see `uboot_env`), with barebox's
variables: `global.NAME` (`global NAME=VALUE`, or the assignment
`global.NAME=VALUE`), the card's `eth0.ipaddr`, `eth0.serverip`... and
locals. Commands:

    global [-r] [NAME[=VALUE]...]  list, set or remove global variables
    dhcp [eth0], ifup eth0     configure eth0 (global.net.server: the server)
    tftp SOURCE [DEST]         copy SOURCE from the TFTP server into RAM (/DEST)
    ls [DIR]                   what `tftp` copied (/) or the server has (/mnt/tftp)
    bootm [-v] [-r INITRD] [-o OFTREE] [-a ADDR] [-L ADDR] [-e ENTRY] [-d] [IMAGE]
                               boot IMAGE (global.bootm.image) with INITRD (a
                               uImage's header is dropped) and a command line
                               made of the global.linux.bootargs.* variables
    boot [net]                 net: bootm of /mnt/tftp/<global.user>-linux-
                               <global.hostname> over NFS (barebox's default
                               net entry); else the board's own boot
    echo [-n] ..., sleep N, reset, version, true, false, help

Files under `/mnt/tftp/` are read from the TFTP server (`--tftp-root`,
eth0 brought up on first use). A missing one: `ERROR: could not open
/mnt/tftp/...: No such file or directory`, a bad uImage ramdisk `ERROR:
...`, both matched by LAVA's 'ERROR: .*'.
"""

from __future__ import annotations

import re

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
    split_args,
)
from lava_dispatcher.sim.uboot_env import expand_words
from lava_dispatcher.sim.uboot_image import LegacyImage

MODEL = "LAVA simulated board"
PROMPT = f"barebox@{MODEL}:/ "
VERSION = "2023.01.0-sim"
TFTP_MOUNT = "/mnt/tftp/"
CARD = "eth0"
ASSIGNMENT = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_.]*)=(.*)\Z", re.DOTALL)


class Barebox(Firmware):
    """The board's barebox."""

    name = "barebox"
    default_prompt = PROMPT

    def make_stage(self, dut: SimDUT) -> ConsoleStage:
        return BareboxStage(dut, self)


class BareboxStage(ShellStage):
    """One boot's barebox: banner, countdown, hush."""

    def __init__(self, dut: SimDUT, firmware: Barebox) -> None:
        super().__init__(dut, firmware)
        self.shell = BareboxShell(self)

    def banner(self) -> None:
        self.write(
            f"\n\nbarebox {VERSION} #1 Tue Jan 10 00:00:00 UTC 2023\n\n\n"
            f"Board: {MODEL}\n"
            f"{CARD}: got preset MAC address: {MAC}\n"
            "mmc0: detected SD card version 2.0\n"
            "mmc0: registered mmc0\n"
            "malloc space: 0x9fe00000 -> 0x9fffffff (size 2 MiB)\n"
            "running /env/bin/init...\n\n"
        )

    def countdown_text(self, remaining: int, first: bool) -> str:
        start = "Hit m for menu or any other key to stop autoboot: " if first else "\b\b\b\b"
        return f"{start}{remaining:4d}"

    def interrupted(self, data: bytes) -> bytes:
        self.write("\n\ntype exit to get to the menu\n")
        return super().interrupted(data)

    def autoboot(self) -> None:
        self.write("Booting entry 'mmc0'\n")
        self.boot_board()


class BareboxShell(Shell):
    """barebox's commands and variables."""

    COMMANDS = {
        "boot": "boot from a boot entry or device",
        "bootm": "boot an application image",
        "dhcp": "DHCP client to obtain IP or boot params",
        "echo": "echo args to console",
        "false": "do nothing, unsuccessfully",
        "global": "create or set global variables",
        "help": "print online help",
        "ifup": "bring up a network interface",
        "ls": "list a file or directory",
        "reset": "perform RESET of the CPU",
        "sleep": "delay execution for n seconds",
        "tftp": "load (or save) a file using TFTP",
        "true": "do nothing, successfully",
        "version": "print barebox version",
    }

    def __init__(self, stage: BareboxStage) -> None:
        super().__init__(stage)
        self.globals: dict[str, str] = {
            "hostname": "sim",
            "user": "none",
            "model": MODEL,
            "version": VERSION,
            "boot.default": "mmc0",
            "linux.bootargs.console": "console=ttyAMA0,115200n8",
        }
        self.card: dict[str, str] = {"ethaddr": MAC, "ip": "dhcp"}
        self.files: dict[str, bytes] = {}  # what `tftp` copied into RAM, by path

    # -- variables -----------------------------------------------------------------

    def lookup(self, name: str) -> str | None:
        scope, _, rest = name.partition(".")
        if scope == "global" and rest:
            return self.globals.get(rest)
        if scope == CARD and rest:
            return self.card.get(rest)
        return self.variables.get(name)

    def assignment(self, text: str) -> tuple[str, str] | None:
        match = ASSIGNMENT.match(text)
        if match is None:
            return None
        value = match.group(2).strip(" \t")
        if len(expand_words(value, lambda name: None)) > 1:
            return None
        return match.group(1), value

    def assign(self, name: str, value: str) -> None:
        scope, _, rest = name.partition(".")
        if scope == "global" and rest:
            self.globals[rest] = value
        elif scope == CARD and rest:
            self.card[rest] = value
        else:
            self.variables[name] = value

    def bootargs(self) -> str:
        prefix = "linux.bootargs."
        names = sorted(name for name in self.globals if name.startswith(prefix))
        return " ".join(self.globals[name] for name in names if self.globals[name])

    def do_global(self, argv: list[str]) -> int:
        args = argv[1:]
        if not args:
            for name in sorted(self.globals):
                self.write(f"  {name}: {self.globals[name]}\n")
            return SUCCESS
        if args[0] == "-r":
            for prefix in args[1:]:
                for name in [n for n in self.globals if n.startswith(prefix)]:
                    del self.globals[name]
            return SUCCESS
        for arg in args:
            name, _, value = arg.partition("=")
            self.globals[name] = value
        return SUCCESS

    def do_echo(self, argv: list[str]) -> int:
        words = argv[1:]
        newline = "\n"
        while words and words[0] in ("-n", "-e"):
            if words.pop(0) == "-n":
                newline = ""
        self.write(" ".join(words) + newline)
        return SUCCESS

    def do_true(self, argv: list[str]) -> int:
        return SUCCESS

    def do_false(self, argv: list[str]) -> int:
        return FAILURE

    def do_version(self, argv: list[str]) -> int:
        self.write(f"\nbarebox {VERSION} #1 Tue Jan 10 00:00:00 UTC 2023\n\n")
        return SUCCESS

    def do_reset(self, argv: list[str]) -> int:
        self.stage.reset()
        return SUCCESS

    # -- network and files ----------------------------------------------------------

    def do_dhcp(self, argv: list[str]) -> int:
        if argv[1:] and argv[1] != CARD:
            self.write(f"ERROR: dhcp: no such device: {argv[1]}\n")
            return FAILURE
        self.card.update(
            {
                "ipaddr": LEASE["ipaddr"],
                "netmask": LEASE["netmask"],
                "gateway": LEASE["gatewayip"],
                "serverip": LEASE["serverip"],
            }
        )
        self.globals["net.server"] = LEASE["serverip"]
        self.globals.setdefault("dhcp.bootfile", "")
        self.write(f"{CARD}: DHCP client bound to address {LEASE['ipaddr']}\n")
        return SUCCESS

    def do_ifup(self, argv: list[str]) -> int:
        if argv[1:2] != [CARD]:
            self.write("ifup: no such interface\n" if argv[1:] else "usage: ifup <interface>\n")
            return FAILURE
        return self.do_dhcp(argv)

    def read(self, path: str) -> bytes | None:
        """A file: /mnt/tftp/... from the TFTP server, else one `tftp` copied
        (its error printed: None)."""
        if path.startswith(TFTP_MOUNT):
            if "ipaddr" not in self.card:
                self.do_dhcp(["dhcp"])
            data = self.fetch(path[len(TFTP_MOUNT) :])
            if isinstance(data, bytes):
                return data
        else:
            found = self.files.get("/" + path.lstrip("/"))
            if found is not None:
                return found
        self.write(f"ERROR: could not open {path}: No such file or directory\n")
        return None

    def do_tftp(self, argv: list[str]) -> int:
        args = [a for a in argv[1:] if a != "-p"]
        if not args or len(args) > 2:
            self.write("tftp - load (or save) a file using TFTP\n\nUsage: tftp <source> [dest]\n")
            return FAILURE
        source = args[0]
        dest = "/" + (args[1] if len(args) > 1 else source.rsplit("/", 1)[-1]).lstrip("/")
        if "ipaddr" not in self.card:
            self.do_dhcp(["dhcp"])
        data = self.fetch(source)
        if isinstance(data, tuple):
            self.write(f"ERROR: tftp: could not open {source}: No such file or directory\n")
            return FAILURE
        self.write(f"\t[{'#' * 40}] {len(data)} bytes\n")
        self.files[dest] = data
        return SUCCESS

    def do_ls(self, argv: list[str]) -> int:
        where = argv[1] if len(argv) > 1 else "/"
        if where.rstrip("/") + "/" == TFTP_MOUNT:
            self.write("ls: reading directory: Operation not supported\n")
            return FAILURE
        names = sorted(p[1:] for p in self.files)
        self.write("  ".join(["dev", "env", "mnt", *names]) + "\n")
        return SUCCESS

    # -- booting ------------------------------------------------------------------

    def do_bootm(self, argv: list[str]) -> int:
        parsed = split_args(argv[1:], flags="vfdc", valued="roaeLs")
        if parsed is None or len(parsed[1]) > 1:
            self.write("bootm: invalid option\nUsage: bootm [OPTIONS] image\n")
            return FAILURE
        options, rest = parsed
        image = rest[0] if rest else self.globals.get("bootm.image", "")
        initrd = options.get("r", self.globals.get("bootm.initrd", ""))
        oftree = options.get("o", self.globals.get("bootm.oftree", ""))
        verbose = "v" in options
        if not image:
            self.write("ERROR: no image given\n")
            return FAILURE
        return self.boot(image, initrd, oftree, verbose, dryrun="d" in options)

    def boot(self, image: str, initrd: str, oftree: str, verbose: bool, dryrun: bool) -> int:
        if self.read(image) is None:
            return FAILURE
        if verbose:
            self.write(f"\nLoading ARM Linux zImage '{image}'\n")
        ramdisk = None
        if oftree:
            if self.read(oftree) is None:
                return FAILURE
            if verbose:
                self.write(f"Loading devicetree from '{oftree}'\n")
        if initrd:
            data = self.read(initrd)
            if data is None:
                return FAILURE
            ramdisk = self.ramdisk(initrd, data)
            if ramdisk is None:
                return FAILURE
            if verbose:
                self.write(f"Loading ramdisk from '{initrd}'\n")
        cmdline = self.bootargs()
        if verbose:
            self.write(f"commandline: {cmdline}\n")
        if dryrun:
            self.write("Dryrun. Aborted.\n")
            return SUCCESS
        self.write("Starting kernel in secure mode\n")
        self.stage.start_linux(ramdisk, cmdline)
        return SUCCESS

    def ramdisk(self, path: str, data: bytes) -> bytes | None:
        """The initramfs in `data`: a uImage's payload, or the file itself."""
        legacy = LegacyImage.parse(data)
        if legacy is None:
            return data
        if not legacy.header_ok() or not legacy.data_ok():
            self.write(f"ERROR: {path}: bad uImage checksum\n")
            return None
        return legacy.payload

    def do_boot(self, argv: list[str]) -> int:
        parsed = split_args(argv[1:], flags="vdl", valued="t")
        if parsed is None:
            self.write("boot: invalid option\n")
            return FAILURE
        options, rest = parsed
        entry = rest[0] if rest else self.globals.get("boot.default", "")
        if entry != "net":
            self.write(f"Booting entry '{entry}'\n")
            self.stage.boot_board()
            return SUCCESS
        user, host = self.globals.get("user", "none"), self.globals.get("hostname", "sim")
        nfsroot = f"/home/{user}/nfsroot/{host}"
        self.globals.setdefault(
            "linux.bootargs.dyn.root", f"root=/dev/nfs nfsroot={nfsroot},v3,tcp"
        )
        image = f"{TFTP_MOUNT}{user}-linux-{host}"
        return self.boot(image, "", "", verbose="v" in options, dryrun="d" in options)
