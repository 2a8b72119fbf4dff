"""LAVA-style jobs (tftp deploy, boot with the device's named commands, a
test shell) through `lava-dispatch run` on the simulated board, for each of
grub, grub-efi, ipxe, barebox and depthcharge: the job passes; a missing
TFTP file ends it Incomplete at once, quoting the bootloader's error; an
interrupt the board ignores is sent again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .conftest import Lab
from .helpers import LOADERS

pytestmark = pytest.mark.slow

METHODS = ["grub", "grub-efi", "ipxe", "barebox", "depthcharge"]
#: what the log shows of each method's own steps, and the kernel command line
SIGNS = {
    "grub": ["grub-main-action", "EFI stub: Booting Linux Kernel",
             "Kernel command line: BOOT_IMAGE=/1/tftp-deploy-"],
    "grub-efi": ["grub-main-action", "EFI stub: Booting Linux Kernel"],
    "ipxe": ["bootloader-retry", "Configuring (net0 52:54:00:12:34:56)",
             "Kernel command line: BOOT_IMAGE=Image ip=dhcp console=ttyS0,115200n8 "
             "lava_mac=00:90:05:af:00:7d"],
    "barebox": ["barebox-retry", "Loading ramdisk from '/mnt/tftp/",
                "Starting kernel in secure mode",
                "Kernel command line: 'root=/dev/ram0 ip=dhcp' console=ttyAMA0,115200n8"],
    "depthcharge": ["depthcharge-start", "Command line loaded dynamically from TFTP file",
                    "Kernel command line: console=ttyS0,115200n8 root=/dev/ram0 ip=dhcp"],
}  # fmt: skip


def _cases(results: list[dict[str, Any]], suite: str) -> dict[str, str]:
    return {r["case"]: r["result"] for r in results if r["definition"] == suite}


def _job_error(results: list[dict[str, Any]]) -> dict[str, Any]:
    (record,) = [r for r in results if r["case"] == "job"]
    return record


@pytest.mark.parametrize("method", METHODS)
def test_a_ramdisk_job_passes(lab: Lab, method: str) -> None:
    sim = lab.board(method)
    code, logs, results = lab.run(lab.device(sim, method), lab.job(method))
    assert code == 0, logs[-4000:]
    assert _cases(results, "0_smoke") == {"overlay-in-ramdisk": "pass", "busybox": "pass"}
    boot = _cases(results, "lava")
    assert boot["bootloader-commands"] == "pass"
    for sign in SIGNS[method]:
        assert sign in logs, sign


def test_depthcharge_writes_the_command_line_file(lab: Lab) -> None:
    """The stanza's cmdline and the job's extra_kernel_args reach the kernel,
    through the file next to the kernel that tftpboot fetches."""
    sim = lab.board("depthcharge")
    job = lab.job("depthcharge", extra_kernel_args="lava.marker=42")
    code, logs, _results = lab.run(lab.device(sim, "depthcharge"), job)
    assert code == 0, logs[-4000:]
    line = "The command line is: console=ttyS0,115200n8 root=/dev/ram0 ip=dhcp lava.marker=42"
    assert line in logs
    assert "/kernel/cmdline" in logs  # the tftpboot line names the file


@pytest.mark.parametrize("method", METHODS)
def test_a_missing_tftp_file_fails_at_once_quoting_the_bootloader(lab: Lab, method: str) -> None:
    loader = LOADERS[method]
    commands = [
        loader.missing_line if line == loader.ramdisk_line else line
        for line in loader.stanzas["ramdisk"]["commands"]
    ]
    assert loader.missing_line in commands
    sim = lab.board(method)
    code, _logs, results = lab.run(lab.device(sim, method, commands), lab.job(method))
    assert code == 1
    record = _job_error(results)
    assert record["error_type"] == "Infrastructure"
    assert f"matched a bootloader error message: {loader.missing_error!r}" in record["error_msg"]
    (boot,) = [r for r in results if r["case"] == "bootloader-commands"]
    assert boot["result"] == "fail" and float(boot["duration"]) < 20  # the error, not a timeout


@pytest.mark.parametrize("method", ["grub", "ipxe", "barebox"])
def test_an_ignored_interrupt_is_sent_again(lab: Lab, method: str) -> None:
    sim = lab.board(method, ignore_interrupt=1, autoboot_delay=2)
    code, logs, results = lab.run(lab.device(sim, method), lab.job(method))
    assert code == 0, logs[-4000:]
    assert "the bootloader needed 2 interrupts" in logs
    assert _cases(results, "0_smoke") == {"overlay-in-ramdisk": "pass", "busybox": "pass"}


def test_ipxe_with_a_boot_script(lab: Lab) -> None:
    """use_bootscript: the commands go into script.ipxe next to the kernel,
    the board chains it after two typed lines."""
    sim = lab.board("ipxe")
    code, logs, results = lab.run(lab.device(sim, "ipxe"), lab.job("ipxe", use_bootscript=True))
    assert code == 0, logs[-4000:]
    assert "/kernel/script.ipxe" in logs and "chain tftp://10.0.2.2/1/tftp-deploy-" in logs
    assert _cases(results, "0_smoke") == {"overlay-in-ramdisk": "pass", "busybox": "pass"}


def test_a_grub_installer_without_a_shell_ends_at_boot_finished(lab: Lab, images: Path) -> None:
    """No prompts: the boot waits for boot_finished, then powers the board off."""
    sim = lab.board("grub")
    job = lab.job("grub", boot_finished=["Run /init as init process"])
    del job["actions"][1]["boot"]["prompts"]
    job["actions"].pop()  # no test
    code, logs, results = lab.run(lab.device(sim, "grub"), job)
    assert code == 0, logs[-4000:]
    boot = _cases(results, "lava")
    assert boot["installer-wait"] == "pass" and boot["power-off"] == "pass"
    assert sim.status()["power"] == "off"


def test_a_kernel_type_does_not_matter_without_u_boot(lab: Lab) -> None:
    """As LAVA: only a device with a u-boot boot method gets bootz/booti/bootm
    chosen and a kernel wrapped in a uImage (LAVA's barebox jobs say zimage)."""
    sim = lab.board("barebox")
    job = lab.job("barebox")
    job["actions"][0]["deploy"]["kernel"]["type"] = "zimage"
    code, logs, _results = lab.run(lab.device(sim, "barebox"), job)
    assert code == 0, logs[-2000:]
