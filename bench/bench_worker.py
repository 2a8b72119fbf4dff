#!/usr/bin/env python3
"""Worker benchmark: from submission to a running job, and a burst of 200 jobs.

A real ``lava-dispatch worker`` process with 8 simulated devices (the
fastest job: one user command on the worker host), driven over HTTP
(REST ``POST /api/v0.2/jobs/``) from this process:

- latency: with every device idle, one job at a time (each with its own
  name, so each is validated: no cache hit), the time from just before the
  client sends the POST to the job's recorded start (its ``lava-dispatch
  run`` process spawned), and from the worker's acceptance (``submit_time``)
  to the start; LAVA's scheduler only looks every 20 s;
- burst: 200 jobs posted at once from 16 connections, time until all are
  Finished, and whether every one is Complete.

Usage: .venv/bin/python bench/bench_worker.py [--runs N] [--burst N]
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from worker.helpers import Worker, compile_bytecode, job_yaml, write_devices  # noqa: E402


def epoch(text: str) -> float:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def latency(w: Worker, runs: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"post_to_start": [], "accepted_to_start": [], "post_reply": []}
    for n in range(runs):
        sent = time.time()
        (job_id,) = w.submit(job_yaml("hello", name=f"latency {n}"))
        replied = time.time()
        job = w.wait_finished([job_id], 60)[str(job_id)]
        if job["health"] != "Complete":
            raise SystemExit(f"job {job_id} ended {job['health']}: {job['failure_comment']}")
        start = epoch(job["start_time"])
        out["post_to_start"].append((start - sent) * 1000)
        out["accepted_to_start"].append((start - epoch(job["submit_time"])) * 1000)
        out["post_reply"].append((replied - sent) * 1000)
    return out


def burst(w: Worker, count: int) -> tuple[float, int]:
    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        submitted = list(pool.map(lambda n: w.submit(job_yaml("hello", name=f"burst {n}")), range(count)))
    ids = [i for ids in submitted for i in ids]
    jobs = w.wait_finished(ids, 600)
    return time.monotonic() - started, sum(1 for j in jobs.values() if j["health"] == "Complete")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=50, help="latency samples (default 50)")
    parser.add_argument("--burst", type=int, default=200, help="jobs in the burst (default 200)")
    args = parser.parse_args()
    compile_bytecode()
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp:
        write_devices(Path(tmp) / "devices", 8)
        w = Worker(Path(tmp))
        try:
            w.start()
            w.login()
            w.submit(job_yaml("hello", name="warm-up"))  # the validator's first imports
            samples = latency(w, args.runs)
            seconds, complete = burst(w, args.burst)
        finally:
            w.cleanup()
    print(f"latency, one job at a time on idle devices ({args.runs} runs), ms:")
    print("| measure | p50 | p90 | max |")
    print("|---|---|---|---|")
    names = {"post_to_start": "client POST to job started (process spawned)",
             "accepted_to_start": "worker accepted (on disk) to job started",
             "post_reply": "POST round trip (validated, stored, answered)"}  # fmt: skip
    for key, values in samples.items():
        print(f"| {names[key]} | {statistics.median(values):.1f} | {percentile(values, 0.9):.1f} "
              f"| {max(values):.1f} |")  # fmt: skip
    print(f"\nburst: {args.burst} jobs posted at once to 8 devices: all finished in {seconds:.1f} s "
          f"({args.burst / seconds:.1f} jobs/s), {complete} Complete")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
