"""The simulated fastboot device speaks the fastboot TCP protocol: driven here by the
real `fastboot` tool (Debian's), as the dispatcher drives it."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lava_dispatcher.sim import child_env
from lava_dispatcher.sim.fastboot import (
    FastbootSim,
    boot_image_parts,
    command,
    make_boot_image,
    power_command,
)

from .conftest import fastboot, sha256


@pytest.fixture
def device(tmp_path: Path, fastboot_tool: str) -> Iterator[FastbootSim]:
    with FastbootSim(tmp_path / "fb", serial="HIKEY0001", product="hikey", powered=True,
                     fail={"flash:vendor": "flash write failure"}) as sim:  # fmt: skip
        yield sim


def test_getvar_answers_what_the_device_is(device: FastbootSim) -> None:
    result = fastboot(device, "getvar", "product")
    assert result.returncode == 0, result.stderr
    assert "product: hikey" in result.stderr
    assert "serialno: HIKEY0001" in fastboot(device, "getvar", "serialno").stderr
    every = fastboot(device, "getvar", "all").stderr
    assert "(bootloader) max-download-size: 0x20000000" in every
    assert "(bootloader) is-userspace: no" in every
    unknown = fastboot(device, "getvar", "no-such-variable")
    assert "Variable not found" in unknown.stderr


def test_flashed_bytes_are_recorded_and_kept(device: FastbootSim, tmp_path: Path) -> None:
    image = tmp_path / "system.img"
    image.write_bytes(os.urandom(200_000))
    result = fastboot(device, "flash", "system", str(image))
    assert result.returncode == 0, result.stderr
    assert "Writing 'system'" in result.stderr and "OKAY" in result.stderr
    flashed = device.status()["flashed"]["system"]
    assert flashed == {"size": 200_000, "sha256": sha256(image.read_bytes()), "sparse": False}
    assert device.partition_file("system").read_bytes() == image.read_bytes()
    # the protocol the tool spoke: the variables it checks, the download, the flash
    assert device.status()["commands"][-2:] == ["download:00030d40", "flash:system"]
    assert fastboot(device, "erase", "system").returncode == 0
    assert "system" not in device.status()["flashed"]
    assert not device.partition_file("system").exists()


def test_an_unknown_partition_and_an_injected_failure_are_refused(
    device: FastbootSim, tmp_path: Path
) -> None:
    image = tmp_path / "x.img"
    image.write_bytes(b"x" * 4096)
    unknown = fastboot(device, "flash", "bogus", str(image))
    assert unknown.returncode == 1
    assert "FAILED (remote: 'partition 'bogus' does not exist')" in unknown.stderr
    injected = fastboot(device, "flash", "vendor", str(image))
    assert injected.returncode == 1
    assert "FAILED (remote: 'flash write failure')" in injected.stderr
    assert device.status()["flashed"] == {}
    traversal = fastboot(device, "flash", "../../etc", str(image))
    assert traversal.returncode == 1 and not (device.directory / "etc.img").exists()


def test_reboot_leaves_fastboot_mode_until_the_board_is_reset(device: FastbootSim) -> None:
    assert fastboot(device, "reboot-bootloader").returncode == 0
    assert fastboot(device, "getvar", "product").returncode == 0  # still in the bootloader
    result = fastboot(device, "reboot")
    assert result.returncode == 0 and "Rebooting" in result.stderr
    assert device.status()["mode"] == "os"
    # the OS has no fastboot server: the tool waits for the device, as for a USB board
    with pytest.raises(subprocess.TimeoutExpired) as waited:
        fastboot(device, "getvar", "product", timeout=1)
    assert b"< waiting for " + device.serial_arg.encode() in (waited.value.stderr or b"")
    device.power("reset")
    assert fastboot(device, "getvar", "product").returncode == 0
    assert device.status()["boots"] == ["reboot-bootloader", "reboot"]


def test_reboot_fastboot_enters_fastbootd(device: FastbootSim) -> None:
    result = fastboot(device, "reboot", "fastboot")  # the tool reconnects and checks is-userspace
    assert result.returncode == 0, result.stderr
    assert device.status()["mode"] == "fastbootd"
    assert "is-userspace: yes" in fastboot(device, "getvar", "is-userspace").stderr


def test_fastboot_boot_takes_a_boot_image(device: FastbootSim, tmp_path: Path) -> None:
    image = tmp_path / "boot.img"
    image.write_bytes(make_boot_image(b"K" * 5000, b"R" * 3000))
    result = fastboot(device, "boot", str(image))
    assert result.returncode == 0, result.stderr
    assert "Booting" in result.stderr
    assert device.status()["boots"] == ["boot"] and device.status()["mode"] == "os"


def test_boot_images_round_trip() -> None:
    data = make_boot_image(b"kernel" * 1000, b"ramdisk" * 700, cmdline="console=ttyAMA0")
    assert boot_image_parts(data) == (b"kernel" * 1000, b"ramdisk" * 700)
    assert boot_image_parts(b"not a boot image" * 10) is None
    assert boot_image_parts(data[:3000]) is None  # cut short


def test_the_command_line_serves_powers_and_stops(tmp_path: Path, fastboot_tool: str) -> None:
    control = tmp_path / "fb"
    process = subprocess.Popen(command("serve", "--control", str(control), "--product", "cli-board"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env())  # fmt: skip
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 30)
        assert ready, "the simulator did not announce itself"
        info = json.loads(process.stdout.readline())
        assert info["pid"] == process.pid and info["serial"] == f"tcp:127.0.0.1:{info['port']}"
        on = subprocess.run(power_command(control, "on"), capture_output=True, text=True,
                            env=child_env(), timeout=30, check=False)  # fmt: skip
        assert on.returncode == 0 and "power on: fastboot" in on.stdout, on.stderr
        result = subprocess.run(["fastboot", "-s", info["serial"], "getvar", "product"],
                                capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
        assert "product: cli-board" in result.stderr
        status = subprocess.run(power_command(control, "status"), capture_output=True, text=True,
                                env=child_env(), timeout=30, check=False)  # fmt: skip
        assert json.loads(status.stdout)["commands"] == ["getvar:product"]
        stop = subprocess.run(command("stop", "--control", str(control)), env=child_env(),
                              capture_output=True, timeout=30, check=False)  # fmt: skip
        assert stop.returncode == 0
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    assert not (control / "control.sock").exists()
    unreachable = subprocess.run(power_command(control, "on"), capture_output=True, text=True,
                                 env=child_env(), timeout=30, check=False)  # fmt: skip
    assert unreachable.returncode == 1 and "no simulator daemon" in unreachable.stderr
