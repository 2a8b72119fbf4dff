"""Must-show 1 of the real-boards issue: a LAVA-style job on a real U-Boot.

The board is QEMU arm64 running Debian's u-boot-qemu in lab mode (see
board.py and README.md): its console is a telnet port that is there before
power-on, as a ser2net port is, and its power commands drive QEMU's monitor.
`lava-dispatch run` deploys a Debian arm64 kernel, a busybox ramdisk (the
overlay added, a U-Boot header made) and the board's dtb into its own
directory under the board's TFTP root (QEMU's TFTP server, 10.0.2.2), boots
with the device's u-boot ramdisk commands, and runs a test shell on Linux.
Afterwards no TFTP job directory, temporary file or process of the job is
left (must-show 4).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e.helpers import processes_naming

from lava_dispatcher.sim import child_env

from .conftest import BOOT_DEADLINE, UBootBoard, UBootImages

PROMPT = "root@lava-qemu:~# "
SMOKE = {
    "metadata": {"format": "Lava-Test Test Definition 1.0", "name": "smoke"},
    "run": {
        "steps": [
            "lava-test-case arch --shell test \"$(uname -m)\" = aarch64",
            "lava-test-case overlay --shell test -d /lava-1/bin",
            "lava-test-case kernel --shell grep -q 6.1 /proc/version",
        ]
    },
}


def job_definition(board: UBootBoard, images: UBootImages, dtb: Path) -> dict[str, Any]:
    return {
        "job_name": "u-boot ramdisk on a real U-Boot",
        "device_type": "qemu-uboot-arm64",
        "visibility": "public",
        "priority": "medium",
        "timeouts": {"job": {"minutes": 10}, "action": {"minutes": 3},
                     "connection": {"minutes": 2}},
        "actions": [
            {"deploy": {
                "to": "tftp",
                "timeout": {"minutes": 2},
                "kernel": {"url": images.kernel.as_uri(), "type": "image"},
                "ramdisk": {"url": images.initramfs.as_uri(), "compression": "gz"},
                "dtb": {"url": dtb.as_uri()},
                "os": "oe",
            }},
            {"boot": {
                "method": "u-boot",
                "commands": "ramdisk",
                "prompts": [PROMPT],
                "timeout": {"seconds": int(BOOT_DEADLINE * 3)},
            }},
            {"test": {
                "timeout": {"minutes": 3},
                "definitions": [{"from": "inline", "name": "smoke", "path": "inline/smoke.yaml",
                                 "repository": SMOKE}],
            }},
        ],
    }  # fmt: skip


@pytest.mark.slow
def test_lava_style_job_on_a_real_uboot(
    uboot_lab_board: UBootBoard, uboot_images: UBootImages, tmp_path: Path
) -> None:
    board = uboot_lab_board
    dtb = board.dumpdtb(tmp_path / "qemu-virt.dtb")
    work = tmp_path / "job"
    work.mkdir()
    (work / "device.yaml").write_text(board.device_yaml())
    (work / "job.yaml").write_text(yaml.safe_dump(job_definition(board, uboot_images, dtb)))
    (work / "dispatcher.yaml").write_text(
        yaml.safe_dump({"tftp_root": str(board.tftp_root), "dispatcher_ip": "10.0.2.2"})
    )
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    env = child_env()
    env["TMPDIR"] = str(tmpdir)
    out = work / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "lava_dispatcher", "run", str(work / "job.yaml"),
         "--device", str(work / "device.yaml"), "--dispatcher", str(work / "dispatcher.yaml"),
         "--output-dir", str(out), "--job-id", "1"],
        capture_output=True, text=True, env=env, timeout=900, check=False,
    )  # fmt: skip
    logs = (out / "logs.yaml").read_text() if (out / "logs.yaml").exists() else ""
    assert proc.returncode == 0, f"{proc.stderr[-3000:]}\n{logs[-6000:]}"
    results = yaml.safe_load((out / "results.yaml").read_text())
    smoke = {r["case"]: r["result"] for r in results if r["definition"] == "0_smoke"}
    assert smoke == {"arch": "pass", "overlay": "pass", "kernel": "pass"}
    lava = {r["case"]: r["result"] for r in results if r["definition"] == "lava"}
    for action in ("tftp-deploy", "connect-device", "pdu-reboot", "bootloader-interrupt",
                   "bootloader-commands", "login-action", "lava-test-shell", "power-off",
                   "job"):  # fmt: skip
        assert lava.get(action) == "pass", (action, lava)

    # the real U-Boot did the work: its banner, TFTP transfers, its booti
    assert "U-Boot 2023.01" in logs
    assert "TFTP from server 10.0.2.2" in logs and "Bytes transferred" in logs
    assert "booti 0x40400000 0x44000000 0x40000000" in logs
    assert "Starting kernel" in logs and "Linux version 6.1" in logs
    assert "Verifying Checksum ... OK" in logs  # the ramdisk's mkimage header

    # must-show 4: nothing of the job is left
    assert list(board.tftp_root.iterdir()) == []
    assert list(tmpdir.iterdir()) == []
    assert processes_naming(f"telnet 127.0.0.1 {board.port}") == []
    # the board (its QEMU) is the lab's, not the job's: still there, and off
    status = board.run(board.status_cmd, check=False)
    assert status.returncode == 3 and status.stdout.startswith("off"), status.stdout
    assert os.path.isdir(board.state)
