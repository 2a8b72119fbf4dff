#!/usr/bin/env python3
"""MultiNode benchmark: how long after the last node's `lava-sync` every node is released.

A group of N simulated boards (each a `sim serve` daemon whose shell runs
chrooted in its own busybox root) runs one submission with one command,
`lava-dispatch run SUBMISSION --device node=... ...`; each node's test
definition calls `lava-sync s1` ... `lava-sync sK` back to back. For every
sync, each node's log holds the record `lava_sync sX: ack after T ms`,
written when the coordinator's answer reached that node's dispatcher; the
call started T ms earlier. The latency of one node for one sync is its
release time minus the start of the *last* node's call: what the group
waits for the coordinator once everybody is there. Reported: p50, p95 and
max over all nodes and syncs, and the wall time of the whole group.

The boards stand for separate hardware, but here they share 2 cores with
the dispatchers: after a release, 32 busybox shells each fork a dozen
processes for the helper's reply handling and LAVA's debug lines, which
delays the dispatchers still to be woken by up to 100 ms. So the boards run
at nice 19, as if on their own CPUs.

With `--coordinator lava`, the same group runs against Debian's
lava-coordinator (LAVA's own: every wait is a poll every `poll_delay`, here
1 s, LAVA's code default; the packaged config says 3 s).

Usage: .venv/bin/python bench/bench_multinode.py [--nodes 32] [--syncs 10]
       [--coordinator ours|lava|both] [--markdown]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lava_dispatcher.log import read_records  # noqa: E402
from lava_dispatcher.sim import SimServer, child_env  # noqa: E402
from lava_dispatcher.sim.rootfs import build_busybox_rootfs  # noqa: E402

PROMPT = "root@sim:~# "
LAVA_COORDINATOR = Path("/usr/bin/lava-coordinator")
RELEASED = re.compile(
    r"^lava_sync (s\d+): ack after ([0-9.]+) ms(?: \(on the socket after (-?[0-9.]+) ms\))?$"
)


def submission(nodes: int, syncs: int) -> dict[str, Any]:
    steps = [f"lava-sync s{index}" for index in range(1, syncs + 1)]
    boot = {"method": "minimal", "prompts": [PROMPT],
            "auto_login": {"login_prompt": "login:", "username": "root"},
            "transfer_overlay": {"download_command": "wget -q", "unpack_command": "tar -C / -xzf"},
            "timeout": {"minutes": 2}}  # fmt: skip
    return {
        "job_name": f"sync bench {nodes}",
        "visibility": "public",
        "timeouts": {"job": {"minutes": 10}},
        "protocols": {"lava-multinode": {
            "roles": {"node": {"device_type": "sim", "count": nodes}},
            "timeout": {"minutes": 5},
        }},
        "actions": [
            {"deploy": {"role": ["node"], "to": "overlay"}},
            {"boot": {"role": ["node"], **boot}},
            {"test": {"role": ["node"], "timeout": {"minutes": 5}, "definitions": [{
                "from": "inline", "name": "syncs", "path": "inline/syncs.yaml",
                "repository": {"metadata": {"format": "Lava-Test Test Definition 1.0",
                                            "name": "syncs", "description": "bench"},
                               "run": {"steps": steps}}}]}},
        ],
    }


def board_device(sim: SimServer, hostname: str) -> dict[str, Any]:
    return {"extends": "sim", "hostname": hostname, "commands": {
        "connections": {"uart0": {"serial": sim.pty, "tags": ["primary"]}},
        "power_on": shlex.join(sim.power_command("on")),
        "power_off": shlex.join(sim.power_command("off")),
        "hard_reset": shlex.join(sim.power_command("reset")),
    }}  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def lava_coordinator(directory: Path) -> Any:
    """Debian's lava-coordinator on a free loopback port, ended by PID."""
    port = free_port()
    config = directory / "lava-coordinator.conf"
    config.write_text(json.dumps({"port": port, "blocksize": 4096, "poll_delay": 1,
                                  "coordinator_hostname": "127.0.0.1"}))  # fmt: skip
    log_path = directory / "lava-coordinator.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([str(LAVA_COORDINATOR), "--config", str(config),
                                    "--logfile", "-"], stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while b"Ready to accept new connections" not in log_path.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"lava-coordinator did not start: {log_path.read_text()}")
            time.sleep(0.02)  # it is starting: read its log again
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


def run_group(nodes: int, syncs: int, kind: str, keep: Path | None = None) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        if keep is None:
            base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-mn-")))
        else:
            base = keep / kind
            base.mkdir(parents=True)
        devices: list[str] = []
        for index in range(nodes):
            root = build_busybox_rootfs(base / f"node{index}" / "rootfs")
            sim = stack.enter_context(SimServer(base / f"node{index}" / "sim", pty=True,
                                                boot_time=0.0, boot_lines=2, rootfs=root))  # fmt: skip
            # the boards stand for separate hardware: their shells must not take the
            # CPU from the dispatchers and the coordinator being measured (children
            # started at power-on inherit the daemon's nice value)
            assert sim.process is not None
            os.setpriority(os.PRIO_PROCESS, sim.process.pid, 19)
            device = base / f"node{index}" / "device.yaml"
            device.write_text(yaml.safe_dump(board_device(sim, f"node{index}")))
            devices += ["--device", f"node={device}"]
        job = base / "submission.yaml"
        job.write_text(yaml.safe_dump(submission(nodes, syncs), sort_keys=False))
        extra: list[str] = []
        if kind == "lava":
            extra = ["--coordinator", stack.enter_context(lava_coordinator(base))]
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "lava_dispatcher", "run", str(job), *devices, "--job-id", "1000",
             "--output-dir", str(base / "out"), *extra],
            capture_output=True, text=True, env=child_env(), timeout=900, check=False,
        )  # fmt: skip
        wall = time.monotonic() - started
        if proc.returncode != 0:
            raise SystemExit(f"the group failed ({proc.returncode}):\n{proc.stdout[-4000:]}")
        # per sync id: (call start, reply on the node's socket, handled) for every node,
        # epoch seconds
        calls: dict[str, list[tuple[float, float, float]]] = {}
        for index in range(nodes):
            log = (base / "out" / f"1000.{index}" / "logs.yaml").read_text(encoding="utf-8")
            for record in read_records(log.splitlines()):
                match = RELEASED.match(str(record.get("msg", "")))
                if match:
                    handled = datetime.datetime.fromisoformat(record["dt"]).timestamp()
                    start = handled - float(match[2]) / 1000
                    socket_at = start + float(match[3]) / 1000 if match[3] else float("nan")
                    calls.setdefault(match[1], []).append((start, socket_at, handled))
        if len(calls) != syncs:
            raise SystemExit(f"{len(calls)} syncs found in the logs, expected {syncs}")
        at_socket, handled_at = [], []
        for sync_id, triples in calls.items():
            if len(triples) != nodes:
                raise SystemExit(f"{sync_id}: {len(triples)} releases for {nodes} nodes")
            last_call = max(start for start, _, _ in triples)
            at_socket += [(arrived - last_call) * 1000 for _, arrived, _ in triples]
            handled_at += [(handled - last_call) * 1000 for _, _, handled in triples]
        stamped = [value for value in at_socket if value == value]  # NaN: no kernel stamp
        if len(stamped) < len(at_socket):
            print(f"{kind}: {len(at_socket) - len(stamped)} replies had no kernel time stamp",
                  file=sys.stderr)  # fmt: skip
        return {"wall": wall, "socket": sorted(stamped), "handled": sorted(handled_at)}


def percentile(values: list[float], fraction: float) -> float:
    return values[min(len(values) - 1, round(fraction * (len(values) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=32)
    parser.add_argument("--syncs", type=int, default=10)
    parser.add_argument("--coordinator", choices=["ours", "lava", "both"], default="both")
    parser.add_argument("--markdown", action="store_true", help="print a table for docs/benchmarks.md")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="keep the group's files (logs, coordinator log) in DIR/<coordinator>")
    args = parser.parse_args()
    kinds = ["ours", "lava"] if args.coordinator == "both" else [args.coordinator]
    if "lava" in kinds and not LAVA_COORDINATOR.exists():
        print("lava-coordinator is not installed (apt-get install lava-coordinator): skipped",
              file=sys.stderr)  # fmt: skip
        kinds.remove("lava")
    rows = []
    for kind in kinds:
        result = run_group(args.nodes, args.syncs, kind, args.keep)
        for measure in ("socket", "handled"):
            lat = result[measure]
            row = (kind, measure, percentile(lat, 0.5), percentile(lat, 0.95), lat[-1], result["wall"])
            rows.append(row)
            print(f"{kind}, {measure}: {len(lat)} releases: p50 {row[2]:.1f} ms, "
                  f"p95 {row[3]:.1f} ms, max {row[4]:.1f} ms; group wall {row[5]:.1f} s",
                  file=sys.stderr)  # fmt: skip
    if args.markdown:
        names = {"ours": "ours (held requests)",
                 "lava": "Debian's lava-coordinator 2023.01 (polls every 1 s)"}  # fmt: skip
        measures = {"socket": "reply on the node's socket", "handled": "handled by the node's dispatcher"}
        print(f"| coordinator ({args.nodes} nodes x {args.syncs} syncs) | release | p50 (ms) | "
              "p95 (ms) | max (ms) | group wall (s) |")  # fmt: skip
        print("|---|---|---|---|---|---|")
        for kind, measure, p50, p95, worst, wall in rows:
            print(f"| {names[kind]} | {measures[measure]} | {p50:.1f} | {p95:.1f} | {worst:.1f} "
                  f"| {wall:.1f} |")  # fmt: skip
        print(f"\nMachine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; "
              f"{datetime.date.today().isoformat()}.")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
