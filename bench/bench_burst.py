#!/usr/bin/env python3
"""A console flood end to end: simulated DUT -> pty -> pyserial -> reader thread ->
kernel-message watcher -> LAVA-format log file.

The simulated board prints a burst of numbered lines; the figure is how fast
the dispatcher's console path takes them in, with every line logged.

Usage: .venv/bin/python bench/bench_burst.py [--mb 20] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lava_dispatcher.console import Console, open_transport  # noqa: E402
from lava_dispatcher.console.watchers import KernelMessageWatcher  # noqa: E402
from lava_dispatcher.log import JobLogger  # noqa: E402
from lava_dispatcher.sim import SimServer  # noqa: E402


def one_run(megabytes: float, log: bool) -> tuple[float, int]:
    with tempfile.TemporaryDirectory(prefix="lava-burst-") as tmp:
        logger = JobLogger()
        logger.add_file(Path(tmp) / "logs.yaml")
        done = threading.Event()
        marks: dict[str, float] = {}
        count = [0]

        def on_line(text: str, when: float) -> None:
            if log:
                logger.target(text, when=when)
            if text.startswith("burst line"):
                count[0] += 1
                marks.setdefault("first", time.monotonic())
            elif text.startswith("burst done"):
                marks["last"] = time.monotonic()
                done.set()

        with SimServer(Path(tmp) / "sim", pty=True, boot_time=0.0, boot_lines=2, no_login=True,
                       burst_mb=megabytes, burst_after=0.3) as sim:
            console = Console(open_transport({"serial": sim.pty}), name="bench", on_line=on_line,
                              watchers=[KernelMessageWatcher(lambda m: None)])
            console.start()
            sim.power_on()
            if not done.wait(300):
                raise SystemExit("the burst never finished")
            console.close()
        logger.close()
        return marks["last"] - marks["first"], count[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=20)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    for log in (False, True):
        results = [one_run(args.mb, log) for _ in range(args.runs)]
        seconds = statistics.median(r[0] for r in results)
        lines = results[0][1]
        label = "reader + watcher + log file" if log else "reader + watcher (no log)"
        print(f"{label:30} {args.mb / seconds:6.1f} MB/s  {lines / seconds / 1000:6.0f}k lines/s  "
              f"({lines} lines, median of {args.runs})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
