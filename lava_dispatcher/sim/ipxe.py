"""An iPXE-like network bootloader for the simulated board (`--bootloader ipxe`).

At power-on and every reset (as LAVA's ipxe constants expect: interrupt
prompt 'Press Ctrl-B for the iPXE command line', interrupted with Ctrl-B
and no newline, prompt 'iPXE>'):

    iPXE 1.21.1+ (sim) -- Open Source Network Boot Firmware -- https://ipxe.org
    Features: DNS HTTP TFTP ... bzImage Menu PXEXT

    Press Ctrl-B for the iPXE command line...

iPXE waits `--autoboot-delay` seconds without a visible countdown. Ctrl-B
gives the prompt `iPXE> `; any other key, like the end of the wait, goes
on booting (the board's own kernel and root, as if from the DHCP server's
boot file).

Commands:

    dhcp [net0]               configure net0 (settings net0/ip, next-server...)
    ifstat, ifopen, ifclose   the card
    set NAME VALUE...         `${NAME}` expands to VALUE (unset: empty)
    clear NAME, show NAME, echo [-n] ..., sleep N, reboot, help
    kernel URI [ARGS...]      download the kernel (imgselect); ARGS its command line
    initrd URI                download an initramfs (several are concatenated)
    boot                      start the selected kernel (imgexec)
    chain URI [ARGS...]       download and run: an `#!ipxe` script line by
                              line, else a kernel booted at once

URIs are `tftp://SERVER/path` (or `tftp:///path`: the DHCP next-server),
read from `--tftp-root`. A file the server does not have:
`tftp://.../path... No such file or directory (https://ipxe.org/2d12618e)`
then `Could not select: ...`; before `dhcp`: `Network unreachable`. (LAVA's
ipxe error-messages name only DHCP failures and timeouts: a device that
wants a missing file to fail at once adds 'No such file or directory'.)
"""

from __future__ import annotations

from collections.abc import Iterator

from lava_dispatcher.sim.dut import SimDUT
from lava_dispatcher.sim.loader import (
    FAILURE,
    LEASE,
    MAC,
    SUCCESS,
    ConsoleStage,
    Firmware,
    Run,
    Shell,
    ShellStage,
)
from lava_dispatcher.sim.uboot_env import split_commands

PROMPT = "iPXE> "
VERSION = "1.21.1+ (sim)"
CTRL_B = 2
CARD = "net0"
NOT_FOUND = "No such file or directory (https://ipxe.org/2d12618e)"
UNREACHABLE = "Network unreachable (https://ipxe.org/28086011)"
NO_IMAGE = "No such file or directory (https://ipxe.org/2d5c403b)"
UNSUPPORTED = "Operation not supported (https://ipxe.org/3c092083)"
DENIED = "Permission denied (https://ipxe.org/0216eb3c)"
SCRIPT_MAGIC = b"#!ipxe"


class Ipxe(Firmware):
    """The board's iPXE ROM."""

    name = "ipxe"
    default_prompt = PROMPT

    def make_stage(self, dut: SimDUT) -> ConsoleStage:
        return IpxeStage(dut, self)


class IpxeStage(ShellStage):
    """One boot's iPXE: the Ctrl-B wait, then the shell."""

    cancel_text = "\n"

    def __init__(self, dut: SimDUT, firmware: Ipxe) -> None:
        super().__init__(dut, firmware)
        self.shell = IpxeShell(self)

    def banner(self) -> None:
        self.write(
            f"\n\niPXE {VERSION} -- Open Source Network Boot Firmware -- https://ipxe.org\n"
            "Features: DNS HTTP HTTPS iSCSI TFTP AoE ELF MBOOT PXE bzImage Menu PXEXT\n\n"
        )

    def countdown_text(self, remaining: int, first: bool) -> str:
        return "Press Ctrl-B for the iPXE command line..." if first else ""

    def interrupted(self, data: bytes) -> bytes:
        if data[0] != CTRL_B:
            # any other key ends the wait: boot on
            self.write("\n")
            self.state = "booting"
            self.autoboot()
            return b""
        self.write("\n\n")
        self._prompt()
        return data[1:]

    def autoboot(self) -> None:
        self.write(
            f"{CARD}: {MAC} using virtio-net on 0000:00:03.0 (open)\n"
            "  [Link:up, TX:0 TXE:0 RX:0 RXE:0]\n"
            f"Configuring ({CARD} {MAC})...... ok\n"
            f"{CARD}: {LEASE['ipaddr']}/{LEASE['netmask']} gw {LEASE['gatewayip']}\n"
            f"Next server: {LEASE['serverip']}\nFilename: sim/bzImage\n"
            f"tftp://{LEASE['serverip']}/sim/bzImage... ok\n"
        )
        self.boot_board()


class IpxeShell(Shell):
    """iPXE's commands, settings and selected images."""

    COMMANDS = {
        "boot": "Execute the selected image",
        "chain": "Download and execute an image",
        "clear": "Clear a setting",
        "dhcp": "Automatically configure interfaces",
        "echo": "Print text",
        "help": "List the available commands",
        "ifclose": "Close network interfaces",
        "ifopen": "Open network interfaces",
        "ifstat": "Show network interface status",
        "imgexec": "Execute an image",
        "imgselect": "Download and select an image",
        "initrd": "Download an image (an initramfs)",
        "kernel": "Download and select an image",
        "reboot": "Reboot the machine",
        "set": "Set a setting",
        "show": "Show a setting",
        "sleep": "Wait for a number of seconds",
    }

    def __init__(self, stage: IpxeStage) -> None:
        super().__init__(stage)
        self.variables.update({f"{CARD}/mac": MAC, "mac": MAC, "platform": "pcbios"})
        self.configured = False
        self.kernel: tuple[str, list[str]] | None = None  # (URI, arguments)
        self.initrds: list[bytes] = []

    def assignment(self, text: str) -> tuple[str, str] | None:
        return None  # iPXE has `set`, no name=value

    def unknown(self, name: str) -> None:
        self.write(f"{name}: command not found\n")

    # -- settings ----------------------------------------------------------------

    def do_set(self, argv: list[str]) -> int:
        if len(argv) < 2:
            self.write("Usage:\n\n  set <setting> [<value>]\n\nSee https://ipxe.org/cmd/set\n")
            return FAILURE
        self.variables[argv[1]] = " ".join(argv[2:])
        return SUCCESS

    def do_clear(self, argv: list[str]) -> int:
        for name in argv[1:]:
            self.variables.pop(name, None)
        return SUCCESS

    def do_show(self, argv: list[str]) -> int:
        if len(argv) != 2:
            return FAILURE
        value = self.variables.get(argv[1])
        if value is None:
            self.write(f'Could not find "{argv[1]}": No such file or directory\n')
            return FAILURE
        self.write(f"{argv[1]} = {value}\n")
        return SUCCESS

    def do_echo(self, argv: list[str]) -> int:
        words = argv[1:]
        newline = "\n"
        if words and words[0] == "-n":
            words, newline = words[1:], ""
        self.write(" ".join(words) + newline)
        return SUCCESS

    # -- network -----------------------------------------------------------------

    def do_dhcp(self, argv: list[str]) -> Run:
        cards = argv[1:] or [CARD]
        if any(card != CARD for card in cards):
            self.write(f"Could not open {cards[-1]}: No such device (https://ipxe.org/2c048087)\n")
            return FAILURE
        self.write(f"Configuring ({CARD} {MAC})...")
        yield 0.01
        self.write("... ok\n")
        self.configured = True
        self.variables.update(
            {
                f"{CARD}/ip": LEASE["ipaddr"],
                f"{CARD}/netmask": LEASE["netmask"],
                f"{CARD}/gateway": LEASE["gatewayip"],
                f"{CARD}/dns": LEASE["dnsip"],
                "ip": LEASE["ipaddr"],
                "next-server": LEASE["serverip"],
            }
        )
        return SUCCESS

    def do_ifstat(self, argv: list[str]) -> int:
        state = "open" if self.configured else "closed"
        self.write(
            f"{CARD}: {MAC} using virtio-net on 0000:00:03.0 ({state})\n"
            f"  [Link:up, TX:0 TXE:0 RX:0 RXE:0]\n"
        )
        return SUCCESS

    def do_ifopen(self, argv: list[str]) -> int:
        return SUCCESS

    def do_ifclose(self, argv: list[str]) -> int:
        return SUCCESS

    def download(self, uri: str) -> bytes | str:
        """The file at `uri`, or why not (progress and error printed as iPXE does)."""
        self.write(f"{uri}...")
        scheme, sep, rest = uri.partition("://")
        server, _, path = rest.partition("/")
        error = None
        if not sep or scheme != "tftp":
            error = UNSUPPORTED
        elif not self.configured or not (server or self.variables.get("next-server")):
            error = UNREACHABLE
        else:
            data = self.fetch(path)
            if isinstance(data, bytes):
                self.write(" ok\n")
                return data
            error = NOT_FOUND if data[0] == 1 else DENIED
        self.write(f" {error}\n")
        return error

    # -- images ------------------------------------------------------------------

    def do_kernel(self, argv: list[str]) -> int:
        if len(argv) < 2:
            self.write("Usage:\n\n  kernel <uri|image> [<arguments>...]\n")
            return FAILURE
        data = self.download(argv[1])
        if isinstance(data, str):
            self.write(f"Could not select: {data}\n")
            return FAILURE
        self.kernel = (argv[1], argv[2:])
        self.initrds = []
        return SUCCESS

    do_imgselect = do_kernel

    def do_initrd(self, argv: list[str]) -> int:
        if len(argv) < 2:
            self.write("Usage:\n\n  initrd <uri|image> [<name>]\n")
            return FAILURE
        data = self.download(argv[1])
        if isinstance(data, str):
            self.write(f"Could not download {argv[1]}: {data}\n")
            return FAILURE
        self.initrds.append(data)
        return SUCCESS

    def do_boot(self, argv: list[str]) -> int:
        if self.kernel is None:
            self.write(f"Could not boot: {NO_IMAGE}\n")
            return FAILURE
        uri, args = self.kernel
        name = uri.rsplit("/", 1)[-1]
        initrd = b"".join(self.initrds) or None
        self.stage.start_linux(initrd, " ".join([f"BOOT_IMAGE={name}", *args]))
        return SUCCESS

    do_imgexec = do_boot

    def do_chain(self, argv: list[str]) -> Run:
        if len(argv) < 2:
            self.write("Usage:\n\n  chain <uri|image> [<arguments>...]\n")
            return FAILURE
        data = self.download(argv[1])
        if isinstance(data, str):
            self.write(f"Could not boot: {data}\n")
            return FAILURE
        if not data.startswith(SCRIPT_MAGIC):
            self.kernel = (argv[1], argv[2:])
            self.initrds = []
            return self.do_boot(["boot"])
        status = SUCCESS
        for line in _script_lines(data):
            if self.halted:
                break
            status = yield from self.execute(line)
            if status != SUCCESS:
                break
        return status

    def do_reboot(self, argv: list[str]) -> int:
        self.stage.reset()
        return SUCCESS


def _script_lines(data: bytes) -> Iterator[str]:
    """The commands of an iPXE script (after its `#!ipxe` line)."""
    for line in data.decode("utf-8", "replace").splitlines()[1:]:
        if split_commands(line).commands:
            yield line
