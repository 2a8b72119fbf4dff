#!/usr/bin/env python3
"""How long loading and validating typical jobs and devices takes.

Usage: .venv/bin/python bench/bench_validation.py
Prints the fastest of 5 x 1000 runs per file, in milliseconds.
"""

from __future__ import annotations

import sys
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lava_dispatcher.schemas import load_yaml, validate_device, validate_job  # noqa: E402

JOBS = ROOT / "tests" / "schemas" / "jobs" / "valid"
DEVICES = [ROOT.parent / "shared" / "lava-devices" / name for name in ("bbb-01.yaml", "qemu-amd64-01.yaml")]


def best(func: object) -> float:
    return min(timeit.repeat(func, number=1000, repeat=5)) / 1000 * 1000  # type: ignore[arg-type]


def main() -> int:
    for name in ("qemu-tmpfs-amd64.yaml", "uboot-tftp-nfs.yaml", "multinode-ssh-guest.yaml"):
        text = (JOBS / name).read_text()
        data = load_yaml(text, name)
        print(f"job {name:28} validate {best(lambda d=data: validate_job(d)):.3f} ms   "
              f"load+validate {best(lambda t=text, n=name: validate_job(load_yaml(t, n))):.3f} ms")
    for path in DEVICES:
        if not path.exists():
            print(f"device {path.name}: skipped ({path} absent)")
            continue
        text = path.read_text()
        data = load_yaml(text, path.name, allow_duplicates=True)
        print(f"device {path.name:25} validate {best(lambda d=data: validate_device(d)):.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
