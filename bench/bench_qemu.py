#!/usr/bin/env python3
"""The dispatcher's own overhead on a QEMU job (issue 4's goal: under 0.5 s).

Runs tests/qemu's LAVA-style job (tmpfs deploy of kernel + initrd from a
loopback HTTP server with sha256sum, qemu boot, auto-login, a test shell with
an inline definition) as real `lava-dispatch run` processes, with a warm
download cache, and measures from the job's log:

- wall: process spawn to exit;
- qemu: QEMU's start (the "Boot command" record, just before the spawn) to
  the shell prompt (the end of expect-shell-connection);
- dut: the test runner on the DUT (the runner command typed to
  `<LAVA_TEST_RUNNER EXIT>` arriving);
- overhead = wall - qemu (the issue's definition), and the dispatcher-only
  part: wall - qemu - dut.

Needs the images of .ci/qemu-images. Usage:
    .venv/bin/python bench/bench_qemu.py [--arch amd64] [--runs 5]
"""

from __future__ import annotations

import argparse
import datetime
import http.server
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lava_dispatcher.log import read_records  # noqa: E402
from lava_dispatcher.sim import child_env  # noqa: E402
from tests.qemu import images  # noqa: E402
from tests.qemu.test_qemu_jobs import job, sha256  # noqa: E402


def stamp(record: dict[str, Any]) -> float:
    return datetime.datetime.fromisoformat(record["dt"]).timestamp()


def serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, int]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(directory), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, int(server.server_address[1])


def one_run(work: Path, definition: dict[str, Any], device: Path, dispatcher: Path, index: int) -> dict[str, float]:
    (work / "job.yaml").write_text(yaml.safe_dump(definition))
    out = work / f"out{index}"
    argv = [sys.executable, "-m", "lava_dispatcher", "run", str(work / "job.yaml"), "--device", str(device),
            "--dispatcher", str(dispatcher), "--output-dir", str(out), "--plain"]
    spawned = time.time()
    proc = subprocess.run(argv, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    ended = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"the job failed ({proc.returncode}): {(out / 'logs.yaml').read_text()[-3000:]}")
    records = read_records((out / "logs.yaml").read_text().splitlines())
    boot = next(r for r in records if str(r["msg"]).startswith("Boot command:"))
    prompt = next(r for r in records if str(r["msg"]).startswith("end: ") and "expect-shell-connection" in str(r["msg"]))
    runner = next(r for r in records if r["lvl"] == "input" and "lava-test-runner" in str(r["msg"]))
    exit_line = next(r for r in records if r["lvl"] == "target" and "<LAVA_TEST_RUNNER EXIT>" in str(r["msg"]))
    first = next(r for r in records if str(r["msg"]).startswith("start: 1 "))
    deploy_end = next(r for r in records if str(r["msg"]).startswith("end: 1 "))
    last = records[-1]
    wall = ended - spawned
    qemu = stamp(prompt) - stamp(boot)
    dut = stamp(exit_line) - stamp(runner)
    return {
        "wall": wall,
        "qemu": qemu,
        "dut": dut,
        "startup": stamp(first) - spawned,
        "deploy": stamp(deploy_end) - stamp(first),
        "exit": ended - stamp(last),
        "overhead": wall - qemu,
        "dispatcher": wall - qemu - dut,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="amd64", choices=["amd64", "arm64"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep-log", metavar="FILE", help="copy the first measured run's logs.yaml here")
    args = parser.parse_args()
    reason = images.available(args.arch)
    if reason:
        raise SystemExit(f"cannot run: {reason} (run .ci/qemu-images first)")
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "lava_dispatcher")], check=True)
    with tempfile.TemporaryDirectory(prefix="lava-bench-qemu-") as tmp:
        work = Path(tmp)
        served = work / "served"
        served.mkdir()
        kernel = served / "vmlinuz"
        shutil.copyfile(images.kernel(args.arch).resolve(), kernel)
        initrd = images.build_initramfs(served / "initrd.cpio.gz", args.arch)
        server, port = serve(served)
        try:
            base = f"http://127.0.0.1:{port}"
            definition = job(args.arch, f"{base}/vmlinuz", sha256(kernel), f"{base}/initrd.cpio.gz", sha256(initrd))
            device = work / "device.yaml"
            device.write_text(yaml.safe_dump({"extends": "qemu" if args.arch == "amd64" else "qemu-aarch64"}))
            dispatcher = work / "dispatcher.yaml"
            dispatcher.write_text(yaml.safe_dump({"download_cache": str(work / "cache")}))
            one_run(work, definition, device, dispatcher, 0)  # warms the download cache
            runs = [one_run(work, definition, device, dispatcher, i + 1) for i in range(args.runs)]
            if args.keep_log:
                shutil.copy(work / "out1" / "logs.yaml", args.keep_log)
        finally:
            server.shutdown()
            server.server_close()
    print(f"QEMU {args.arch} job, warm download cache, {args.runs} runs (median, min, max):")
    for key, label in (
        ("wall", "job wall time, spawn to exit"),
        ("qemu", "QEMU start to shell prompt"),
        ("dut", "test runner on the DUT"),
        ("startup", "dispatcher start-up to first action"),
        ("deploy", "deploy (downloads from the cache, overlay)"),
        ("exit", "last log record to process exit"),
        ("overhead", "overhead = wall - QEMU start-to-prompt"),
        ("dispatcher", "dispatcher only = wall - QEMU - DUT test time"),
    ):
        values = [r[key] for r in runs]
        print(f"  {label:48} {statistics.median(values):7.3f} s  {min(values):7.3f}  {max(values):7.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
