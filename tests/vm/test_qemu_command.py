"""boot: method: qemu builds LAVA's command line, with no shell in between.

A stand-in for QEMU records the argv it was given and then becomes the
simulated board (a kernel log, a login, a shell), so the whole boot path
(tmpfs images, image_arg substitution, the console, login, power-off) runs
without a real kernel; the real QEMU boots are in tests/qemu.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from lava_dispatcher import ramdisk
from lava_dispatcher.sim import child_env, run_command

PROMPT = "root@sim:~# "


def fake_qemu(tmp_path: Path) -> Path:
    """An executable that writes its argv as JSON, then runs the simulated board."""
    record = tmp_path / "qemu-argv.json"
    script = tmp_path / "qemu-system-fake"
    board = run_command(boot_time=0.02, boot_lines=3)
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"open({str(record)!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
        f"os.execv({board[0]!r}, {board!r})\n"
    )
    script.chmod(0o755)
    return script


def run_job(tmp_path: Path, device: dict[str, Any], actions: list[dict[str, Any]], **job: Any) -> tuple[int, Path]:
    definition = {"job_name": "qemu args", "device_type": "qemu", "visibility": "public",
                  "timeouts": {"job": {"minutes": 2}}, "context": {"arch": "amd64"}, "actions": actions, **job}
    (tmp_path / "device.yaml").write_text(yaml.safe_dump(device))
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(definition))
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "lava_dispatcher", "run", str(tmp_path / "job.yaml"), "--device",
         str(tmp_path / "device.yaml"), "--output-dir", str(out)],
        capture_output=True, text=True, env=child_env(), timeout=120, check=False,
    )
    return proc.returncode, out


@pytest.mark.slow
def test_images_and_options_become_one_argument_list(tmp_path: Path) -> None:
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"not really a kernel")
    initrd_tree = tmp_path / "tree"
    (initrd_tree / "etc").mkdir(parents=True)
    (initrd_tree / "etc" / "hostname").write_text("x\n")
    initrd = ramdisk.pack_tree(initrd_tree, tmp_path / "initrd.cpio.gz", compression="gz")
    device = {"extends": "qemu", "hostname": "vm-01",
              "actions": {"boot": {"methods": {"qemu": {"parameters": {"command": str(fake_qemu(tmp_path))}}}}}}
    deploy = {"deploy": {"to": "tmpfs", "images": {
        "kernel": {"url": kernel.as_uri(), "sha256sum": hashlib.sha256(kernel.read_bytes()).hexdigest(),
                   "image_arg": "-kernel {kernel} -append 'console=ttyS0,115200 root=/dev/ram0 quiet'"},
        "initrd": {"url": initrd.as_uri(), "compression": "gz", "image_arg": "-initrd {initrd}"},
    }}}
    boot = {"boot": {"method": "qemu", "media": "tmpfs", "prompts": [PROMPT],
                     "auto_login": {"login_prompt": "login:", "username": "root"}}}
    test = {"test": {"interactive": [{"name": "check", "prompts": [PROMPT], "script": [
        {"command": "echo ok=$((1+1))", "name": "shell", "successes": [{"message": "ok=2"}]}]}]}}
    code, out = run_job(tmp_path, device, [deploy, boot, test])
    assert code == 0, (out / "logs.yaml").read_text()[-3000:]
    argv = json.loads((tmp_path / "qemu-argv.json").read_text())
    downloaded = {Path(a).name: a for a in argv if a.startswith("/")}
    assert argv[:7] == ["-nographic", "-monitor", "none", "-m", "1024", "-no-reboot", "-net"]
    assert argv[argv.index("-kernel") + 1] == downloaded["bzImage"]
    # the quoted append is ONE argument, exactly as written in image_arg
    assert argv[argv.index("-append") + 1] == "console=ttyS0,115200 root=/dev/ram0 quiet"
    assert argv[argv.index("-initrd") + 1].endswith("initrd.cpio")  # decompression suffix dropped
    results = yaml.safe_load((out / "results.yaml").read_text())
    assert {(r["definition"], r["case"]): r["result"] for r in results}[("0_check", "shell")] == "pass"


def test_missing_arch_and_unknown_arch_are_refused(tmp_path: Path) -> None:
    device = {"extends": "qemu"}
    (tmp_path / "device.yaml").write_text(yaml.safe_dump(device))
    for context, message in (
        ({}, "Missing 'arch' in job context"),
        ({"arch": "riscv64"}, "context.arch 'riscv64' is not one of the device's available_architectures"),
    ):
        job = {"job_name": "x", "device_type": "qemu", "visibility": "public", "timeouts": {"job": {"minutes": 1}},
               "context": context, "actions": [
                   {"deploy": {"to": "tmpfs", "images": {"kernel": {"url": "file:///k", "image_arg": "-kernel {kernel}"}}}},
                   {"boot": {"method": "qemu", "media": "tmpfs", "prompts": ["# "]}}]}
        (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
        proc = subprocess.run([sys.executable, "-m", "lava_dispatcher", "validate", str(tmp_path / "job.yaml"),
                               "--device", str(tmp_path / "device.yaml")],
                              capture_output=True, text=True, env=child_env(), check=False)
        assert proc.returncode == 2
        assert message in proc.stderr, proc.stderr


def test_the_guest_disk_holds_the_overlay(tmp_path: Path) -> None:
    """Without an image taking the overlay, it goes on an ext2 guest disk (LAVA's way)."""
    import shutil

    if shutil.which("mke2fs") is None or shutil.which("debugfs") is None:
        pytest.skip("e2fsprogs is not installed")
    from lava_dispatcher import plugins
    from lava_dispatcher.actions.overlay_data import GUEST_DISK, PRE_COMMANDS
    from lava_dispatcher.builtin_plugins import get_manager
    from lava_dispatcher.devices import load_device_data
    from lava_dispatcher.log import JobLogger
    from lava_dispatcher.parser import parse_job
    from lava_dispatcher.pipeline import RunContext

    device = load_device_data({"extends": "qemu"}, "d", plugins.device_type_dirs(get_manager()))
    job_text = yaml.safe_dump({
        "job_name": "g", "device_type": "qemu", "visibility": "public", "timeouts": {"job": {"minutes": 1}},
        "context": {"arch": "amd64"},
        "actions": [
            {"deploy": {"to": "tmpfs", "images": {"kernel": {"url": (tmp_path / "k").as_uri(), "image_arg": "-kernel {kernel}"}}}},
            {"test": {"definitions": [{"from": "inline", "name": "t", "path": "t.yaml", "repository": {
                "metadata": {"format": "Lava-Test Test Definition 1.0", "name": "t", "description": "t"},
                "run": {"steps": ["lava-test-case x --result pass"]}}}]}},
        ]})
    (tmp_path / "k").write_bytes(b"k")
    job = parse_job(job_text, device, "77")
    deploy = job.pipeline.actions[0]
    assert [a.name for a in deploy.pipeline.actions] == ["lava-overlay", "download-retry", "apply-overlay-guest"]
    logger = JobLogger()
    ctx = RunContext(job.settings, logger)
    try:
        with ctx.job_deadline(60):
            job.pipeline.run_action(deploy, ctx)
        disk = ctx.data("common").get(GUEST_DISK)
        listing = subprocess.run(["debugfs", "-R", "ls -p /bin", str(disk)], capture_output=True, text=True, check=True)
        assert "lava-test-runner" in listing.stdout
        tests = subprocess.run(["debugfs", "-R", "ls -p /0/tests", str(disk)], capture_output=True, text=True, check=True)
        assert "0_t" in tests.stdout
        assert ctx.data("common").get(PRE_COMMANDS)[1].startswith("mount /dev/disk/by-uuid/")
    finally:
        ctx.remove_tmp()
    assert not os.path.exists(disk)
