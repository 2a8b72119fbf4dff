"""The four simulated bootloaders and LAVA-style device settings for them.

`LOADERS` holds, per LAVA boot method, what a device dictionary says about
the bootloader (LAVA's constants for it, the method's parameters and named
command stanzas, as LAVA's device-type templates render them for a board
of that kind) and how the simulated board shows it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sim_uboot.helpers import Board

from lava_dispatcher.sim import SimServer

SHELL_PROMPT = "root@sim:~# "
JOB_DIR = "1234/tftp-deploy-abcd"

GRUB_ERRORS = [
    "error: missing (.*) symbol.",
    "error: couldn't send network packet",
    "error: destination unreachable",
    "error: couldn't autoconfigure",
    "error: timeout reading",
    "error: you need to load the kernel first.",
    "error: file '(.*)' not found",
    "error: no such device",
    "error: disk '(.*)' not found",
    "error: unknown filesystem",
]


@dataclass
class Loader:
    """One boot method on the simulated board."""

    method: str  # the LAVA boot method
    bootloader: str  # the simulator's --bootloader
    prompt: str  # what the simulated bootloader prints
    interrupt_prompt: str  # what it prints before its countdown ('' : none)
    constants: dict[str, Any]
    parameters: dict[str, Any]
    stanzas: dict[str, Any]
    #: the stanza line naming the ramdisk, and the same with a missing file
    ramdisk_line: str = ""
    missing_line: str = ""
    #: what the bootloader prints for the missing file (quoted in the job's error)
    missing_error: str = ""
    deploy_parameters: dict[str, Any] = field(default_factory=dict)


GRUB_RAMDISK = [
    "net_bootp",
    "clear",
    "insmod linux",
    "insmod tftp",
    "linux (tftp,{SERVER_IP})/{KERNEL} console=ttyS0,115200 root=/dev/ram0 ip=dhcp",
    "initrd (tftp,{SERVER_IP})/{RAMDISK}",
    "devicetree (tftp,{SERVER_IP})/{DTB}",
    "boot",
]

LOADERS: dict[str, Loader] = {
    "grub": Loader(
        method="grub",
        bootloader="grub",
        prompt="grub> ",
        interrupt_prompt="for a command-line",
        constants={
            "interrupt-prompt": "for a command-line",
            "interrupt-character": "c",
            "interrupt-newline": False,
            "error-messages": GRUB_ERRORS,
        },
        parameters={"bootloader_prompt": "grub>", "needs_interrupt": True},
        stanzas={"ramdisk": {"commands": GRUB_RAMDISK}},
        ramdisk_line="initrd (tftp,{SERVER_IP})/{RAMDISK}",
        missing_line="initrd (tftp,{SERVER_IP})/{RAMDISK}.missing",
        missing_error="error: file '(.*)' not found",
    ),
    "grub-efi": Loader(
        method="grub-efi",
        bootloader="grub",
        prompt="grub> ",
        interrupt_prompt="for a command-line",
        constants={
            "interrupt-prompt": "for a command-line",
            "interrupt-character": "c",
            "error-messages": ["Synchronous Exception at", *GRUB_ERRORS],
        },
        parameters={"bootloader_prompt": "grub>"},
        stanzas={"ramdisk": {"commands": GRUB_RAMDISK}},
        ramdisk_line="initrd (tftp,{SERVER_IP})/{RAMDISK}",
        missing_line="initrd (tftp,{SERVER_IP})/{RAMDISK}.missing",
        missing_error="error: file '(.*)' not found",
    ),
    "ipxe": Loader(
        method="ipxe",
        bootloader="ipxe",
        prompt="iPXE> ",
        interrupt_prompt="Press Ctrl-B for the iPXE command line",
        constants={
            "interrupt-prompt": "Press Ctrl-B for the iPXE command line",
            "interrupt_ctrl_list": ["b"],
            # LAVA's list names only DHCP failures and timeouts: a missing
            # file would be a timeout; the lab adds iPXE's words for it
            "error-messages": [
                "No configuration methods succeeded",
                "Connection timed out",
                "No such file or directory",
            ],
        },
        parameters={
            "bootloader_prompt": "iPXE>",
            "use_bootscript": False,
            "lava_mac": "00:90:05:af:00:7d",
        },
        stanzas={
            "ramdisk": {
                "commands": [
                    "dhcp net0",
                    "set console console=ttyS0,115200n8 lava_mac={LAVA_MAC}",
                    "set extraargs  ip=dhcp",
                    "kernel tftp://{SERVER_IP}/{KERNEL} ${extraargs} ${console}",
                    "initrd tftp://{SERVER_IP}/{RAMDISK}",
                    "boot",
                ]
            }
        },
        ramdisk_line="initrd tftp://{SERVER_IP}/{RAMDISK}",
        missing_line="initrd tftp://{SERVER_IP}/{RAMDISK}.missing",
        missing_error="No such file or directory",
    ),
    "barebox": Loader(
        method="barebox",
        bootloader="barebox",
        prompt="barebox@LAVA simulated board:/ ",
        interrupt_prompt="Hit m for menu or any other key to stop autoboot",
        constants={
            "interrupt-prompt": "Hit m for menu or any other key to stop autoboot",
            "interrupt-character": "\n",
            "final-message": "Starting kernel",
            "error-messages": [
                "### ERROR ### Please RESET the board ###",
                "ERROR: .*",
                ".*: Out of memory",
            ],
        },
        parameters={
            "bootloader_prompt": "barebox@LAVA simulated board:/",
            "interrupt_prompt": "stop autoboot",
        },
        stanzas={
            "ramdisk": {
                "commands": [
                    "global linux.bootargs.base=\"'root=/dev/ram0 ip=dhcp'\"",
                    "bootm -v -r /mnt/tftp/{RAMDISK} -o /mnt/tftp/{DTB} /mnt/tftp/{KERNEL}",
                ]
            }
        },
        ramdisk_line="bootm -v -r /mnt/tftp/{RAMDISK} -o /mnt/tftp/{DTB} /mnt/tftp/{KERNEL}",
        missing_line=(
            "bootm -v -r /mnt/tftp/{RAMDISK}.missing -o /mnt/tftp/{DTB} /mnt/tftp/{KERNEL}"
        ),
        missing_error="ERROR: .*",
        # a legacy U-Boot header on the ramdisk, which barebox takes off
        deploy_parameters={"add_header": "u-boot", "mkimage_arch": "arm"},
    ),
    "depthcharge": Loader(
        method="depthcharge",
        bootloader="depthcharge",
        prompt="dpch: ",
        interrupt_prompt="",
        constants={
            "final-message": "Starting kernel",
            "error-messages": [
                "Tftp failed.",
                "Dhcp release failed.",
                "No space left for ramdisk",
                "TFTP failed for ramdisk.",
                "Out of space adding TFTP server IP to the command line.",
                "No network device.",
                r"Error code \d+( \([\w\s]+\))?\r\n",
            ],
        },
        parameters={"start_message": "Starting netboot", "bootloader_prompt": "dpch:"},
        stanzas={
            "ramdisk": {
                "cmdline": "console=ttyS0,115200n8 root=/dev/ram0 ip=dhcp",
                "commands": [
                    "tftpboot {SERVER_IP} {DEPTHCHARGE_KERNEL} {CMDLINE} {DEPTHCHARGE_RAMDISK}"
                ],
            }
        },
        ramdisk_line="tftpboot {SERVER_IP} {DEPTHCHARGE_KERNEL} {CMDLINE} {DEPTHCHARGE_RAMDISK}",
        missing_line="tftpboot {SERVER_IP} {DEPTHCHARGE_KERNEL} {CMDLINE} {DEPTHCHARGE_RAMDISK}.x",
        missing_error="TFTP failed for ramdisk.",
    ),
}


class Console(Board):
    """A served board with one of the bootloaders, and its TCP console."""

    def __init__(self, sim: SimServer, prompt: str) -> None:
        super().__init__(sim)
        self.prompt = prompt

    def run(self, command: str, timeout: float | None = None) -> str:
        """Type a command line; return its output (CR LF made LF) up to the next prompt."""
        self.send(command + "\n")
        self.expect(command + "\r\n")
        return self.expect(self.prompt, timeout).replace("\r\n", "\n")
