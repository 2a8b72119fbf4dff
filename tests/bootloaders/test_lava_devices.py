"""LAVA's own rendered device dictionaries for these methods (x86-01: ipxe,
d02-01: grub, hikey-01: a grub boot sequence) load unchanged, and LAVA-style
jobs on them validate and build the pipeline LAVA builds, action for action
(less the actions we do not have: bootloader-from-media, export-device-env).
Also the pipelines of barebox, depthcharge and grub-efi devices, and the
refusals that name what is not supported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e.helpers import run_dispatch, write_yaml

from .helpers import LOADERS

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "lava-devices"
SMOKE = {
    "from": "inline",
    "name": "smoke",
    "path": "inline/smoke.yaml",
    "repository": {
        "metadata": {"format": "Lava-Test Test Definition 1.0", "name": "smoke"},
        "run": {"steps": ["lava-test-case echo --result pass"]},
    },
}
LOGIN = [("auto-login-action", 1), ("login-action", 2), ("expect-shell-connection", 1)]


def lava_device(name: str) -> Path:
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared LAVA device dictionaries are not available")
    return path


def lava_job(
    method: str, commands: str, deploy: dict[str, Any] | None = None, **boot: Any
) -> dict[str, Any]:
    return {
        "device_type": "lava",
        "job_name": f"{method} {commands}",
        "visibility": "public",
        "timeouts": {"job": {"minutes": 15}, "action": {"minutes": 5}},
        "actions": [
            {"deploy": deploy or {
                "to": "tftp",
                "kernel": {"url": "http://images.example.org/kernel/Image"},
                "ramdisk": {"url": "http://images.example.org/rootfs.cpio.gz", "compression": "gz"},
                "dtb": {"url": "http://images.example.org/board.dtb"},
                "os": "oe",
            }},
            {"boot": {"method": method, "commands": commands,
                      "prompts": ["root@debian:~#", "/ #"], **boot}},
            {"test": {"timeout": {"minutes": 5}, "definitions": [SMOKE]}},
        ],
    }  # fmt: skip


def boot_tree(job: dict[str, Any], device: Path, tmp_path: Path) -> list[tuple[str, int]]:
    """(name, depth) of the boot block's actions, as `lava-dispatch describe --yaml` gives them."""
    path = write_yaml(tmp_path / "job.yaml", job)
    valid = run_dispatch("validate", str(path), "--device", str(device))
    assert valid.returncode == 0, valid.stdout + valid.stderr
    described = run_dispatch("describe", str(path), "--device", str(device), "--yaml")
    assert described.returncode == 0, described.stderr
    (boot,) = [a for a in yaml.safe_load(described.stdout)["pipeline"] if a["level"] == "2"]
    tree: list[tuple[str, int]] = []

    def walk(action: dict[str, Any], depth: int) -> None:
        tree.append((action["name"], depth))
        for child in action.get("pipeline") or []:
            walk(child, depth + 1)

    walk(boot, 0)
    return tree


def refusal(job: dict[str, Any], device: Path, tmp_path: Path) -> str:
    path = write_yaml(tmp_path / "job.yaml", job)
    proc = run_dispatch("validate", str(path), "--device", str(device))
    assert proc.returncode == 2
    return proc.stdout + proc.stderr


@pytest.mark.parametrize("commands", ["ramdisk", "nfs"])
def test_x86_ipxe(tmp_path: Path, commands: str) -> None:
    device = lava_device("x86-01.yaml")
    deploy = None
    if commands == "nfs":
        deploy = {"to": "tftp", "kernel": {"url": "http://images.example.org/bzImage"},
                  "ramdisk": {"url": "http://images.example.org/initrd.gz", "compression": "gz"},
                  "nfsrootfs": {"url": "http://images.example.org/rootfs.tar.gz",
                                "compression": "gz"},
                  "os": "debian"}  # fmt: skip
    tree = boot_tree(lava_job("ipxe", commands, deploy), device, tmp_path)
    assert tree == [
        ("bootloader-action", 0),
        ("bootloader-overlay", 1),
        ("connect-device", 1),
        ("bootloader-retry", 1),
        ("reset-device", 2),
        ("pdu-reboot", 3),
        ("bootloader-interrupt", 2),
        ("bootloader-commands", 2),
        *[(name, depth + 1) for name, depth in LOGIN],
    ]


@pytest.mark.parametrize("commands", ["ramdisk", "nfs"])
def test_d02_grub(tmp_path: Path, commands: str) -> None:
    device = lava_device("d02-01.yaml")
    tree = boot_tree(lava_job("grub", commands), device, tmp_path)
    assert tree == [
        ("grub-main-action", 0),
        ("bootloader-overlay", 1),
        ("connect-device", 1),
        ("reset-device", 1),
        ("pdu-reboot", 2),
        ("bootloader-interrupt", 1),
        ("bootloader-commands", 1),
        *LOGIN,
    ]


def test_d02_grub_installer_waits_for_boot_finished(tmp_path: Path) -> None:
    device = lava_device("d02-01.yaml")
    job = lava_job("grub", "debian-installer", boot_finished=["reboot: Restarting system"])
    del job["actions"][1]["boot"]["prompts"]
    job["actions"].pop()
    tree = boot_tree(job, device, tmp_path)
    assert tree[-2:] == [("installer-wait", 1), ("power-off", 1)]


def test_d02_has_no_grub_efi_method(tmp_path: Path) -> None:
    error = refusal(lava_job("grub-efi", "ramdisk"), lava_device("d02-01.yaml"), tmp_path)
    assert "grub-efi: device 'd02-01' has no boot method 'grub-efi'" in error


def test_a_stanza_the_device_does_not_have(tmp_path: Path) -> None:
    error = refusal(lava_job("ipxe", "usb"), lava_device("x86-01.yaml"), tmp_path)
    assert "commands: 'usb' is not a command set of the device's ipxe method" in error
    assert "'nfs', 'nbd', 'ramdisk'" in error


def test_hikey_grub_sequences_are_refused_by_name(tmp_path: Path) -> None:
    job = lava_job("grub", "installed")
    del job["actions"][0]  # hikey deploys with fastboot: only the boot matters here
    error = refusal(job, lava_device("hikey-01.yaml"), tmp_path)
    assert "boots grub through a sequence (wait-fastboot-interrupt)" in error
    assert "grub sequences are not supported" in error


def device_for(method: str, **method_extra: Any) -> dict[str, Any]:
    loader = LOADERS[method]
    return {
        "extends": "sim",
        "hostname": f"{method}-01",
        "constants": {method: loader.constants},
        "commands": {"connect": "telnet localhost 7001", "hard_reset": "pdu reboot 1"},
        "actions": {
            "deploy": {"methods": {"tftp": None}},
            "boot": {"methods": {method: {"parameters": loader.parameters, **loader.stanzas,
                                          **method_extra}}},
        },
    }  # fmt: skip


def test_barebox_pipeline(tmp_path: Path) -> None:
    device = write_yaml(tmp_path / "device.yaml", device_for("barebox"))
    tree = boot_tree(lava_job("barebox", "ramdisk"), device, tmp_path)
    assert tree == [
        ("barebox-action", 0),
        ("bootloader-overlay", 1),
        ("connect-device", 1),
        ("barebox-retry", 1),
        ("reset-device", 2),
        ("pdu-reboot", 3),
        ("bootloader-interrupt", 2),
        ("bootloader-commands", 2),
        *[(name, depth + 1) for name, depth in LOGIN],
    ]


def test_depthcharge_pipeline_and_its_checks(tmp_path: Path) -> None:
    device = write_yaml(tmp_path / "device.yaml", device_for("depthcharge"))
    tree = boot_tree(lava_job("depthcharge", "ramdisk"), device, tmp_path)
    assert tree == [
        ("depthcharge-action", 0),
        ("depthcharge-overlay", 1),
        ("depthcharge-retry", 1),
        ("connect-device", 2),
        ("reset-device", 2),
        ("pdu-reboot", 3),
        ("depthcharge-start", 2),
        ("bootloader-commands", 2),
        *[(name, depth + 1) for name, depth in LOGIN],
    ]
    broken = device_for("depthcharge")
    del broken["actions"]["boot"]["methods"]["depthcharge"]["ramdisk"]["cmdline"]
    del broken["actions"]["boot"]["methods"]["depthcharge"]["parameters"]["start_message"]
    error = refusal(
        lava_job("depthcharge", "ramdisk"), write_yaml(tmp_path / "broken.yaml", broken), tmp_path
    )
    assert "No cmdline found in ramdisk" in error
    assert "Missing Depthcharge start message for device" in error


def test_grub_efi_pipeline_and_its_refusals(tmp_path: Path) -> None:
    device = write_yaml(tmp_path / "device.yaml", device_for("grub-efi", reset_device=False))
    tree = boot_tree(lava_job("grub-efi", "ramdisk"), device, tmp_path)
    # reset_device: false keeps the board as it is
    assert [name for name, _ in tree][:5] == [
        "grub-main-action", "bootloader-overlay", "connect-device", "bootloader-interrupt",
        "bootloader-commands",
    ]  # fmt: skip
    menu = write_yaml(tmp_path / "menu.yaml", device_for("grub-efi", menu_options="pxe-grub"))
    error = refusal(lava_job("grub-efi", "ramdisk"), menu, tmp_path)
    assert "selects a UEFI menu entry first (menu_options: 'pxe-grub')" in error
