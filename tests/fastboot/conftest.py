"""Fixtures for fastboot: the real `fastboot` tool, the simulated fastboot device
(lava_dispatcher.sim.fastboot) and the simulated board that is its OS console.

* `fastboot_tool`: the tool's path; skipped with the reason when it is not
  installed, failed instead when LAVA_TESTS_REQUIRE_QEMU is set (.ci/run).
* `images` (module): a busybox initramfs with a marker file, an Android boot
  image holding it, and plain partition images.
* `lab`: a console board (`sim serve`, a pty), a fastboot device wired to it,
  a loopback HTTP server for the images, and `run()` for a LAVA-style job
  through `lava-dispatch run`. Everything is stopped at teardown, whatever
  the test did.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import shlex
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e.helpers import FAST, dispatch_argv, write_yaml

from lava_dispatcher import ramdisk
from lava_dispatcher.sim import SimServer, child_env
from lava_dispatcher.sim.fastboot import FastbootSim, make_boot_image, power_command
from lava_dispatcher.sim.rootfs import RootfsError, build_busybox_rootfs

SHELL_PROMPT = "root@sim:~# "
MARKER = "fastboot-deployed-4c1d"
FLASH_ORDER = ["ptable", "xloader", "fastboot", "boot", "system", "userdata", "cache"]
SMOKE = {
    "from": "inline",
    "name": "smoke",
    "path": "inline/smoke.yaml",
    "repository": {
        "metadata": {"format": "Lava-Test Test Definition 1.0", "name": "smoke"},
        "run": {"steps": [
            f"lava-test-case booted-the-deployed-ramdisk --shell grep -q {MARKER} /etc/build-id",
            "lava-test-case overlay-present --shell test -x /lava-1/bin/lava-test-case",
        ]},
    },
}  # fmt: skip


def _unavailable(what: str, reason: str) -> None:
    """Skip (fail in CI, where LAVA_TESTS_REQUIRE_QEMU is set) when `what` is missing."""
    if os.environ.get("LAVA_TESTS_REQUIRE_QEMU"):  # set by .ci/run
        pytest.fail(f"{what}: {reason} (.ci/run requires these tests to run)")
    pytest.skip(f"{what}: {reason}")


@pytest.fixture(scope="session")
def fastboot_tool() -> str:
    path = shutil.which("fastboot")
    if path is None:
        _unavailable(
            "fastboot", "the fastboot tool is not installed (Debian: apt install fastboot)"
        )
    assert path is not None
    return path


def fastboot(
    device: FastbootSim, *args: str, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """The real tool against the simulated device; stderr (where it reports) as text."""
    return subprocess.run(["fastboot", "-s", device.serial_arg, *args], capture_output=True,
                          text=True, timeout=timeout, check=False)  # fmt: skip


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Images:
    directory: Path
    initramfs: bytes  # gzip'd cpio, /etc/build-id holds MARKER
    boot: Path  # an Android boot image with that initramfs
    ptable: Path
    system: Path  # raw
    system_gz: Path  # the same, gzip'd (deployed with compression: gz)
    userdata: Path


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    directory = tmp_path_factory.mktemp("fastboot-images")
    try:
        root = build_busybox_rootfs(directory / "root")
    except RootfsError as exc:
        _unavailable("busybox", str(exc))
    (root / "etc" / "build-id").write_text(f"{MARKER}\n")
    initrd = ramdisk.pack_tree(root, directory / "initrd.cpio.gz", "gz")
    shutil.rmtree(root)
    boot = directory / "boot.img"
    boot.write_bytes(make_boot_image(b"not really a kernel\n" * 4000, initrd.read_bytes(),
                                     cmdline="console=ttyAMA3,115200"))  # fmt: skip
    ptable = directory / "ptable-linux-8g.img"
    ptable.write_bytes(b"EFI PART" + bytes(range(256)) * 64)
    system = directory / "system.img"
    system.write_bytes(os.urandom(300_000) + bytes(200_000))
    system_gz = directory / "system.img.gz"
    system_gz.write_bytes(gzip.compress(system.read_bytes()))
    userdata = directory / "userdata.img"
    userdata.write_bytes(bytes(64 << 10))
    return Images(directory, initrd.read_bytes(), boot, ptable, system, system_gz, userdata)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class JobRun:
    returncode: int
    logs: str
    results: list[dict[str, Any]]

    def cases(self, suite: str) -> dict[str, str]:
        return {r["case"]: r["result"] for r in self.results if r["definition"] == suite}

    def job_record(self) -> dict[str, Any]:
        (record,) = [r for r in self.results if r["definition"] == "lava" and r["case"] == "job"]
        return record


@dataclass
class Lab:
    tmp: Path
    images: Images
    http_base: str
    console: SimServer | None = None
    device: FastbootSim | None = None
    _jobs: int = 0
    _started: list[Any] = field(default_factory=list)

    def start(self, **knobs: Any) -> FastbootSim:
        """The console board and the fastboot device wired to it (off, as a board in a rack)."""
        self.console = SimServer(self.tmp / "console", pty=True, **{**FAST, "no_login": True})
        self.console.start()
        self._started.append(self.console)
        self.device = FastbootSim(self.tmp / "fastboot", console=self.console.control, **knobs)
        self.device.start()
        self._started.append(self.device)
        return self.device

    def device_dict(self, **overrides: Any) -> dict[str, Any]:
        """A hikey-like device dictionary for the simulated pair."""
        assert self.console is not None and self.device is not None
        control = self.device.control_dir
        device: dict[str, Any] = {
            "extends": "sim",
            "hostname": "fastboot-sim",
            "commands": {
                "connections": {"uart0": {"serial": str(self.console.pty), "tags": ["primary"]}},
                "power_on": shlex.join(power_command(control, "on")),
                "power_off": shlex.join(power_command(control, "off")),
                "hard_reset": shlex.join(power_command(control, "reset")),
            },
            "adb_serial_number": self.device.serial_arg,
            "fastboot_serial_number": self.device.serial_arg,
            "fastboot_options": [],
            "flash_cmds_order": FLASH_ORDER,
            "device_info": [{"board_id": self.device.serial_arg}],
            "actions": {
                "deploy": {"connections": {"fastboot": None, "serial": None},
                           "methods": {"fastboot": None}},
                "boot": {"connections": {"fastboot": None, "serial": None},
                         "methods": {"fastboot": ["boot"]}},
            },
            "character_delays": {"boot": 2},
        }  # fmt: skip
        device.update(overrides)
        return device

    def job(self, *, images: dict[str, Any] | None = None, boot: dict[str, Any] | None = None,
            timeouts: dict[str, Any] | None = None, test: bool = True) -> dict[str, Any]:  # fmt: skip
        """A LAVA-style fastboot job: images from file:// and http://, the boot, a test shell."""
        deploy_images = images if images is not None else {
            "ptable": {"url": self.images.ptable.as_uri(), "reboot": "fastboot-reboot-bootloader"},
            "boot": {"url": f"{self.http_base}/boot.img",
                     "sha256sum": sha256(self.images.boot.read_bytes())},
            "system": {"url": f"{self.http_base}/system.img.gz", "compression": "gz"},
            "userdata": {"url": self.images.userdata.as_uri()},
        }  # fmt: skip
        boot_block: dict[str, Any] = {"method": "fastboot", "prompts": [SHELL_PROMPT],
                                      "timeout": {"seconds": 60}}  # fmt: skip
        if test:  # the overlay reaches the board over HTTP, served by the dispatcher
            boot_block["transfer_overlay"] = {"download_command": "wget -q",
                                              "unpack_command": "tar -C / -xzf"}  # fmt: skip
        boot_block.update(boot or {})
        actions: list[dict[str, Any]] = [
            {"deploy": {"to": "fastboot", "timeout": {"seconds": 60}, "images": deploy_images}},
            {"boot": boot_block},
        ]
        if test:
            actions.append({"test": {"definitions": [SMOKE], "timeout": {"seconds": 60}}})
        return {
            "job_name": "fastboot on the simulated board",
            "device_type": "sim",
            "visibility": "public",
            "timeouts": {"job": {"seconds": 150}, "action": {"seconds": 60}, **(timeouts or {})},
            "actions": actions,
        }

    def run(self, job: dict[str, Any], device: dict[str, Any] | None = None,
            env: dict[str, str] | None = None) -> JobRun:  # fmt: skip
        """`lava-dispatch run` in a process of its own; its outputs, loaded."""
        self._jobs += 1
        work = self.tmp / f"job{self._jobs}"
        work.mkdir()
        write_yaml(work / "device.yaml", device if device is not None else self.device_dict())
        write_yaml(work / "job.yaml", job)
        # a download cache of the test's own, not the user's
        write_yaml(work / "dispatcher.yaml", {"download_cache": str(self.tmp / "download-cache")})
        out = work / "out"
        proc = subprocess.run(
            dispatch_argv("run", str(work / "job.yaml"), "--device", str(work / "device.yaml"),
                          "--dispatcher", str(work / "dispatcher.yaml"),
                          "--output-dir", str(out), "--job-id", "1"),
            capture_output=True, text=True, env=env or child_env(), timeout=240, check=False,
        )  # fmt: skip
        logs = (out / "logs.yaml").read_text() if (out / "logs.yaml").exists() else proc.stderr
        results_file = out / "results.yaml"
        results = yaml.safe_load(results_file.read_text()) if results_file.exists() else []
        return JobRun(proc.returncode, logs, results or [])

    def close(self) -> None:
        for thing in reversed(self._started):
            thing.stop()
        self._started.clear()


@pytest.fixture
def lab(tmp_path: Path, images: Images, fastboot_tool: str) -> Iterator[Lab]:
    handler = functools.partial(_QuietHandler, directory=str(images.directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="images-http", daemon=True)
    thread.start()
    lab = Lab(tmp_path, images, f"http://127.0.0.1:{server.server_address[1]}")
    try:
        yield lab
    finally:
        try:
            lab.close()
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)
