"""The simulated GRUB, iPXE, barebox and Depthcharge, through a served
board's TCP console: banners and interrupt prompts as LAVA's constants
expect them, the commands LAVA's device templates type, their errors
(the words LAVA's error-messages match), and the hand-over to Linux with
the kernel command line and ramdisk they were given."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pytest

from lava_dispatcher.sim import ConfigError, SimConfig, sim_command
from lava_dispatcher.sim.loader import split_args

from .helpers import JOB_DIR, LOADERS, SHELL_PROMPT, Console

KERNEL = f"{JOB_DIR}/kernel/Image"
CMDLINE = f"{JOB_DIR}/kernel/cmdline"
DTB = f"{JOB_DIR}/board.dtb"


def kernel_command_line(b: Console) -> str:
    b.expect("Kernel command line: ")
    return b.expect("\r\n")


# -- grub ------------------------------------------------------------------------------


def grub_prompt(b: Console) -> None:
    b.sim.power_on()
    b.expect("`c' for a command-line.")
    b.send("c")
    b.expect("ESC at any time exits.")
    b.expect(b.prompt)


def test_grub_menu_countdown_and_command_line(board) -> None:
    b = board("grub", autoboot_delay=2)
    b.sim.power_on()
    menu = b.expect("for a command-line.\r\n")
    assert "GNU GRUB  version 2.06 (sim)" in menu and "|*LAVA simulated board" in menu
    b.expect("   The highlighted entry will be executed automatically in 2s. ")
    b.expect("\r   The highlighted entry will be executed automatically in 1s. ")
    b.send("c")
    b.expect("Minimal BASH-like line editing is supported.")
    b.expect("grub> ")
    assert b.sim.status()["bootloader"] == "grub"
    assert b.sim.status()["bootloader_state"] == "prompt"


def test_grub_boots_the_board_after_the_countdown_or_on_enter(board) -> None:
    b = board("grub", autoboot_delay=1)
    b.sim.power_on()
    b.expect("automatically in 0s. \r\n  Booting `LAVA simulated board'")
    b.expect("sim login: ")
    b.sim.reset()
    b.expect("automatically in 1s. ")
    b.send("x")  # any other key stops the countdown: the menu waits
    b.expect("\r\n")
    assert b.sim.status()["bootloader_state"] == "menu"
    b.send("\r")
    b.expect("Booting `LAVA simulated board'")
    b.expect("sim login: ")


def test_grub_loads_and_boots_from_tftp(board, tftp_root: Path) -> None:
    b = board("grub", tftp_root=str(tftp_root))
    grub_prompt(b)
    assert b.run("insmod tftp; clear; net_bootp") == ""
    assert b.run("net_ls_addr") == "efinet0:dhcp 52:54:00:12:34:56 10.0.2.15\n"
    assert b.run("echo $net_default_server") == "10.0.2.2\n"
    assert b.run(f"linux (tftp,10.0.2.2)/{KERNEL} console=ttyS0 root=/dev/ram0 ip=dhcp") == ""
    assert b.run(f"devicetree (tftp)/{DTB}") == ""
    assert b.run("set root=tftp,10.0.2.2; initrd /" + DTB) == ""
    b.send("boot\n")
    b.expect("EFI stub: Booting Linux Kernel...")
    assert kernel_command_line(b) == f"BOOT_IMAGE=/{KERNEL} console=ttyS0 root=/dev/ram0 ip=dhcp"
    # the "initramfs" was a device tree: the kernel cannot unpack it
    b.expect("Initramfs unpacking failed")


def test_grub_errors_are_the_ones_lava_matches(board, tftp_root: Path) -> None:
    b = board("grub", tftp_root=str(tftp_root))
    grub_prompt(b)
    patterns = [re.compile(p) for p in LOADERS["grub"].constants["error-messages"]]

    def error(command: str) -> str:
        out = b.run(command)
        assert any(p.search(out) for p in patterns), out
        return out

    assert error(f"linux (tftp,10.0.2.2)/{KERNEL}") == "error: destination unreachable.\n"
    assert error("initrd (tftp)/x") == "error: you need to load the kernel first.\n"
    assert error("boot") == "error: you need to load the kernel first.\n"
    assert error("net_bootp efinet1") == "error: no such device: efinet1.\n"
    b.run("net_bootp")
    missing = error(f"linux (tftp,10.0.2.2)/{JOB_DIR}/missing")
    assert missing == f"error: file '/{JOB_DIR}/missing' not found.\n"
    assert error("ls (hd7,gpt1)") == "error: disk 'hd7,gpt1' not found.\n"
    assert b.run("frobnicate") == "error: can't find command `frobnicate'.\n"
    assert b.run("insmod nosuch") == "error: file '/EFI/BOOT/arm64-efi/nosuch.mod' not found.\n"


def test_grub_ignores_the_first_interrupt(board) -> None:
    b = board("grub", ignore_interrupt=1, autoboot_delay=2)
    b.sim.power_on()
    b.expect("automatically in 2s. ")
    b.send("c")  # ignored: the countdown goes on
    b.expect("automatically in 1s. ")
    b.send("c")
    b.expect("grub> ")


# -- ipxe ------------------------------------------------------------------------------


def ipxe_prompt(b: Console) -> None:
    b.sim.power_on()
    b.expect("Press Ctrl-B for the iPXE command line...")
    b.send("\x02")
    b.expect(b.prompt)


def test_ipxe_banner_and_ctrl_b(board) -> None:
    b = board("ipxe")
    b.sim.power_on()
    banner = b.expect("Press Ctrl-B for the iPXE command line...")
    assert "iPXE 1.21.1+ (sim) -- Open Source Network Boot Firmware" in banner
    b.send("\x02")
    b.expect("iPXE> ")
    assert b.sim.status()["bootloader"] == "ipxe"


def test_ipxe_boots_on_after_the_wait_or_another_key(board) -> None:
    b = board("ipxe", autoboot_delay=1)
    b.sim.power_on()
    b.expect("Press Ctrl-B for the iPXE command line...\r\nnet0: 52:54:00:12:34:56")
    b.expect("sim login: ")
    b.sim.reset()
    b.expect("Press Ctrl-B for the iPXE command line...")
    b.send(" ")  # not Ctrl-B: iPXE stops waiting and boots
    b.expect("Configuring (net0 52:54:00:12:34:56)...... ok")
    b.expect("sim login: ")


def test_ipxe_an_ignored_ctrl_b_lets_it_boot(board) -> None:
    b = board("ipxe", ignore_interrupt=1, autoboot_delay=1)
    b.sim.power_on()
    b.expect("Press Ctrl-B for the iPXE command line...")
    b.send("\x02")
    b.expect("net0: 52:54:00:12:34:56 using virtio-net")
    b.expect("sim login: ")


def test_ipxe_downloads_and_boots(board, tftp_root: Path) -> None:
    b = board("ipxe", tftp_root=str(tftp_root))
    ipxe_prompt(b)
    assert b.run(f"kernel tftp://10.0.2.2/{KERNEL}") == (
        f"tftp://10.0.2.2/{KERNEL}... Network unreachable (https://ipxe.org/28086011)\n"
        "Could not select: Network unreachable (https://ipxe.org/28086011)\n"
    )
    assert b.run("dhcp net0") == "Configuring (net0 52:54:00:12:34:56)...... ok\n"
    assert b.run("set console console=ttyS0,115200n8 lava_mac=00:90:05:af:00:7d") == ""
    assert b.run("set extraargs  ip=dhcp") == ""
    assert b.run("echo ${net0/ip} ${next-server} [${nothing}]") == "10.0.2.15 10.0.2.2 []\n"
    out = b.run(f"kernel tftp://10.0.2.2/{KERNEL} ${{extraargs}} ${{console}}")
    assert out == f"tftp://10.0.2.2/{KERNEL}... ok\n"
    missing = b.run(f"initrd tftp://10.0.2.2/{JOB_DIR}/missing")
    assert (
        f"{JOB_DIR}/missing... No such file or directory (https://ipxe.org/2d12618e)\n" in missing
    )
    assert b.run(f"initrd tftp://10.0.2.2/{DTB}") == f"tftp://10.0.2.2/{DTB}... ok\n"
    b.send("boot\n")
    assert kernel_command_line(b) == (
        "BOOT_IMAGE=Image ip=dhcp console=ttyS0,115200n8 lava_mac=00:90:05:af:00:7d"
    )
    b.expect("Initramfs unpacking failed")


def test_ipxe_chains_a_script(board, tftp_root: Path) -> None:
    script = tftp_root / JOB_DIR / "kernel" / "script.ipxe"
    script.write_text(
        "#!ipxe\n\n# a comment\nset args root=/dev/ram0\n"
        f"kernel tftp://10.0.2.2/{KERNEL} ${{args}}\nboot\n"
    )
    b = board("ipxe", tftp_root=str(tftp_root))
    ipxe_prompt(b)
    assert (
        b.run("boot") == "Could not boot: No such file or directory (https://ipxe.org/2d5c403b)\n"
    )
    b.run("dhcp net0")
    b.send(f"chain tftp://10.0.2.2/{JOB_DIR}/kernel/script.ipxe\n")
    assert kernel_command_line(b) == "BOOT_IMAGE=Image root=/dev/ram0"
    b.expect("sim login: ")


# -- barebox ---------------------------------------------------------------------------


def barebox_prompt(b: Console) -> None:
    b.sim.power_on()
    b.expect("Hit m for menu or any other key to stop autoboot: ")
    b.send("\n")
    b.expect("type exit to get to the menu\r\n")
    b.expect(b.prompt)


def test_barebox_countdown_and_prompt(board) -> None:
    b = board("barebox", autoboot_delay=2)
    b.sim.power_on()
    banner = b.expect("Hit m for menu or any other key to stop autoboot:    2")
    assert "barebox 2023.01.0-sim" in banner and "Board: LAVA simulated board" in banner
    b.expect("\b\b\b\b   1")
    b.send("\n\n")  # LAVA's interrupt: the first key is used up, the second an empty line
    b.expect("barebox@LAVA simulated board:/ ")
    assert b.expect("barebox@LAVA simulated board:/ ") == "\r\n"


def test_barebox_autoboot(board) -> None:
    b = board("barebox", autoboot_delay=1)
    b.sim.power_on()
    b.expect("   0\r\nBooting entry 'mmc0'")
    b.expect("sim login: ")


def test_barebox_globals_and_bootm(board, tftp_root: Path) -> None:
    b = board("barebox", tftp_root=str(tftp_root))
    barebox_prompt(b)
    assert b.run("global linux.bootargs.nfs=\"'root=/dev/nfs rw'\"") == ""
    assert (
        b.run("global.linux.bootargs.extra=quiet; echo ${global.linux.bootargs.extra}") == "quiet\n"
    )
    missing = b.run(f"bootm -v -r /mnt/tftp/{JOB_DIR}/missing /mnt/tftp/{KERNEL}")
    assert missing.startswith("eth0: DHCP client bound to address 10.0.2.15\n")  # automount
    assert missing.endswith(
        f"ERROR: could not open /mnt/tftp/{JOB_DIR}/missing: No such file or directory\n"
    )
    assert (
        b.run(f"tftp {DTB} board.dtb")
        == "\t[########################################] 2048 bytes\n"
    )
    assert "board.dtb" in b.run("ls")
    b.send(f"bootm -v -o /board.dtb /mnt/tftp/{KERNEL} -a 0x80008000\n")
    b.expect(f"Loading ARM Linux zImage '/mnt/tftp/{KERNEL}'\r\n")
    b.expect("Loading devicetree from '/board.dtb'\r\ncommandline: ")
    b.expect("Starting kernel in secure mode\r\n")
    assert kernel_command_line(b) == "console=ttyAMA0,115200n8 quiet 'root=/dev/nfs rw'"
    b.expect("sim login: ")


def test_barebox_takes_the_uimage_header_off_a_ramdisk(
    board, tftp_root: Path, initramfs: Path
) -> None:
    from sim_uboot.helpers import uimage

    (tftp_root / JOB_DIR / "ramdisk.uboot").write_bytes(uimage(initramfs.read_bytes(), arch=2))
    (tftp_root / JOB_DIR / "bad.uboot").write_bytes(uimage(b"x" * 100)[:-1] + b"y")
    b = board("barebox", tftp_root=str(tftp_root))
    barebox_prompt(b)
    out = b.run(f"bootm -r /mnt/tftp/{JOB_DIR}/bad.uboot /mnt/tftp/{KERNEL}")
    assert out.endswith(f"ERROR: /mnt/tftp/{JOB_DIR}/bad.uboot: bad uImage checksum\n")
    b.send(f"bootm -r /mnt/tftp/{JOB_DIR}/ramdisk.uboot /mnt/tftp/{KERNEL}\n")
    b.expect("Unpacking initramfs")
    b.expect("sim login: ")
    b.send("root\n")
    b.expect(SHELL_PROMPT)  # the ramdisk's shell
    b.send("cat /etc/from-tftp\n")
    b.expect("loaded by u-boot")


# -- depthcharge -----------------------------------------------------------------------


def depthcharge_prompt(b: Console) -> None:
    b.sim.power_on()
    b.expect("Starting netboot")
    b.expect(b.prompt)


def test_depthcharge_waits_at_its_prompt(board) -> None:
    b = board("depthcharge")
    b.sim.power_on()
    banner = b.expect("dpch: ")
    assert "Starting depthcharge on sim...\r\nStarting netboot on sim..." in banner
    assert b.sim.status()["bootloader_state"] == "prompt"
    assert b.run("boot") == "Unknown command 'boot' - try 'help'\n"


def test_depthcharge_tftpboot(board, tftp_root: Path) -> None:
    b = board("depthcharge", tftp_root=str(tftp_root))
    depthcharge_prompt(b)
    assert b.run("tftpboot server x y") == "Invalid IP address\n"
    missing = b.run(f"tftpboot 10.0.2.2 {JOB_DIR}/missing {CMDLINE}")
    assert f"Bootfile predefined by user: {JOB_DIR}/missing\n" in missing
    assert missing.endswith("Tftp failed.\n")
    no_ramdisk = b.run(f"tftpboot 10.0.2.2 {KERNEL} {CMDLINE} {JOB_DIR}/missing")
    assert no_ramdisk.endswith("TFTP failed for ramdisk.\n")
    no_cmdline = b.run(f"tftpboot 10.0.2.2 {KERNEL} {JOB_DIR}/missing")
    assert no_cmdline.endswith("Tftp failed.\n")
    b.send(f"tftpboot 10.0.2.2 {KERNEL} {CMDLINE} {DTB}\n")
    b.expect(f"Command line loaded dynamically from TFTP file: {CMDLINE}\r\n")
    b.expect("The command line is: console=ttyS0,115200n8 root=/dev/ram0 quiet\r\n")
    b.expect("Starting kernel ...")
    assert kernel_command_line(b) == "console=ttyS0,115200n8 root=/dev/ram0 quiet"


# -- every bootloader --------------------------------------------------------------------

PROMPTS = {
    "grub": grub_prompt,
    "ipxe": ipxe_prompt,
    "barebox": barebox_prompt,
    "depthcharge": depthcharge_prompt,
}


@pytest.mark.parametrize("bootloader", sorted(PROMPTS))
def test_line_editing_and_ctrl_c(board, bootloader: str) -> None:
    """What the dispatcher's echo check relies on: the echo, backspace, and
    Ctrl-C cancelling a mangled line with a fresh prompt."""
    b = board(bootloader)
    PROMPTS[bootloader](b)
    b.send("helq\x7fp")
    b.expect("helq\b \bp")
    b.send("\x03")
    b.expect(b.prompt)
    assert b.sim.status()["bootloader_state"] == "prompt"
    assert b.run("help")  # lists the commands


@pytest.mark.parametrize("bootloader", sorted(PROMPTS))
def test_the_prompt_can_be_changed(board, bootloader: str) -> None:
    b = board(bootloader, bootloader_prompt="LAB-BOARD> ")
    PROMPTS[bootloader](b)


def test_configuration_checks() -> None:
    with pytest.raises(ConfigError, match="depthcharge has no autoboot countdown"):
        SimConfig(bootloader="depthcharge", ignore_interrupt=1).validate()
    with pytest.raises(
        ConfigError, match="must be one of u-boot, grub, ipxe, barebox, depthcharge"
    ):
        SimConfig(bootloader="lilo").validate()
    with pytest.raises(ConfigError, match="--ignore-interrupt: need --bootloader u-boot"):
        SimConfig(ignore_interrupt=1).validate()


def test_split_args() -> None:
    assert split_args(["-v", "-r", "a", "k", "-a0x8000"], "v", "ra") == (
        {"v": "", "r": "a", "a": "0x8000"},
        ["k"],
    )
    assert split_args(["-x"], "v", "r") is None
    assert split_args(["-r"], "v", "r") is None


def test_sim_serve_with_a_bootloader(tmp_path: Path, popen) -> None:
    """--bootloader grub travels on the `sim serve` command line."""
    control = tmp_path / "control"
    argv = ["serve", "--control", str(control), "--tcp", "0", "--bootloader", "grub",
            "--autoboot-delay", "0", "--boot-time", "0.01"]  # fmt: skip
    daemon = popen(sim_command(*argv), stdout=-1)
    line = daemon.stdout.readline()
    port = int(re.search(rb'"tcp_port": (\d+)', line).group(1))
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(10)
        assert popen(sim_command("power", "status", "--control", str(control))).wait(30) == 0
        assert popen(sim_command("power", "on", "--control", str(control))).wait(30) == 0
        data = b""
        deadline = time.monotonic() + 10
        while b"sim login: " not in data and time.monotonic() < deadline:
            data += sock.recv(65536)
    assert b"automatically in 0s. \r\n  Booting `LAVA simulated board'" in data
