"""LAVA-style fastboot jobs through `lava-dispatch run`, the real fastboot tool, and
the simulated fastboot device whose OS console is the simulated board:
deploy (file:// and http:// images, the device's flash order, a reboot between
flashes), boot (`fastboot boot` of the deployed boot image, whose ramdisk the
console board then runs), a test shell; and the failures that matter.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from lava_dispatcher.sim import child_env

from .conftest import FLASH_ORDER, Lab, sha256

pytestmark = pytest.mark.slow


def test_a_fastboot_job_flashes_boots_and_runs_its_tests(lab: Lab) -> None:
    device = lab.start()
    run = lab.run(lab.job(boot={"commands": ["erase cache"]}))
    assert run.returncode == 0, run.logs[-4000:]
    assert run.cases("0_smoke") == {
        "booted-the-deployed-ramdisk": "pass",
        "overlay-present": "pass",
    }

    status = device.status()
    images = lab.images
    # what the device holds is what the job deployed (system: decompressed from .gz)
    assert status["flashed"] == {
        "ptable": {"size": images.ptable.stat().st_size, "sha256": sha256(images.ptable.read_bytes()), "sparse": False},
        "boot": {"size": images.boot.stat().st_size, "sha256": sha256(images.boot.read_bytes()), "sparse": False},
        "system": {"size": images.system.stat().st_size, "sha256": sha256(images.system.read_bytes()), "sparse": False},
        "userdata": {"size": images.userdata.stat().st_size, "sha256": sha256(images.userdata.read_bytes()), "sparse": False},
    }  # fmt: skip
    for name in status["flashed"]:
        assert device.partition_file(name).stat().st_size == status["flashed"][name]["size"]
    # in the device's flash order, the reboot the ptable asked for right after it,
    # then the boot commands, the reset to fastboot mode, `fastboot boot`
    flashes = [c.split(":", 1)[1] for c in status["commands"] if c.startswith("flash:")]
    assert flashes == [p for p in FLASH_ORDER if p in status["flashed"]]
    order = [c for c in status["commands"] if c.startswith(("flash:", "reboot", "erase:", "boot"))]
    assert order == ["flash:ptable", "reboot-bootloader", "flash:boot", "flash:system",
                     "flash:userdata", "erase:cache", "boot"]  # fmt: skip
    assert status["boots"] == ["reboot-bootloader", "boot"]
    assert status["mode"] == "off"  # finalize powered the board off
    lava = run.cases("lava")
    for action in ("fastboot-flash-action", "wait-device-boardid", "fastboot-reboot-bootloader",
                   "fastboot-boot-commands", "boot-fastboot", "login-action", "overlay-unpack"):  # fmt: skip
        assert lava.get(action) == "pass", (action, lava)
    assert "fastboot -s tcp:127.0.0.1:" in run.logs and " flash system " in run.logs


def test_the_reboot_sequence_boots_the_flashed_boot_partition(lab: Lab) -> None:
    device = lab.start()
    dictionary = lab.device_dict()
    dictionary["actions"]["boot"]["methods"]["fastboot"] = ["reboot"]
    run = lab.run(lab.job(), device=dictionary)
    assert run.returncode == 0, run.logs[-4000:]
    assert run.cases("0_smoke") == {
        "booted-the-deployed-ramdisk": "pass",
        "overlay-present": "pass",
    }
    assert device.status()["boots"] == ["reboot-bootloader", "reboot"]
    assert run.cases("lava")["fastboot-reboot"] == "pass"


def test_a_partition_the_device_refuses_ends_the_job_naming_it(lab: Lab) -> None:
    device = lab.start(fail={"flash:system": "flash write failure (sim)"})
    run = lab.run(lab.job())
    assert run.returncode == 1
    record = run.job_record()
    assert record["result"] == "fail"
    assert record["error_type"] == "Job"
    message = record["error_msg"]
    assert "flashing partition 'system'" in message, message
    assert "flash write failure (sim)" in message, message  # fastboot's own report
    assert set(device.status()["flashed"]) == {"ptable", "boot"}  # it stopped there
    assert run.cases("lava")["fastboot-flash-action"] == "fail"


def test_an_unknown_partition_fails_with_the_devices_words(lab: Lab) -> None:
    lab.start()
    images = {"ptable": {"url": lab.images.ptable.as_uri()},
              "bogus": {"url": lab.images.userdata.as_uri()}}  # fmt: skip
    run = lab.run(lab.job(images=images, test=False))
    assert run.returncode == 1
    message = run.job_record()["error_msg"]
    assert "flashing partition 'bogus'" in message and "partition 'bogus' does not exist" in message


def test_a_device_that_never_answers_is_an_infrastructure_error_naming_it(lab: Lab) -> None:
    """The board's reset boots its OS (its bootloader never waits in fastboot mode):
    wait-device-boardid runs out of time and says which device did not answer."""
    device = lab.start()
    assert lab.console is not None
    dictionary = lab.device_dict()
    dictionary["commands"]["hard_reset"] = " ".join(lab.console.power_command("reset"))
    run = lab.run(lab.job(timeouts={"actions": {"wait-device-boardid": {"seconds": 3}}}),
                  device=dictionary)  # fmt: skip
    assert run.returncode == 1
    record = run.job_record()
    assert record["error_type"] == "Infrastructure", record
    assert f"fastboot device {device.serial_arg} did not answer" in record["error_msg"]
    assert "wait-device-boardid" in record["error_msg"]
    assert device.status()["flashed"] == {}


def test_a_worker_without_fastboot_is_an_infrastructure_error_naming_it(
    lab: Lab, tmp_path: Path
) -> None:
    lab.start()
    env = child_env()
    # the interpreter's own directory stays on PATH (power commands use it); fastboot is elsewhere
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), str(tmp_path / "empty")])
    run = lab.run(lab.job(test=False), env=env)
    assert run.returncode == 1
    record = run.job_record()
    assert record["error_type"] == "Infrastructure"
    assert "the fastboot tool is not installed" in record["error_msg"], record


def test_a_board_without_hard_reset_is_asked_to_restart_its_bootloader(lab: Lab) -> None:
    """No hard_reset: enter-fastboot-action finds the board in fastboot mode and
    restarts its bootloader (fastboot reboot-bootloader), at deploy and at boot."""
    device = lab.start(powered=True)
    dictionary = lab.device_dict()
    del dictionary["commands"]["hard_reset"]
    run = lab.run(lab.job(), device=dictionary)
    assert run.returncode == 0, run.logs[-4000:]
    assert run.cases("0_smoke") == {
        "booted-the-deployed-ramdisk": "pass",
        "overlay-present": "pass",
    }
    assert run.cases("lava")["enter-fastboot-action"] == "pass"
    assert device.status()["boots"] == [
        "reboot-bootloader",
        "reboot-bootloader",
        "reboot-bootloader",
        "boot",
    ]
