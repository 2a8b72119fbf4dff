#!/usr/bin/env python3
"""Test-shell throughput: a definition printing N MB with M test cases through the console.

A real `lava-dispatch run` drives the simulated DUT (a busybox root
filesystem in a PID namespace, reached over a pty); the definition's run
step is an awk program printing M `<LAVA_SIGNAL_TESTCASE ...>` lines spread
through N MB of other output. Reports, from the job's own log:

- console throughput: MB/s and test cases/s between STARTRUN and ENDRUN;
- the dispatcher's CPU time (user + system, all its threads) per MB;
- that no case was lost: exactly M results, in order.

Usage: .venv/bin/python bench/bench_test_shell.py [--mb 100] [--cases 100000]
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lava_dispatcher.sim import SimServer, child_env  # noqa: E402
from lava_dispatcher.sim.rootfs import build_busybox_rootfs  # noqa: E402

PROMPT = "root@sim:~# "


def awk_program(megabytes: float, cases: int) -> str:
    """Prints `cases` TESTCASE lines, with filler lines between them, `megabytes` in all."""
    per_case = int(megabytes * 1024 * 1024 / cases)
    filler = max(0, per_case - 60)
    lines, rest = divmod(filler, 100)
    return (
        "awk 'BEGIN { pad = sprintf(\"%99s\", \"\"); gsub(/ /, \"x\", pad);"
        f" for (i = 0; i < {cases}; i++) {{"
        f" for (j = 0; j < {lines}; j++) print pad;"
        f" printf \"%{max(rest, 1)}s\\n\", \"\";"
        # the signal is split in the source: run.sh's `set -x` echoes this command
        # line, which must not itself look like a signal
        " printf \"<LAVA_\" \"SIGNAL_TESTCASE TEST_CASE_ID=case%06d RESULT=pass>\\n\", i } }'"
    )


def stamp(line: str) -> float:
    start = line.index('"dt": "') + 7
    return datetime.datetime.fromisoformat(line[start : line.index('"', start)]).timestamp()


def run(megabytes: float, cases: int) -> dict[str, float]:
    """Run the flood job; the figures, and whether every case came back in order."""
    with tempfile.TemporaryDirectory(prefix="lava-bench-ts-") as tmp:
        base = Path(tmp)
        rootfs = build_busybox_rootfs(base / "rootfs")
        keep = os.environ.get("LAVA_BENCH_KEEP")
        with SimServer(base / "sim", pty=True, boot_time=0.0, boot_lines=2, rootfs=rootfs) as sim:
            device = {
                "extends": "sim",
                "hostname": "bench",
                "commands": {
                    "connections": {"uart0": {"serial": sim.pty, "tags": ["primary"]}},
                    "power_on": shlex.join(sim.power_command("on")),
                    "power_off": shlex.join(sim.power_command("off")),
                    "hard_reset": shlex.join(sim.power_command("reset")),
                },
            }
            definition = {
                "metadata": {"format": "Lava-Test Test Definition 1.0", "name": "flood", "description": "flood"},
                "run": {"steps": [awk_program(megabytes, cases)]},
            }
            job = {
                "job_name": "bench test shell",
                "device_type": "sim",
                "visibility": "public",
                "timeouts": {"job": {"minutes": 30}},
                "actions": [
                    {"deploy": {"to": "overlay"}},
                    {"boot": {"method": "minimal", "prompts": [PROMPT],
                              "auto_login": {"login_prompt": "login:", "username": "root"},
                              "transfer_overlay": {"download_command": "wget -q", "unpack_command": "tar -C / -xzf"}}},
                    {"test": {"timeout": {"minutes": 20}, "definitions": [
                        {"from": "inline", "name": "flood", "path": "flood.yaml", "repository": definition}]}},
                ],
            }
            (base / "device.yaml").write_text(yaml.safe_dump(device))
            (base / "job.yaml").write_text(yaml.safe_dump(job))
            out = base / "out"
            argv = [sys.executable, "-m", "lava_dispatcher", "run", str(base / "job.yaml"),
                    "--device", str(base / "device.yaml"), "--output-dir", str(out), "--plain"]
            started = time.monotonic()
            proc = subprocess.Popen(argv, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            wall = time.monotonic() - started
            if proc.returncode != 0:
                tail = (out / "logs.yaml").read_text()[-3000:] if (out / "logs.yaml").exists() else ""
                raise SystemExit(f"benchmark job failed ({proc.returncode}):\n{tail}")
            start = end = 0.0
            found = []
            with (out / "logs.yaml").open(encoding="utf-8") as logs:
                for line in logs:
                    if "<LAVA_SIGNAL_STARTRUN" in line and '"target"' in line:
                        start = stamp(line)
                    elif "<LAVA_SIGNAL_ENDRUN" in line and '"target"' in line:
                        end = stamp(line)
                    elif '"lvl": "results"' in line and '"definition": "0_flood"' in line:
                        found.append(line[line.index('"case": "') + 9 :].split('"', 1)[0])
            expected = [f"case{i:06d}" for i in range(cases)]
            if keep:
                import shutil

                shutil.copy(out / "logs.yaml", keep)
            seconds = end - start
            cpu = usage.ru_utime + usage.ru_stime
            return {
                "results": float(len(found)),
                "missing": float(len(set(expected) - set(found))),
                "in_order": float(found == expected),
                "seconds": seconds,
                "mb_per_s": megabytes / seconds,
                "cases_per_s": cases / seconds,
                "cpu_s": cpu,
                "cpu_per_mb_ms": cpu / megabytes * 1000,
                "wall": wall,
            }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=100)
    parser.add_argument("--cases", type=int, default=100_000)
    args = parser.parse_args()
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "lava_dispatcher")], check=True)
    figures = run(args.mb, args.cases)
    if not figures["in_order"]:
        print(f"LOSS: {figures['results']:.0f} results, {figures['missing']:.0f} missing or out of order")
        return 1
    print(f"{args.mb:g} MB, {args.cases} test cases, all {args.cases} results present and in order")
    print(f"console throughput: {figures['mb_per_s']:.1f} MB/s, {figures['cases_per_s']:.0f} cases/s "
          f"({figures['seconds']:.1f} s from STARTRUN to ENDRUN)")
    print(f"dispatcher CPU: {figures['cpu_s']:.1f} s in all, {figures['cpu_per_mb_ms']:.0f} ms per MB; "
          f"whole job {figures['wall']:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
