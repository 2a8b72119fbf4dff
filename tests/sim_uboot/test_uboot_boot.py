"""The simulated U-Boot's network and boot commands: dhcp, tftp from the
TFTP root, booti/bootz/bootm with a ramdisk handed over to the board."""

from __future__ import annotations

import os
import re
import socket
import time

from lava_dispatcher.sim import sim_command

from .conftest import JOB_DIR
from .helpers import COUNTDOWN, PROMPT, SHELL_PROMPT, Board, uimage


def network(b: Board) -> None:
    assert b.run("setenv autoload no") == ""
    assert b.run("dhcp") == "BOOTP broadcast 1\nDHCP client bound to address 10.0.2.15 (2 ms)\n"


def test_dhcp_sets_the_network_variables(board):
    b = board()
    b.power_on_and_interrupt()
    # without autoload=no, dhcp goes on with a TFTP download, as U-Boot does
    out = b.run("dhcp")
    assert out.startswith("BOOTP broadcast 1\nDHCP client bound to address 10.0.2.15")
    assert "*** Warning: no boot file name; using '0A00020F.img'\n" in out
    assert out.endswith("TFTP error: 'File not found' (1)\nNot retrying...\n")
    assert b.run("printenv ipaddr serverip netmask gatewayip dnsip") == (
        "ipaddr=10.0.2.15\nserverip=10.0.2.2\nnetmask=255.255.255.0\n"
        "gatewayip=10.0.2.2\ndnsip=10.0.2.3\n"
    )
    assert b.run("ping 10.0.2.2").endswith("host 10.0.2.2 is alive\n")


def test_tftp_needs_the_network(board, tftp_root):
    b = board(tftp_root=str(tftp_root))
    b.power_on_and_interrupt()
    assert b.run(f"tftp 0x44000000 {JOB_DIR}/hello.txt") == "*** ERROR: `serverip' not set\n"
    assert b.run("setenv serverip 10.0.2.2; tftp 0x44000000 x") == "*** ERROR: `ipaddr' not set\n"


def test_tftp_existing_and_missing_files(board, tftp_root):
    b = board(tftp_root=str(tftp_root))
    b.power_on_and_interrupt()
    network(b)
    size = (tftp_root / JOB_DIR / "Image").stat().st_size
    out = b.run(f"tftp 0x40400000 {JOB_DIR}/Image")
    assert out.startswith(
        "Using ethernet@9010000 device\n"
        "TFTP from server 10.0.2.2; our IP address is 10.0.2.15\n"
        f"Filename '{JOB_DIR}/Image'.\nLoad address: 0x40400000\nLoading: *\b#"
    )
    assert out.endswith(f"\ndone\nBytes transferred = {size} ({size:x} hex)\n")
    assert b.run("printenv filesize fileaddr") == f"filesize={size:x}\nfileaddr=40400000\n"
    # tftpboot, 'tftp' being its abbreviation; the server in the name
    out = b.run(f"tftpboot ${{ramdisk_addr_r}} 10.0.2.2:/{JOB_DIR}/hello.txt")
    assert f"Filename '/{JOB_DIR}/hello.txt'." in out
    assert out.endswith("Bytes transferred = 6 (6 hex)\n")
    # a missing file: U-Boot's words for tftpd's error, and the command fails
    missing = b.run(f"tftp 0x44000000 {JOB_DIR}/missing || echo failed")
    assert missing == (
        "Using ethernet@9010000 device\n"
        "TFTP from server 10.0.2.2; our IP address is 10.0.2.15\n"
        f"Filename '{JOB_DIR}/missing'.\nLoad address: 0x44000000\nLoading: *\b\n"
        "TFTP error: 'File not found' (1)\nNot retrying...\nfailed\n"
    )
    assert b.run("printenv filesize") == "filesize=6\n"  # unchanged
    # nothing outside the root
    (tftp_root.parent / "secret").write_text("secret")
    os.symlink(tftp_root.parent / "secret", tftp_root / JOB_DIR / "link")
    for name in ("../secret", f"{JOB_DIR}/../../../secret", f"{JOB_DIR}/link"):
        assert b.run(f"tftp 0x44000000 {name}").endswith(
            "TFTP error: 'Access violation' (2)\nNot retrying...\n"
        ), name
    assert b.run(f"tftp 0x10000 {JOB_DIR}/hello.txt").endswith(
        "TFTP error: trying to overwrite reserved memory...\n"
    )


def test_no_tftp_root_no_files(board):
    b = board()
    b.power_on_and_interrupt()
    network(b)
    assert b.run("tftp 0x40400000 Image").endswith(
        "TFTP error: 'File not found' (1)\nNot retrying...\n"
    )


def test_boot_commands_refuse_what_was_not_loaded(board, tftp_root):
    b = board(tftp_root=str(tftp_root))
    b.power_on_and_interrupt()
    assert b.run("booti 0x40400000") == "Bad Linux ARM64 Image magic!\n"
    assert b.run("bootz 0x40400000") == "zimage: Bad magic!\n"
    assert b.run("bootm 0x40400000") == (
        "Wrong Image Format for bootm command\nERROR: can't get kernel image!\n"
    )
    network(b)
    b.run(f"tftp 0x40400000 {JOB_DIR}/Image; tftp 0x44000000 {JOB_DIR}/hello.txt")
    b.run(f"tftp 0x43000000 {JOB_DIR}/board.dtb")
    wrong = "Wrong Ramdisk Image Format\nRamdisk image is corrupt or invalid\n"
    assert b.run("booti 0x40400000 0x45000000:0x100 0x43000000") == wrong  # not loaded
    assert b.run("booti 0x40400000 0x44000000 0x43000000") == wrong  # raw, no size
    assert b.run("booti 0x40400000 0x44000000:6 0x4a000000") == (
        "ERROR: Did not find a cmdline Flattened Device Tree\nCould not find a valid device tree\n"
    )
    # a uImage ramdisk is checked: CRCs, type, architecture
    job = tftp_root / JOB_DIR
    good = uimage(b"payload", name=b"test ramdisk")
    (job / "bad-crc").write_bytes(good[:-1] + b"X")
    (job / "kernel-type").write_bytes(uimage(b"payload", image_type=2))
    (job / "arm32").write_bytes(uimage(b"payload", arch=2))
    b.run(f"tftp 0x44000000 {JOB_DIR}/bad-crc")
    out = b.run("booti 0x40400000 0x44000000 0x43000000")
    assert out.startswith("## Loading init Ramdisk from Legacy Image at 44000000 ...\n")
    assert "   Image Name:   test ramdisk\n" in out
    assert "   Image Type:   AArch64 Linux RAMDisk Image (uncompressed)\n" in out
    assert "   Data Size:    7 Bytes = 7 Bytes\n" in out
    assert out.endswith(
        "   Verifying Checksum ... Bad Data CRC\nRamdisk image is corrupt or invalid\n"
    )
    b.run(f"tftp 0x44000000 {JOB_DIR}/kernel-type")
    assert b.run("booti 0x40400000 0x44000000").endswith(
        "Verifying Checksum ... OK\nNo Linux AArch64 Ramdisk Image\nRamdisk image is corrupt or invalid\n"
    )
    b.run(f"tftp 0x44000000 {JOB_DIR}/arm32")
    assert b.run("booti 0x40400000 0x44000000").endswith(
        "No Linux AArch64 Ramdisk Image\nRamdisk image is corrupt or invalid\n"
    )
    assert b.sim.status()["stage"] == "bootloader"


def lava_boot(b: Board, ramdisk_name: str, boot: str) -> str:
    """LAVA's u-boot ramdisk commands (base-uboot.jinja2), then `boot`;
    returns what U-Boot printed from `boot` to the kernel."""
    for command in (
        "setenv autoload no",
        "setenv initrd_high 0xffffffff",
        "setenv fdt_high 0xffffffff",
        "setenv kernel_addr_r '0x40400000'",
        "setenv initrd_addr_r '0x44000000'",
        "setenv fdt_addr_r '0x43000000'",
        f"setenv loadkernel 'tftp ${{kernel_addr_r}} {JOB_DIR}/Image'",
        f"setenv loadinitrd 'tftp ${{initrd_addr_r}} {JOB_DIR}/{ramdisk_name}; setenv initrd_size ${{filesize}}'",
        f"setenv loadfdt 'tftp ${{fdt_addr_r}} {JOB_DIR}/board.dtb'",
        "setenv bootargs 'console=ttyS0,115200n8 root=/dev/ram0 ip=dhcp'",
        f"setenv bootcmd 'dhcp; setenv serverip 10.0.2.2; run loadkernel; run loadinitrd; run loadfdt; {boot}'",
    ):
        assert b.run(command) == "", command
    b.send("boot\n")
    b.expect("boot\r\n")
    return b.expect("Starting kernel ...\r\n\r\n").replace("\r\n", "\n")


def login_shell(b: Board) -> str:
    """Log in on the booted board; return the kernel log before the login prompt."""
    log = b.expect("sim login: ")
    b.send("root\n")
    b.expect(SHELL_PROMPT)
    return log


def shell(b: Board, command: str) -> str:
    b.send(command + "\n")
    b.expect(command + "\r\n")
    return b.expect(SHELL_PROMPT).replace("\r\n", "\n")


def test_booti_raw_ramdisk_reaches_a_shell_in_it(board, tftp_root, initramfs):
    (tftp_root / JOB_DIR / "initrd.cpio.gz").write_bytes(initramfs.read_bytes())
    b = board(tftp_root=str(tftp_root))
    b.power_on_and_interrupt()
    out = lava_boot(
        b, "initrd.cpio.gz", "booti ${kernel_addr_r} ${initrd_addr_r}:${initrd_size} ${fdt_addr_r}"
    )
    size = initramfs.stat().st_size
    assert f"Bytes transferred = {size} ({size:x} hex)\n" in out
    start = (0xBE000000 - size) & ~0xFFF
    assert (
        "## Flattened Device Tree blob at 43000000\n"
        "   Booting using the fdt blob at 0x43000000\n"
        "Working FDT set to 43000000\n"
        f"   Loading Ramdisk to {start:08x}, end {start + size:08x} ... OK\n"
        "   Loading Device Tree to 00000000"
    ) in out
    assert re.search(r"\nWorking FDT set to [0-9a-f]+\n\n$", out)
    log = login_shell(b)
    assert "Kernel command line: console=ttyS0,115200n8 root=/dev/ram0 ip=dhcp\r\n" in log
    assert "Unpacking initramfs..." in log
    status = b.sim.status()
    assert status["stage"] == "shell" and status["root"]
    assert status["ramdisk"] is None and os.path.isfile(status["boot_ramdisk"])
    assert shell(b, "cat /etc/from-tftp") == "loaded by u-boot\n"
    assert shell(b, "echo $$") == "1\n"
    # the next boot forgets it: the board's own boot (the host's shell here)
    boot_ramdisk = status["boot_ramdisk"]
    b.send("reboot\n")
    b.expect(COUNTDOWN)
    assert not os.path.exists(boot_ramdisk)
    b.send(" ")
    b.expect(PROMPT)
    assert b.sim.status()["boot_ramdisk"] is None


def test_bootm_uimage_ramdisk_has_its_header_stripped(board, tftp_root, initramfs):
    wrapped = uimage(initramfs.read_bytes(), name=b"busybox")
    (tftp_root / JOB_DIR / "initrd.uimg").write_bytes(wrapped)
    b = board(tftp_root=str(tftp_root))
    b.power_on_and_interrupt()
    out = lava_boot(b, "initrd.uimg", "booti ${kernel_addr_r} ${initrd_addr_r} ${fdt_addr_r}")
    size = initramfs.stat().st_size
    assert f"Bytes transferred = {size + 64} ({size + 64:x} hex)\n" in out
    assert (
        "## Loading init Ramdisk from Legacy Image at 44000000 ...\n   Image Name:   busybox\n"
        in out
    )
    assert "   Verifying Checksum ... OK\n## Flattened Device Tree blob at 43000000\n" in out
    log = login_shell(b)
    freed = re.search(r"Freeing initrd memory: (\d+)K", log)
    assert freed and int(freed.group(1)) == size // 1024  # the payload only
    assert shell(b, "cat /etc/from-tftp") == "loaded by u-boot\n"
    with open(b.sim.status()["boot_ramdisk"], "rb") as handed_over:
        assert handed_over.read() == initramfs.read_bytes()


def test_bootz_and_bootm_hand_over_too(board, tftp_root, initramfs):
    (tftp_root / JOB_DIR / "arm.uimg").write_bytes(uimage(initramfs.read_bytes(), arch=2))
    b = board(tftp_root=str(tftp_root), no_login=True)
    b.power_on_and_interrupt()
    network(b)
    b.run(f"tftp 0x40400000 {JOB_DIR}/Image; tftp 0x44000000 {JOB_DIR}/arm.uimg")
    b.send("bootz 0x40400000 0x44000000\n")
    b.expect("Starting kernel ...\r\n\r\n")
    b.expect(SHELL_PROMPT)
    assert shell(b, "cat /etc/from-tftp") == "loaded by u-boot\n"
    # a bootm without ramdisk boots the board's own root (the host's shell here)
    b.sim.reset()
    b.expect(COUNTDOWN)
    b.send(" ")
    b.expect(PROMPT)
    network(b)
    b.run(f"tftp 0x40400000 {JOB_DIR}/Image")
    b.send("bootm 0x40400000 - \n")
    b.expect("Starting kernel ...")
    b.expect(SHELL_PROMPT)
    assert b.sim.status()["root"] is None


def test_garbage_ramdisk_panics_the_kernel(board, tftp_root):
    b = board(tftp_root=str(tftp_root))
    b.power_on_and_interrupt()
    out = lava_boot(b, "hello.txt", "booti ${kernel_addr_r} ${initrd_addr_r}:${initrd_size}")
    assert "Loading Ramdisk to" in out
    b.expect("Initramfs unpacking failed")
    b.expect("Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)")
    assert b.sim.status()["stage"] == "dead"


def test_sim_run_with_the_bootloader(spawn, tftp_root):
    """`sim run` (a spawned process on stdio) has the bootloader too."""
    child = spawn(bootloader="u-boot", autoboot_delay=1, tftp_root=str(tftp_root))
    child.expect_exact(COUNTDOWN)
    child.send("\r")
    child.expect_exact(PROMPT)
    child.send(f"setenv autoload no; dhcp; tftp 0x40400000 {JOB_DIR}/hello.txt\r")
    child.expect_exact("Bytes transferred = 6 (6 hex)\r\n" + PROMPT)
    child.send("boot\r")
    child.expect_exact("Starting kernel ...")
    child.expect_exact("sim login: ")


def test_the_command_line_options(tmp_path, popen):
    """--bootloader and its options travel on the `sim serve` command line."""
    control = tmp_path / "control"
    bad = popen(
        sim_command("serve", "--control", str(control), "--tcp", "0", "--tftp-root", str(tmp_path)),
        stdout=-1,
        stderr=-1,
    )
    _out, err = bad.communicate(timeout=30)
    assert bad.returncode == 2
    assert b"--tftp-root: need --bootloader u-boot" in err
    argv = [
        "serve", "--control", str(control), "--tcp", "0", "--bootloader", "u-boot",
        "--tftp-root", str(tmp_path), "--autoboot-delay", "0", "--bootloader-prompt", "U-Boot> ",
        "--boot-time", "0.01",
    ]  # fmt: skip
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
    assert b"Hit any key to stop autoboot:  0 \r\nRetrieving file" in data
    assert b"sim login: " in data
