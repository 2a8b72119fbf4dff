"""A Depthcharge-like netboot firmware (`--bootloader depthcharge`): the
"dev" build of ChromeOS's payload, with a command line and `tftpboot`.

At power-on and every reset it prints its start-up lines, among them
`Starting netboot` (LAVA's depthcharge start_message), and waits at the
prompt `dpch: ` (LAVA's bootloader_prompt 'dpch:'): there is no countdown
to interrupt and no autoboot.

    tftpboot SERVER KERNEL CMDLINE [RAMDISK]
        DHCP, then KERNEL, the file CMDLINE (the kernel command line, as
        LAVA writes it next to the kernel) and RAMDISK by TFTP from
        `--tftp-root`, then `Starting kernel ...` (LAVA's final message)
        and Linux with that ramdisk and command line.
    help, reboot

A file the server does not have: `Tftp failed.` (the kernel or the command
line) or `TFTP failed for ramdisk.`, back at the prompt: both in LAVA's
depthcharge error-messages. A SERVER that is not an IPv4 address:
`Invalid IP address`.
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
from lava_dispatcher.sim.uboot_shell import is_ip

PROMPT = "dpch: "
HASHES_PER_LINE = 64
BYTES_PER_HASH = 4096


class Depthcharge(Firmware):
    """The board's Depthcharge."""

    name = "depthcharge"
    default_prompt = PROMPT

    def make_stage(self, dut: SimDUT) -> ConsoleStage:
        return DepthchargeStage(dut, self)


class DepthchargeStage(ShellStage):
    """One boot's Depthcharge: start-up lines, then the prompt."""

    def __init__(self, dut: SimDUT, firmware: Depthcharge) -> None:
        super().__init__(dut, firmware)
        self.shell = DepthchargeShell(self)

    def banner(self) -> None:
        self.write(
            "\n\ncoreboot-sim bootblock starting (log level: 7)...\n"
            "coreboot-sim romstage starting...\n"
            "coreboot-sim ramstage starting...\n"
            "Jumping to boot code at 0x30000000\n\n"
            "Starting depthcharge on sim...\n"
            "Starting netboot on sim...\n\n"
        )

    def autoboot_delay(self) -> int:
        return -1  # the prompt at once, never an autoboot


class DepthchargeShell(Shell):
    """Depthcharge's console commands."""

    COMMANDS = {
        "help": "print command description/usage",
        "reboot": "reboot the machine",
        "tftpboot": "boot a kernel, command line and ramdisk over TFTP",
    }

    def assignment(self, text: str) -> tuple[str, str] | None:
        return None

    def unknown(self, name: str) -> None:
        self.write(f"Unknown command '{name}' - try 'help'\n")

    def do_reboot(self, argv: list[str]) -> int:
        self.stage.reset()
        return SUCCESS

    def transfer(self, name: str) -> bytes | None:
        self.write("Sending tftp read request... done.\nWaiting for the transfer... \n")
        data = self.fetch(name)
        if isinstance(data, tuple):
            return None
        for offset in range(0, max(len(data), 1), HASHES_PER_LINE * BYTES_PER_HASH):
            chunk = min(len(data) - offset, HASHES_PER_LINE * BYTES_PER_HASH)
            self.write(f"{offset:08x} {'#' * max(1, -(-chunk // BYTES_PER_HASH))}\n")
        return data

    def do_tftpboot(self, argv: list[str]) -> int:
        if len(argv) not in (4, 5):
            self.write("Usage: tftpboot <server ip> <bootfile> <cmdline file> [<ramdisk file>]\n")
            return FAILURE
        server, kernel, cmdline_file = argv[1:4]
        ramdisk_file = argv[4] if len(argv) == 5 else None
        if not is_ip(server):
            self.write("Invalid IP address\n")
            return FAILURE
        self.write(
            "Waiting for link\ndone.\n"
            f"MAC: {MAC}\n"
            "Sending DHCP discover... done.\nWaiting for reply... done.\n"
            "Sending DHCP request... done.\nWaiting for reply... done.\n"
            f"My ip is {LEASE['ipaddr']}\n"
            f"The DHCP server ip is {LEASE['serverip']}\n"
            f"TFTP server IP predefined by user: {server}\n"
            f"Bootfile predefined by user: {kernel}\n"
        )
        image = self.transfer(kernel)
        if image is None:
            self.write("Tftp failed.\n")
            return FAILURE
        self.write(f"The bootfile was {len(image)} bytes long.\n")
        ramdisk = None
        if ramdisk_file is not None:
            ramdisk = self.transfer(ramdisk_file)
            if ramdisk is None:
                self.write("TFTP failed for ramdisk.\n")
                return FAILURE
            self.write(f"The ramdisk was {len(ramdisk)} bytes long.\n")
        cmdline = self.transfer(cmdline_file)
        if cmdline is None:
            self.write("Tftp failed.\n")
            return FAILURE
        text = cmdline.decode("utf-8", "replace").strip()
        self.write(
            f"Command line loaded dynamically from TFTP file: {cmdline_file}\n"
            f"The command line is: {text}\n"
            "Shutting down all USB controllers.\n"
            "Removing current net device\n"
            "Exiting depthcharge with code 4 at timestamp: 12345678\n"
            "Starting kernel ...\n\n"
        )
        self.stage.start_linux(ramdisk, text)
        return SUCCESS
