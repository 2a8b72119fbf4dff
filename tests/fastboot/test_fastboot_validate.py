"""Fastboot jobs against LAVA's rendered hikey device dictionary (read from the shared
tree, unchanged), and the checks that refuse what cannot run. Nothing runs here."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from lava_dispatcher import plugins
from lava_dispatcher.builtin_plugins import get_manager
from lava_dispatcher.devices import Device, load_device, load_device_data
from lava_dispatcher.errors import JobError
from lava_dispatcher.parser import parse_job
from lava_dispatcher.schemas import load_yaml, validate_device
from lava_dispatcher.sim import child_env

HIKEY = Path(__file__).resolve().parents[2].parent / "shared" / "lava-devices" / "hikey-01.yaml"

INLINE = {
    "from": "inline", "name": "smoke", "path": "inline/smoke.yaml",
    "repository": {"metadata": {"format": "Lava-Test Test Definition 1.0", "name": "smoke"},
                   "run": {"steps": ["lava-test-case a --result pass"]}},
}  # fmt: skip


def hikey_job(**deploy_extra: Any) -> dict[str, Any]:
    """A fastboot job as LKFT writes them for a HiKey (images over http)."""
    images = {
        "ptable": {"url": "http://example.com/hikey/ptable-linux-8g.img", "reboot": "hard-reset"},
        "boot": {"url": "http://example.com/hikey/boot.img"},
        "system": {"url": "http://example.com/hikey/rpb-console-image.rootfs.img.gz", "compression": "gz"},
    }  # fmt: skip
    return {
        "job_name": "hikey fastboot",
        "device_type": "hi6220-hikey-r2",
        "visibility": "public",
        "timeouts": {"job": {"minutes": 30}, "action": {"minutes": 5}},
        "actions": [
            {"deploy": {"to": "fastboot", "timeout": {"minutes": 15}, "images": images, **deploy_extra}},
            {"boot": {"method": "fastboot", "prompts": ["root@hikey:~#"], "timeout": {"minutes": 5},
                      "transfer_overlay": {"download_command": "wget -S", "unpack_command": "tar -C / -xzf"}}},
            {"test": {"timeout": {"minutes": 5}, "definitions": [INLINE]}},
        ],
    }  # fmt: skip


@pytest.fixture
def hikey() -> Device:
    if not HIKEY.exists():
        pytest.skip(f"{HIKEY} is absent: the shared LAVA device dictionaries are not available")
    return load_device(HIKEY, plugins.device_type_dirs(get_manager()))


def names(tree: list[dict[str, Any]]) -> list[str]:
    return [node["name"] for node in tree]


def test_the_hikey_dictionary_loads_unchanged(hikey: Device) -> None:
    raw = load_yaml(HIKEY.read_text(), HIKEY.name)
    assert validate_device(copy.deepcopy(raw)) == raw
    assert hikey["fastboot_serial_number"] == "0123456789ABCDEF"
    assert hikey["actions"]["boot"]["methods"]["fastboot"] == ["boot"]


def test_a_fastboot_job_validates_against_hikey_with_lavas_pipeline(hikey: Device) -> None:
    job = parse_job(yaml.safe_dump(hikey_job()), hikey, "1")
    job.validate()
    deploy, boot, _test, _finalize = job.describe()["pipeline"]
    assert deploy["name"] == "fastboot-deploy"
    assert names(deploy["pipeline"]) == [
        "lava-overlay", "download-retry", "download-retry", "download-retry",
        "connect-device", "pre-power-command", "reset-device", "fastboot-flash-order-action",
    ]  # fmt: skip
    # the device's flash order (ptable, boot, system), the reboot ptable asks for after it
    flash = deploy["pipeline"][-1]["pipeline"]
    assert names(flash) == [
        "wait-device-boardid", "fastboot-flash-action", "pdu-reboot",
        "wait-device-boardid", "fastboot-flash-action",
        "wait-device-boardid", "fastboot-flash-action",
    ]  # fmt: skip
    flash_actions = [a for a in job.pipeline.walk() if a.name == "fastboot-flash-action"]
    assert [a.partition for a in flash_actions] == ["ptable", "boot", "system"]  # type: ignore[attr-defined]
    assert boot["name"] == "fastboot-boot"
    assert names(boot["pipeline"]) == [
        "connect-device", "reset-device", "wait-device-boardid", "boot-fastboot",
        "pre-os-command", "auto-login-action", "expect-shell-connection", "overlay-unpack",
    ]  # fmt: skip


def test_the_cli_validates_the_job_with_the_shared_file(hikey: Device, tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(hikey_job()))
    proc = subprocess.run([sys.executable, "-m", "lava_dispatcher", "validate", str(tmp_path / "job.yaml"),
                           "--device", str(HIKEY)], capture_output=True, text=True, env=child_env(),
                          timeout=60, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def test_apply_overlay_is_refused_with_what_to_do_instead(hikey: Device) -> None:
    job = hikey_job()
    job["actions"][0]["deploy"]["images"]["system"]["apply-overlay"] = True
    with pytest.raises(
        JobError, match=r"images\.system\.apply-overlay is not supported.*transfer_overlay"
    ):
        parse_job(yaml.safe_dump(job), hikey, "1").validate()


def test_device_gaps_are_named(hikey: Device) -> None:
    device = copy.deepcopy(dict(hikey))
    device["fastboot_serial_number"] = "0000000000"
    device["actions"]["boot"]["methods"]["fastboot"] = ["boot", "dance"]
    device.pop("flash_cmds_order")
    loaded = load_device_data(device, "hikey-gaps", plugins.device_type_dirs(get_manager()))
    with pytest.raises(JobError) as info:
        parse_job(yaml.safe_dump(hikey_job()), loaded, "1").validate()
    message = str(info.value)
    assert "device fastboot serial number unset" in message
    assert "device flash commands order missing" in message
    assert "Unknown boot sequence 'dance'" in message


def test_a_device_without_a_serial_number_is_not_a_fastboot_device(hikey: Device) -> None:
    device = copy.deepcopy(dict(hikey))
    device.pop("fastboot_serial_number")
    loaded = load_device_data(device, "hikey-no-serial", plugins.device_type_dirs(get_manager()))
    with pytest.raises(
        JobError, match='"fastboot_serial_number" is not in the device configuration'
    ):
        parse_job(yaml.safe_dump(hikey_job()), loaded, "1")
