"""Issue 4's must-shows: LAVA-style QEMU jobs on a real Debian kernel, x86_64 and arm64 (TCG).

1. tmpfs deploy of kernel + initrd from a loopback HTTP URL with sha256sum,
   qemu boot, auto-login, a test shell with an inline definition: the
   expected results, with our device type and with LAVA's rendered
   dictionary;
2. a second run downloads nothing; a checksum mismatch, an unreachable URL
   and a kernel panic at boot each end the job Incomplete with the right
   error class and a message that says what happened;
3. after every job no QEMU process and no temporary directory is left.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from lava_dispatcher.sim import child_env

from . import images

pytestmark = pytest.mark.slow

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "lava-devices"
PROMPT = "root@lava-qemu:~# "
CONTEXT_ARCH = {"amd64": "amd64", "arm64": "arm64"}
INLINE = {
    "metadata": {"format": "Lava-Test Test Definition 1.0", "name": "smoke", "description": "on a real kernel"},
    "run": {"steps": [
        "lava-test-case kernel --shell test -d /proc/1",
        "lava-test-case arch-$(uname -m) --result pass",
        "lava-test-case uptime --result pass --measurement $(cut -d' ' -f1 /proc/uptime) --units s",
    ]},
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def job(arch: str, kernel_url: str, kernel_sum: str, initrd_url: str, initrd_sum: str) -> dict[str, Any]:
    append = images.kernel_append(arch)
    return {
        "job_name": f"qemu {arch}",
        "device_type": "qemu",
        "visibility": "public",
        "context": {"arch": CONTEXT_ARCH[arch]},
        "timeouts": {"job": {"minutes": 15}, "action": {"minutes": 5}},
        "actions": [
            {"deploy": {"to": "tmpfs", "timeout": {"minutes": 5}, "images": {
                "kernel": {"url": kernel_url, "sha256sum": kernel_sum,
                           "image_arg": f"-kernel {{kernel}} -append '{append}'"},
                "initrd": {"url": initrd_url, "sha256sum": initrd_sum, "compression": "gz",
                           "format": "cpio.newc", "overlays": {"lava": True},
                           "image_arg": "-initrd {initrd}"},
            }}},
            {"boot": {"method": "qemu", "media": "tmpfs", "timeout": {"minutes": 8}, "prompts": [PROMPT],
                      "auto_login": {"login_prompt": "login:", "username": "root"}}},
            {"test": {"timeout": {"minutes": 5}, "definitions": [
                {"from": "inline", "name": "smoke", "path": "inline/smoke.yaml", "repository": INLINE}]}},
        ],
    }


class Runner:
    """Runs `lava-dispatch run` with its own TMPDIR and download cache, and checks leftovers."""

    def __init__(self, tmp_path: Path) -> None:
        self.base = tmp_path
        self.tmp = tmp_path / "tmpdir"
        self.tmp.mkdir()
        self.cache = tmp_path / "cache"
        self.count = 0

    def run(self, definition: dict[str, Any], device: dict[str, Any] | Path) -> tuple[int, dict, Path]:
        self.count += 1
        work = self.base / f"run{self.count}"
        work.mkdir()
        if isinstance(device, Path):
            device_file = device
        else:
            device_file = work / "device.yaml"
            device_file.write_text(yaml.safe_dump(device))
        (work / "job.yaml").write_text(yaml.safe_dump(definition))
        dispatcher = work / "dispatcher.yaml"
        dispatcher.write_text(yaml.safe_dump({"download_cache": str(self.cache)}))
        out = work / "out"
        env = child_env()
        env["TMPDIR"] = str(self.tmp)
        proc = subprocess.run(
            [sys.executable, "-m", "lava_dispatcher", "run", str(work / "job.yaml"), "--device", str(device_file),
             "--dispatcher", str(dispatcher), "--output-dir", str(out), "--job-id", str(self.count)],
            capture_output=True, text=True, env=env, timeout=1800, check=False,
        )
        result = yaml.safe_load((out / "result.yaml").read_text())
        self.check_nothing_left()
        return proc.returncode, result, out

    def check_nothing_left(self) -> None:
        """Must-show 3: no temporary directory and no QEMU of ours remain."""
        leftovers = list(self.tmp.iterdir())
        assert leftovers == [], f"temporary files left behind: {leftovers}"
        ours = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "qemu-system" in cmdline and str(self.base) in cmdline:
                ours.append((entry.name, cmdline[:200]))
        assert ours == [], f"QEMU processes left behind: {ours}"


def records(out: Path) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["definition"], r["case"]): r for r in yaml.safe_load((out / "results.yaml").read_text())}


def published(image_server: Any, qemu_images: Any, arch: str) -> tuple[str, str, str, str]:
    image = qemu_images.require(arch)
    kernel_url = image_server.publish(image.kernel.resolve(), f"{arch}-vmlinuz")
    initrd_url = image_server.publish(image.initramfs, f"{arch}-initrd.cpio.gz")
    return kernel_url, sha256(image.kernel.resolve()), initrd_url, sha256(image.initramfs)


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_lava_style_job_passes_with_our_device_type(tmp_path: Path, arch: str, qemu_images: Any, image_server: Any) -> None:
    urls = published(image_server, qemu_images, arch)
    device = {"extends": "qemu" if arch == "amd64" else "qemu-aarch64", "hostname": f"qemu-{arch}"}
    runner = Runner(tmp_path)
    code, _result, out = runner.run(job(arch, *urls), device)
    assert code == 0, (out / "logs.yaml").read_text()[-4000:]
    found = records(out)
    machine = images.guest_machine(arch)
    assert found[("0_smoke", "kernel")]["result"] == "pass"
    assert found[("0_smoke", f"arch-{machine}")]["result"] == "pass"
    assert found[("0_smoke", "uptime")]["units"] == "s"
    assert found[("lava", "0_smoke")]["result"] == "pass"
    assert found[("lava", "execute-qemu")]["result"] == "pass"

    # must-show 2: the same job again downloads nothing
    image_server.reset()
    code, _result, out = runner.run(job(arch, *urls), device)
    assert code == 0
    assert image_server.requests() == 0
    log = (out / "logs.yaml").read_text()
    assert "cache hit" in log


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_lava_rendered_device_dictionary(tmp_path: Path, arch: str, qemu_images: Any, image_server: Any) -> None:
    device = SHARED / f"qemu-{arch}-01.yaml"
    if not device.exists():
        pytest.skip(f"{device} is absent (../shared is not beside the checkout)")
    urls = published(image_server, qemu_images, arch)
    definition = job(arch, *urls)
    code, _result, out = Runner(tmp_path).run(definition, device)
    assert code == 0, (out / "logs.yaml").read_text()[-4000:]
    found = records(out)
    assert found[("0_smoke", f"arch-{images.guest_machine(arch)}")]["result"] == "pass"


def test_checksum_mismatch_unreachable_url_and_panic(tmp_path: Path, qemu_images: Any, image_server: Any) -> None:
    arch = "amd64"
    kernel_url, kernel_sum, initrd_url, initrd_sum = published(image_server, qemu_images, arch)
    device = {"extends": "qemu"}
    runner = Runner(tmp_path)

    bad_sum = "0" * 64
    code, result, _ = runner.run(job(arch, kernel_url, bad_sum, initrd_url, initrd_sum), device)
    assert code == 1
    assert result["error_type"] == "Job"
    assert "sha256sum mismatch" in result["error_msg"] and kernel_url in result["error_msg"]

    unreachable = "http://127.0.0.1:9/nothing-listens-here/vmlinuz"
    code, result, _ = runner.run(job(arch, unreachable, kernel_sum, initrd_url, initrd_sum), device)
    assert code == 1
    assert result["error_type"] == "Infrastructure"
    assert unreachable in result["error_msg"]

    panicking = qemu_images.build(arch, "panic.cpio.gz", init="#!/bin/sh\necho giving up\nexit 1\n")
    panic_url = image_server.publish(panicking, "panic-initrd.cpio.gz")
    code, result, out = runner.run(job(arch, kernel_url, kernel_sum, panic_url, sha256(panicking)), device)
    assert code == 1
    assert result["error_type"] == "Job"
    assert "Kernel panic - not syncing" in result["error_msg"], result
    assert os.path.exists(out / "logs.yaml")
