"""Fixtures: simulated boards with each bootloader (the simulator tests'
`server` fixture ends every daemon at teardown), a TFTP root, images, and a
lab that runs LAVA-style jobs on the boards with `lava-dispatch run`."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e.helpers import FAST, run_dispatch, write_yaml
from sim.conftest import popen, server, spawn  # noqa: F401  (fixtures, reused)
from sim_uboot.conftest import initramfs  # noqa: F401  (a fixture, reused)

from lava_dispatcher.sim import SimServer
from lava_dispatcher.sim.rootfs import RootfsError, build_busybox_initramfs

from .helpers import JOB_DIR, LOADERS, SHELL_PROMPT, Console

KERNEL = b"not really a kernel\n" * 5000
SMOKE = {
    "from": "inline",
    "name": "smoke",
    "path": "inline/smoke.yaml",
    "repository": {
        "metadata": {"format": "Lava-Test Test Definition 1.0", "name": "smoke"},
        "run": {
            "steps": [
                "lava-test-case overlay-in-ramdisk --shell test -d /lava-1/bin",
                "lava-test-case busybox --shell test -x /bin/busybox",
            ]
        },
    },
}


@pytest.fixture
def tftp_root(tmp_path: Path) -> Path:
    """A TFTP root holding JOB_DIR with a kernel, a device tree, a command line."""
    root = tmp_path / "tftp"
    job = root / JOB_DIR
    (job / "kernel").mkdir(parents=True)
    (job / "kernel" / "Image").write_bytes(KERNEL)
    (job / "kernel" / "cmdline").write_text("console=ttyS0,115200n8 root=/dev/ram0 quiet\n")
    (job / "board.dtb").write_bytes(b"\xd0\x0d\xfe\xed" + bytes(2044))
    return root


@pytest.fixture
def board(server: Callable[..., SimServer]) -> Iterator[Callable[..., Console]]:  # noqa: F811
    """Start `sim serve --bootloader NAME --tcp` and connect to its console."""
    consoles: list[Console] = []

    def start(bootloader: str, **knobs: Any) -> Console:
        sim = server(pty=False, tcp=True, bootloader=bootloader, **{"autoboot_delay": 1, **knobs})
        prompt = knobs.get("bootloader_prompt") or next(
            loader.prompt for loader in LOADERS.values() if loader.bootloader == bootloader
        )
        console = Console(sim, prompt)
        consoles.append(console)
        return console

    yield start
    for console in consoles:
        console.close()


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A kernel (any bytes: the simulated board runs no real one), a busybox
    initramfs and a device tree, as a job downloads them."""
    directory = tmp_path_factory.mktemp("bootloader-images")
    try:
        build_busybox_initramfs(directory / "initrd.cpio.gz")
    except RootfsError as exc:
        pytest.skip(f"no busybox root file system here: {exc}")
    (directory / "Image").write_bytes(KERNEL)
    (directory / "board.dtb").write_bytes(b"\xd0\x0d\xfe\xed" + bytes(2044))
    return directory


class Lab:
    """A TFTP root, simulated boards serving it, and LAVA-style jobs run on them."""

    def __init__(self, base: Path, images: Path) -> None:
        self.base = base
        self.images = images
        self.tftp_root = base / "tftp"
        self.tftp_root.mkdir()
        self.servers: list[SimServer] = []

    def board(self, method: str, **knobs: Any) -> SimServer:
        knobs = {**FAST, "autoboot_delay": 1, "no_login": True, **knobs}
        sim = SimServer(self.base / f"sim{len(self.servers)}", pty=True, tcp=True,
                        bootloader=LOADERS[method].bootloader, tftp_root=str(self.tftp_root),
                        **knobs)  # fmt: skip
        self.servers.append(sim)
        sim.start()
        return sim

    def device(
        self, sim: SimServer, method: str, commands: list[str] | None = None
    ) -> dict[str, Any]:
        loader = LOADERS[method]
        stanzas = dict(loader.stanzas)
        if commands is not None:
            stanzas["ramdisk"] = {**stanzas["ramdisk"], "commands": commands}
        return {
            "extends": "sim",
            "hostname": f"{loader.bootloader}-sim",
            "constants": {method: loader.constants},
            "commands": {
                "connections": {"uart0": {"serial": str(sim.pty), "tags": ["primary"]}},
                "power_on": shlex.join(sim.power_command("on")),
                "power_off": shlex.join(sim.power_command("off")),
                "hard_reset": shlex.join(sim.power_command("reset")),
            },
            "actions": {
                "deploy": {"methods": {"tftp": None}, "parameters": loader.deploy_parameters},
                "boot": {"methods": {method: {"parameters": loader.parameters, **stanzas}}},
            },
            "character_delays": {"boot": 2},
        }

    def job(self, method: str, **boot_extra: Any) -> dict[str, Any]:
        return {
            "job_name": f"{method} ramdisk",
            "device_type": "sim",
            "visibility": "public",
            "timeouts": {"job": {"seconds": 120}, "action": {"seconds": 60}},
            "actions": [
                {"deploy": {
                    "to": "tftp",
                    "kernel": {"url": (self.images / "Image").as_uri()},
                    "ramdisk": {"url": (self.images / "initrd.cpio.gz").as_uri()},
                    "dtb": {"url": (self.images / "board.dtb").as_uri()},
                }},
                {"boot": {"method": method, "commands": "ramdisk", "prompts": [SHELL_PROMPT],
                          "timeout": {"seconds": 40}, **boot_extra}},
                {"test": {"definitions": [SMOKE], "timeout": {"seconds": 30}}},
            ],
        }  # fmt: skip

    def run(
        self, device: dict[str, Any], job: dict[str, Any]
    ) -> tuple[int, str, list[dict[str, Any]]]:
        """`lava-dispatch run` the job on the device: (exit status, logs, results)."""
        work = self.base / f"job{len(list(self.base.glob('job*')))}"
        work.mkdir()
        write_yaml(work / "device.yaml", device)
        write_yaml(work / "job.yaml", job)
        write_yaml(
            work / "dispatcher.yaml",
            {"tftp_root": str(self.tftp_root), "dispatcher_ip": "10.0.2.2"},
        )
        out = work / "out"
        proc = run_dispatch("run", str(work / "job.yaml"), "--device", str(work / "device.yaml"),
                            "--dispatcher", str(work / "dispatcher.yaml"), "--output-dir", str(out),
                            "--job-id", "1", timeout=180)  # fmt: skip
        logs = (out / "logs.yaml").read_text() if (out / "logs.yaml").exists() else proc.stderr
        results_file = out / "results.yaml"
        results = yaml.safe_load(results_file.read_text()) if results_file.exists() else []
        return proc.returncode, logs, results or []


@pytest.fixture
def lab(tmp_path: Path, images: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path, images)
    yield lab
    for sim in lab.servers:
        sim.stop()
    # no job directory is ever left under the TFTP root
    assert list(lab.tftp_root.iterdir()) == []
