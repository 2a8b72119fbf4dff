"""deploy: to: tftp through `lava-dispatch run`: the job's directory under the TFTP
root, the overlay and modules in the ramdisk, the U-Boot header, the NFS root,
the size limit, and nothing left behind.

The job copies its TFTP directory aside with a device user command (run as an
argument list, no shell) so that the test can look at what a bootloader would
have fetched; the directory itself is gone when the job ends.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from testshell.helpers import dispatch, job_definition

from lava_dispatcher import ramdisk
from lava_dispatcher.ramdisk import Entry

SMOKE = {
    "from": "inline",
    "name": "smoke",
    "path": "inline/smoke.yaml",
    "repository": {
        "metadata": {"format": "Lava-Test Test Definition 1.0", "name": "smoke"},
        "run": {"steps": ["lava-test-case a --result pass"]},
    },
}


def _tar(members: dict[str, bytes], compress: bool = False) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if compress else "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def lab(tmp_path: Path) -> dict[str, Path]:
    images = tmp_path / "images"
    images.mkdir()
    (images / "zImage").write_bytes(b"\x00" * 36 + b"\x18\x28\x6f\x01" + b"kernel" * 100)
    (images / "board.dtb").write_bytes(b"\xd0\x0d\xfe\xed" + b"dtb" * 10)
    cpio = ramdisk.pack([Entry.file("init", b"#!/bin/sh\n", mode=0o755)], "none")
    (images / "ramdisk.cpio.gz").write_bytes(gzip.compress(cpio))
    (images / "modules.tar.gz").write_bytes(
        _tar({"lib/modules/6.1.0/foo.ko": b"module"}, compress=True)
    )
    (images / "rootfs.tar.gz").write_bytes(
        _tar({"etc/hostname": b"nfs\n", "bin/sh": b"sh"}, compress=True)
    )
    root = tmp_path / "tftp"
    root.mkdir()
    return {"images": images, "root": root, "snap": tmp_path / "snapshot", "tmp": tmp_path}


def _device(lab: dict[str, Path], add_header: bool) -> Path:
    device = {
        "extends": "sim",
        "hostname": "tftp-board",
        "actions": {
            "deploy": {
                "methods": {"tftp": None, "nfs": None},
                "parameters": {"add_header": "u-boot", "mkimage_arch": "arm"} if add_header else {},
            }
        },
        "parameters": {
            "bootz": {"kernel": "0x82000000", "ramdisk": "0x83000000", "dtb": "0x88000000"}
        },
        "commands": {
            "connect": "lava-dispatch sim run --hostname sim --no-login --boot-time 0",
            "users": {"snapshot": {"do": f"cp -a {lab['root']} {lab['snap']}"}},
        },
    }
    path = lab["tmp"] / "device.yaml"
    path.write_text(yaml.safe_dump(device))
    return path


def _run(lab: dict[str, Path], deploy: dict[str, Any], add_header: bool = True) -> Any:
    job = job_definition(
        [
            {"deploy": {"to": "tftp", **deploy}},
            {"command": {"name": "snapshot"}},
            {"boot": {"method": "minimal", "prompts": ["root@sim"]}},
            {"test": {"definitions": [SMOKE]}},
        ]
    )
    # the test block makes the deploy build an overlay; the simulated board
    # never receives it (no bootloader here), so these jobs end Incomplete in
    # the test shell, after the snapshot
    path = lab["tmp"] / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    config = lab["tmp"] / "dispatcher.yaml"
    config.write_text(
        yaml.safe_dump(
            {"tftp_root": str(lab["root"]), "dispatcher_download_dir": str(lab["tmp"] / "jobs")}
        )
    )
    out = lab["tmp"] / "out"
    proc = dispatch("run", str(path), "--device", str(_device(lab, add_header)), "--dispatcher", str(config),
                    "--output-dir", str(out), "--job-id", "42")  # fmt: skip
    results = (
        yaml.safe_load((out / "results.yaml").read_text())
        if (out / "results.yaml").exists()
        else []
    )
    deployed = [r for r in results if r.get("case") == "tftp-deploy"]
    return proc, out, deployed


def _url(lab: dict[str, Path], name: str) -> str:
    return (lab["images"] / name).as_uri()


def test_tftp_files_overlay_and_header(lab: dict[str, Path]) -> None:
    _proc, out, deployed = _run(
        lab,
        {
            "kernel": {"url": _url(lab, "zImage"), "type": "zimage"},
            "dtb": {"url": _url(lab, "board.dtb")},
            "ramdisk": {"url": _url(lab, "ramdisk.cpio.gz"), "compression": "gz"},
            "modules": {"url": _url(lab, "modules.tar.gz"), "compression": "gz"},
        },
    )
    assert [r["result"] for r in deployed] == ["pass"], (out / "logs.yaml").read_text()[-3000:]
    (deploy_dir,) = (lab["snap"] / "42").iterdir()
    assert deploy_dir.name.startswith("tftp-deploy-")
    assert (deploy_dir / "kernel" / "zImage").read_bytes() == (
        lab["images"] / "zImage"
    ).read_bytes()
    assert (deploy_dir / "dtb" / "board.dtb").exists()
    (uboot,) = (deploy_dir / "ramdisk").iterdir()
    assert uboot.name == "ramdisk.cpio.uboot"
    header, payload = ramdisk.split_uimage(uboot.read_bytes())
    assert header is not None and header[28:32] == bytes([5, 2, 3, 0])  # linux, arm, ramdisk, none
    names = {entry.name for entry in ramdisk.read_entries(payload)}
    assert {"init", "lava-42/bin/lava-test-runner", "lib/modules/6.1.0/foo.ko"} <= names
    # nothing left under the TFTP root once the job is over
    assert list(lab["root"].iterdir()) == []
    logs = (out / "logs.yaml").read_text()
    assert "added the overlay and modules to ramdisk.cpio as cpio segments" in logs
    # the board never got the overlay: the test shell says so at once (no timeout)
    assert "cannot source /lava-42/environment on the DUT" in logs
    assert "timed out" not in logs


def test_without_add_header_the_ramdisk_stays_plain(lab: dict[str, Path]) -> None:
    proc, _out, deployed = _run(
        lab,
        {"ramdisk": {"url": _url(lab, "ramdisk.cpio.gz"), "compression": "gz"}},
        add_header=False,
    )
    assert [r["result"] for r in deployed] == ["pass"], proc.stderr
    (deploy_dir,) = (lab["snap"] / "42").iterdir()
    assert [p.name for p in (deploy_dir / "ramdisk").iterdir()] == ["ramdisk.cpio"]
    assert list(lab["root"].iterdir()) == []


def test_nfsrootfs_unpacked_with_the_overlay(lab: dict[str, Path]) -> None:
    _proc, out, deployed = _run(
        lab,
        {
            "kernel": {"url": _url(lab, "zImage"), "type": "zimage"},
            "nfsrootfs": {"url": _url(lab, "rootfs.tar.gz"), "compression": "gz"},
        },
    )
    assert [r["result"] for r in deployed] == ["pass"], (out / "logs.yaml").read_text()[-3000:]
    (deploy_dir,) = (lab["snap"] / "42").iterdir()
    root = deploy_dir / "nfsrootfs" / "rootfs"
    assert (root / "etc" / "hostname").read_text() == "nfs\n"
    assert (root / "lava-42" / "bin" / "lava-test-runner").exists()
    assert not (deploy_dir / "nfsrootfs" / "rootfs.tar").exists()
    assert list(lab["root"].iterdir()) == []


def test_a_file_over_the_size_limit_is_a_job_error(lab: dict[str, Path]) -> None:
    config_limit = {"tftp_size_limit": 100}
    proc, out = _run_with_config(
        lab, {"kernel": {"url": _url(lab, "zImage"), "type": "zimage"}}, config_limit
    )
    assert proc.returncode == 1
    logs = (out / "logs.yaml").read_text()
    assert "Unable to send 'zImage' over tftp: file too large" in logs
    assert list(lab["root"].iterdir()) == []


def test_a_missing_tftp_root_is_an_infrastructure_error(lab: dict[str, Path]) -> None:
    lab["root"].rmdir()
    proc, out, _ = _run(lab, {"kernel": {"url": _url(lab, "zImage"), "type": "zimage"}})
    assert proc.returncode == 1
    logs = (out / "logs.yaml").read_text()
    assert "InfrastructureError" in logs and f"the TFTP root {lab['root']} does not exist" in logs


def _run_with_config(lab: dict[str, Path], deploy: dict[str, Any], extra: dict[str, Any]) -> Any:
    config = {
        "tftp_root": str(lab["root"]),
        "dispatcher_download_dir": str(lab["tmp"] / "jobs"),
        **extra,
    }
    job = job_definition([{"deploy": {"to": "tftp", **deploy}}])
    path = lab["tmp"] / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    config_path = lab["tmp"] / "dispatcher.yaml"
    config_path.write_text(yaml.safe_dump(config))
    out = lab["tmp"] / "out"
    return dispatch("run", str(path), "--device", str(_device(lab, True)), "--dispatcher", str(config_path),
                    "--output-dir", str(out), "--job-id", "42"), out  # fmt: skip
