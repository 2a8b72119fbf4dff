#!/usr/bin/env python3
"""Engine benchmark: start-up time and per-action overhead on the simulated DUT.

Measures, over several runs of real `lava-dispatch run` processes:

- start-up: from spawning the process to the first action's `start:` log
  record (interpreter start, imports, plugin loading, job and device
  validation, pipeline build);
- a 50-action job on a simulated DUT that answers at once (no boot delay):
  one minimal boot with auto-login, then 49 interactive test blocks each
  sending one command; reported as total wall time and time per test block
  (the dispatcher's overhead: the DUT itself needs well under a millisecond
  to run `true` and print a prompt).

Usage: .venv/bin/python bench/bench_engine.py [--runs N] [--markdown]
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lava_dispatcher.log import read_records  # noqa: E402
from lava_dispatcher.sim import child_env, run_command  # noqa: E402

PROMPT = "root@sim:~# "


def write_inputs(directory: Path, test_blocks: int) -> tuple[Path, Path]:
    device = {
        "extends": "sim",
        "hostname": "bench-sim",
        "commands": {"connect": shlex.join(run_command(boot_time=0.0, boot_lines=2))},
    }
    actions: list[dict] = [
        {"boot": {"method": "minimal", "reset": False, "prompts": [PROMPT],
                  "auto_login": {"login_prompt": "login:", "username": "root"}}}
    ]
    for index in range(test_blocks):
        actions.append({"test": {"timeout": {"seconds": 30}, "interactive": [
            {"name": f"t{index}", "prompts": [PROMPT],
             "script": [{"command": "true", "name": "true"}]}]}})
    job = {"job_name": "bench", "device_type": "sim", "visibility": "public",
           "timeouts": {"job": {"minutes": 10}}, "actions": actions}
    (directory / "device.yaml").write_text(yaml.safe_dump(device))
    (directory / "job.yaml").write_text(yaml.safe_dump(job))
    return directory / "job.yaml", directory / "device.yaml"


def stamp(record: dict) -> float:
    return datetime.datetime.fromisoformat(record["dt"]).timestamp()


def one_run(job: Path, device: Path, out: Path) -> dict[str, float]:
    argv = [sys.executable, "-m", "lava_dispatcher", "run", str(job), "--device", str(device),
            "--output-dir", str(out), "--plain"]
    spawned = time.time()
    proc = subprocess.run(argv, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    ended = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"benchmark job failed ({proc.returncode}): {proc.stderr[-2000:]}")
    records = read_records((out / "logs.yaml").read_text().splitlines())
    first = next(r for r in records if str(r["msg"]).startswith("start: 1 "))
    boot_end = next(r for r in records if str(r["msg"]).startswith("end: 1 "))
    last_test_end = [r for r in records if str(r["msg"]).startswith("end: ") and " lava-test-interactive-retry " in str(r["msg"])][-1]
    tests = sum(1 for r in records if str(r["msg"]).startswith("start: ") and " lava-test-interactive-retry " in str(r["msg"]))
    return {
        "startup": stamp(first) - spawned,
        "boot": stamp(boot_end) - stamp(first),
        "per_test": (stamp(last_test_end) - stamp(boot_end)) / tests,
        "total": ended - spawned,
        "actions": float(sum(1 for r in records if str(r["msg"]).startswith("start: "))),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args()
    # an installed dispatcher has its bytecode compiled (pip does it); a checkout
    # run with PYTHONDONTWRITEBYTECODE would recompile every module at each start
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "lava_dispatcher")], check=True)
    with tempfile.TemporaryDirectory(prefix="lava-bench-") as tmp:
        directory = Path(tmp)
        job, device = write_inputs(directory, test_blocks=49)
        one_run(job, device, directory / "warmup")
        runs = [one_run(job, device, directory / f"run{i}") for i in range(args.runs)]
    rows = {
        "start-up to first action (s)": [r["startup"] for r in runs],
        "minimal boot + auto-login, DUT answering at once (s)": [r["boot"] for r in runs],
        "per interactive test block (ms)": [r["per_test"] * 1000 for r in runs],
        "whole 50-block job, process start to exit (s)": [r["total"] for r in runs],
    }
    actions = int(runs[0]["actions"])
    if args.markdown:
        print(f"| measure ({args.runs} runs, {actions} actions logged per job) | median | min | max |")
        print("|---|---|---|---|")
        for name, values in rows.items():
            print(f"| {name} | {statistics.median(values):.3f} | {min(values):.3f} | {max(values):.3f} |")
    else:
        for name, values in rows.items():
            print(f"{name:55} median {statistics.median(values):8.3f}  min {min(values):8.3f}  max {max(values):8.3f}")
        print(f"actions started per job: {actions}; runs: {args.runs}; python {sys.version.split()[0]}; cpus {os.cpu_count()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
