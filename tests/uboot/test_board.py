"""The U-Boot board (QEMU arm64 + Debian's u-boot-qemu) driven by hand, as a
LAVA dispatcher will drive it: power commands from the device dictionary,
the console through its connect command (telnet), U-Boot commands typed at
its prompt. The findings are written up in README.md.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import yaml

from lava_dispatcher.devices import load_device_data

from . import board as board_module
from .conftest import (
    AUTOBOOT_PROMPT,
    BOARD,
    BOOT_DEADLINE,
    PROMPT_LINE,
    UBOOT_BANNER,
    UBOOT_PROMPT,
    Console,
    UBootBoard,
    UBootImages,
    _gone,
    images,
    make_board,
)

# What this U-Boot build says (2023.01+dfsg-2+deb12u3, qemu_arm64)
TFTP_NOT_FOUND = "TFTP error: 'File not found' (1)"
TFTP_NOT_RETRYING = "Not retrying..."
ENV = {  # its default environment: the load addresses
    "kernel_addr_r": "0x40400000",
    "ramdisk_addr_r": "0x44000000",
    "fdt_addr": "0x40000000",
    "scriptaddr": "0x40200000",
    "pxefile_addr_r": "0x40300000",
    "loadaddr": "0x40200000",
    "fdt_high": "0xffffffff",
    "initrd_high": "0xffffffff",
    "bootdelay": "2",
}
SHELL_PROMPT = images.PROMPT  # the busybox initramfs' root prompt
FDT_MAGIC = "magic:\t\t\t0xd00dfeed"


def _place(source: Path, dest: Path) -> Path:
    """Put `source` in the TFTP root as `dest` (a hard link, else a copy)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, dest)
    except OSError:
        dest.write_bytes(source.read_bytes())
    return dest


def _interrupt(console: Console) -> tuple[float, float]:
    """Stop the autoboot countdown as LAVA does here (interrupt_char '' with
    the newline): the seconds until the countdown was seen and until the prompt."""
    console.expect(AUTOBOOT_PROMPT)
    seen = time.monotonic()
    console.sendline("")
    console.expect(PROMPT_LINE)
    return seen, time.monotonic()


def _shell(console: Console, line: str) -> str:
    """A command at the busybox shell; its output (terminal queries removed)."""
    return console.command(line, prompt=SHELL_PROMPT).strip()


def _env(console: Console, *names: str) -> dict[str, str]:
    output = console.command("printenv " + " ".join(names))
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


def _template(board: UBootBoard) -> dict[str, Any]:
    data = yaml.safe_load(board.device_yaml())
    assert isinstance(data, dict)
    return data


# -- without QEMU ---------------------------------------------------------------------


def test_device_template_is_a_lava_device(tmp_path: Path) -> None:
    board = make_board(tmp_path / "my board", port=7101)  # a space in the paths
    data = _template(board)
    device = load_device_data(data, "device-template.yaml")
    commands = device["commands"]
    assert commands["connect"] == "telnet 127.0.0.1 7101" == board.connect_cmd
    for key, action in (("power_on", "on"), ("power_off", "off"), ("hard_reset", "reset")):
        argv = shlex.split(commands[key])
        assert argv == [sys.executable, str(BOARD), action, "--state", str(board.state)]
    assert device["parameters"]["booti"] == {
        "kernel": ENV["kernel_addr_r"], "ramdisk": ENV["ramdisk_addr_r"], "dtb": ENV["fdt_addr"],
    }  # fmt: skip
    uboot = device["actions"]["boot"]["methods"]["u-boot"]
    assert uboot["parameters"]["bootloader_prompt"] == UBOOT_PROMPT.strip()
    assert uboot["parameters"]["interrupt_prompt"] == AUTOBOOT_PROMPT
    assert uboot["ramdisk"]["commands"][-1] == "booti {KERNEL_ADDR} {RAMDISK_ADDR} {DTB_ADDR}"
    assert "tftp" in device["actions"]["deploy"]["methods"]


def _tool(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BOARD), *args, "--state", str(state)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_power_tool_errors_and_idempotence(tmp_path: Path) -> None:
    # no board.json
    result = _tool(tmp_path / "nothing", "on")
    assert result.returncode == 1
    assert "board.py on: no " in result.stderr and "board.json" in result.stderr
    # no U-Boot, no QEMU
    board = make_board(tmp_path / "a", bios=str(tmp_path / "no-u-boot.bin"))
    result = _tool(board.state, "on")
    assert (result.returncode, result.stderr.strip()) == (
        1, f"board.py on: no U-Boot at {tmp_path / 'no-u-boot.bin'} "
        "(apt-get install u-boot-qemu, or run .ci/qemu-images)",
    )  # fmt: skip
    board = make_board(tmp_path / "b", qemu="qemu-system-nonesuch")
    result = _tool(board.state, "on")
    assert result.returncode == 1
    assert "qemu-system-nonesuch not found" in result.stderr
    assert not (board.state / board_module.PIDFILE).exists()
    # off and status when off; off twice
    for _ in range(2):
        result = _tool(board.state, "off")
        assert (result.returncode, result.stdout.strip()) == (0, "already off")
    result = _tool(board.state, "status")
    assert (result.returncode, result.stdout.strip()) == (3, "off")
    # a pid file naming another process: never killed
    other = subprocess.Popen(["sleep", "60"])
    try:
        (board.state / board_module.PIDFILE).write_text(f"{other.pid}\n")
        result = _tool(board.state, "off")
        assert result.returncode == 0
        assert f"pid {other.pid} is not this board's QEMU" in result.stdout
        assert other.poll() is None
        assert not (board.state / board_module.PIDFILE).exists()
    finally:
        other.kill()
        other.wait()
    # python -m tests.uboot.board works as well as the script path
    result = subprocess.run(
        [sys.executable, "-m", "tests.uboot.board", "status", "--state", str(board.state)],
        capture_output=True, text=True, timeout=60, check=False,
        cwd=Path(board_module.__file__).resolve().parents[2],
    )  # fmt: skip
    assert (result.returncode, result.stdout.strip()) == (3, "off")


# -- the board --------------------------------------------------------------------------


def test_uboot_by_hand(uboot_board: UBootBoard, uboot_images: UBootImages) -> None:
    board = uboot_board
    job = board.tftp_root / "job"
    kernel = _place(uboot_images.kernel, job / "Image")
    hello = job / "hello.txt"
    hello.write_bytes(b"hello from the TFTP root\n" * 40)

    started = time.monotonic()
    board.power_on()
    powered = time.monotonic()
    pid = board.pid()
    assert pid is not None and not _gone(pid)
    status = board.run(board.status_cmd)
    assert status.stdout.strip() == (
        f"on pid {pid} port {board.port} (waiting for the console connection)"
    )
    again = board.run(board.power_on_cmd)  # on when on: nothing changes
    assert again.stdout.startswith("already on") and board.pid() == pid

    console = board.connect()
    # QEMU started the machine when the console connected: nothing is missed
    banner = console.expect(UBOOT_BANNER)
    assert "Trying 127.0.0.1...\r\nConnected to 127.0.0.1." in banner
    seen, prompt = _interrupt(console)
    # the newline gave one prompt: this command's output comes before the next one
    assert console.command("echo lava-marker") == "lava-marker"
    status = board.run(board.status_cmd)
    assert status.stdout.strip() == f"on pid {pid} port {board.port}"

    assert console.command("setenv lava_test hello-uboot") == ""
    assert console.command("printenv lava_test") == "lava_test=hello-uboot"
    env = _env(console, *ENV, "fdtcontroladdr")
    assert {name: env.get(name) for name in ENV} == ENV
    assert re.fullmatch(r"[0-9a-f]+", env["fdtcontroladdr"])  # no 0x: U-Boot's hex
    assert console.command("printenv fdt_addr_r") == '## Error: "fdt_addr_r" not defined'
    # QEMU's device tree: at fdt_addr, and U-Boot's relocated copy at fdtcontroladdr
    for variable in ("fdt_addr", "fdtcontroladdr"):
        assert FDT_MAGIC in console.command(f"fdt addr ${{{variable}}}; fdt header")

    # static addresses (QEMU user net: the guest 10.0.2.15, the TFTP server 10.0.2.2)
    console.command(
        "setenv ipaddr 10.0.2.15; setenv netmask 255.255.255.0; setenv serverip 10.0.2.2"
    )
    output = console.command("tftp ${loadaddr} job/hello.txt")
    size = hello.stat().st_size
    assert f"Bytes transferred = {size} ({size:x} hex)" in output
    output = console.command("crc32 ${loadaddr} ${filesize}")
    assert output.endswith(f"==> {zlib.crc32(hello.read_bytes()):08x}")

    # a missing file
    output = console.command("tftp ${kernel_addr_r} job/no-such-file")
    assert TFTP_NOT_FOUND in output and TFTP_NOT_RETRYING in output
    assert console.command("echo $?") == "1"

    # DHCP, then the kernel (33 MB)
    console.command("setenv autoload no")
    assert "DHCP client bound to address 10.0.2.15" in console.command("dhcp")
    assert _env(console, "ipaddr", "serverip") == {"ipaddr": "10.0.2.15", "serverip": "10.0.2.2"}
    before = time.monotonic()
    output = console.command("tftp ${kernel_addr_r} job/Image")
    tftp_seconds = time.monotonic() - before
    size = kernel.stat().st_size
    assert f"Bytes transferred = {size} ({size:x} hex)" in output
    assert "Filename 'job/Image'." in output and "Load address: 0x40400000" in output

    # power reset: the same console shows U-Boot from its banner, with the default environment
    before = time.monotonic()
    board.reset()
    console.expect(UBOOT_BANNER)
    _, reset_prompt = _interrupt(console)
    assert console.command("printenv lava_test") == '## Error: "lava_test" not defined'
    assert board.pid() == pid  # the same QEMU

    # power off: that QEMU is gone, the console closed, off again does nothing
    board.power_off()
    assert _gone(pid)
    assert "Connection closed by foreign host." in console.wait_eof()
    assert board.run(board.status_cmd, check=False).returncode == 3
    assert board.run(board.power_off_cmd).stdout.strip() == "already off"
    print(
        f"timings: power on {powered - started:.2f} s (command returned); "
        f"autoboot prompt {seen - started:.2f} s; U-Boot prompt {prompt - started:.2f} s "
        f"after power on; tftp of a {size} byte kernel {tftp_seconds:.2f} s; "
        f"reset to U-Boot prompt {reset_prompt - before:.2f} s"
    )


def _lava_commands(board: UBootBoard, files: dict[str, str]) -> tuple[list[str], dict[str, Any]]:
    """The template's ramdisk commands with LAVA's placeholders filled in as
    the dispatcher will: addresses from parameters.booti, files relative to
    the TFTP root."""
    device = _template(board)
    addresses = device["parameters"]["booti"]
    values = {
        "{KERNEL_ADDR}": addresses["kernel"], "{RAMDISK_ADDR}": addresses["ramdisk"],
        "{DTB_ADDR}": addresses["dtb"], "{KERNEL}": files["kernel"],
        "{RAMDISK}": files["ramdisk"], "{DTB}": files["dtb"],
    }  # fmt: skip
    commands = []
    for line in device["actions"]["boot"]["methods"]["u-boot"]["ramdisk"]["commands"]:
        for placeholder, value in values.items():
            line = line.replace(placeholder, value)
        assert "{" not in line.replace("${", ""), line
        commands.append(line)
    return commands, device


def _boot_to_shell(console: Console, booti: str, errors: list[str]) -> float:
    """Type the booti command; the seconds until the busybox shell prompt."""
    before = time.monotonic()
    console.sendline(booti)
    console.expect("Starting kernel ...")
    head = console.expect("Linux version 6.", timeout=BOOT_DEADLINE)
    for error in errors:
        assert error not in head, f"U-Boot said {error!r} on booti"
    console.expect(images.MARKER, timeout=BOOT_DEADLINE)
    console.expect(SHELL_PROMPT, timeout=BOOT_DEADLINE)
    return time.monotonic() - before


def test_tftp_and_booti_to_a_shell(uboot_board: UBootBoard, uboot_images: UBootImages) -> None:
    board = uboot_board
    job = board.tftp_root / "job"
    _place(uboot_images.kernel, job / "Image")
    _place(uboot_images.initramfs_uimage, job / "ramdisk.uimg")
    board.dumpdtb(job / "virt.dtb")  # what a LAVA job deploys as its dtb
    commands, device = _lava_commands(
        board, {"kernel": "job/Image", "ramdisk": "job/ramdisk.uimg", "dtb": "job/virt.dtb"}
    )
    errors = device["constants"]["u-boot"]["error-messages"]
    params = device["actions"]["boot"]["methods"]["u-boot"]["parameters"]

    # 1. as the LAVA job will: the template's commands, the dtb dumped from QEMU
    started = time.monotonic()
    board.power_on()
    console = board.connect()
    console.expect(params["interrupt_prompt"])
    console.sendline(params["interrupt_char"])
    console.expect("\n" + params["bootloader_prompt"] + " ")
    tftp_lines = 0
    for line in commands[:-1]:
        output = console.command(line)
        for error in errors:
            assert error not in output, f"{line}: {output}"
        if line.startswith("tftp "):
            assert "Bytes transferred = " in output, f"{line}: {output}"
            tftp_lines += 1
    assert tftp_lines == 3
    loaded = time.monotonic()
    lava_boot = _boot_to_shell(console, commands[-1], errors)
    assert _shell(console, "uname -m") == "aarch64"
    assert _shell(console, "cat /proc/cmdline") == "console=ttyAMA0,115200n8"
    lava_total = time.monotonic() - started

    # 2. hard reset from Linux, then QEMU's own dtb (U-Boot's copy at fdtcontroladdr)
    board.reset()
    console.expect(UBOOT_BANNER)
    _interrupt(console)
    for line in ("setenv autoload no", "dhcp", "tftp ${kernel_addr_r} job/Image",
                 "tftp ${ramdisk_addr_r} job/ramdisk.uimg",
                 "setenv bootargs console=ttyAMA0,115200"):  # fmt: skip
        output = console.command(line)
        assert (
            line.startswith("set") or "DHCP client bound" in output or "Bytes transferred" in output
        )
    qemu_dtb_boot = _boot_to_shell(
        console, "booti ${kernel_addr_r} ${ramdisk_addr_r} ${fdtcontroladdr}", errors
    )
    assert _shell(console, "cat /proc/cmdline") == "console=ttyAMA0,115200"

    pid = board.pid()
    board.power_off()
    assert pid is not None and _gone(pid)
    print(
        f"timings: power on to loaded (interrupt + {len(commands) - 1} commands, 3 tftp)"
        f" {loaded - started:.2f} s; booti to shell {lava_boot:.2f} s (dumped dtb),"
        f" {qemu_dtb_boot:.2f} s (fdtcontroladdr); power on to shell {lava_total:.2f} s"
    )


def test_reset_when_off_powers_on(uboot_board: UBootBoard) -> None:
    board = uboot_board
    result = board.run(board.reset_cmd)
    assert result.stdout.startswith("was off: on (pid ")
    pid = board.pid()
    assert pid is not None and not _gone(pid)
    # QEMU waits for the console connection before it starts the machine
    result = board.run(board.reset_cmd)
    assert result.stdout.strip() == (
        "not started yet (QEMU waits for the console connection): nothing to reset"
    )
    console = board.connect()
    console.expect(UBOOT_BANNER)
    _interrupt(console)
    assert console.command("version").startswith(UBOOT_BANNER)
    assert board.pid() == pid
