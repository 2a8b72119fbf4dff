"""Issue 8's must-show 1 (ZeroMQ): the example event client of LAVA's documentation,
``zmq_client.py`` from Debian's lava-server-doc package, run unchanged, follows a job
submitted to the worker to its end.

The client asks ``http://<hostname>/RPC2`` (port 80, as it assumes) for
``scheduler.get_publisher_event_socket``, keeps the port, subscribes to
``tcp://<hostname>:<port>`` and prints the job's last event. The job waits
for a file the test creates once the client's connection to the event port
is established, so that the client cannot miss the job's end.
"""

from __future__ import annotations

import gzip
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from .helpers import FAST_DEVICE, Worker, job_yaml, write_devices

WorkerFactory = Any
CLIENT = Path("/usr/share/doc/lava-server-doc/html/v2/examples/source/zmq_client.py.gz")


def require_client_and_port_80() -> None:
    reason = ""
    if not CLIENT.exists():
        reason = f"LAVA's example client is not installed ({CLIENT}): apt-get install lava-server-doc"
    else:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", 80))
            except OSError as exc:
                reason = f"the worker must listen on 127.0.0.1:80 as zmq_client.py assumes: {exc.strerror}"
    if reason:
        if os.environ.get("LAVA_TESTS_REQUIRE_QEMU"):  # set by .ci/run
            pytest.fail(f"{reason} (.ci/run requires the LAVA compatibility tests)")
        pytest.skip(reason)


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def connected(pid: int, port: int) -> bool:
    """Whether process ``pid`` has an established TCP connection to ``port`` (/proc/net/tcp)."""
    inodes = socket_inodes(pid)
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote_port = int(fields[2].split(":")[1], 16)
        if remote_port == port and fields[3] == "01" and fields[9] in inodes:
            return True
    return False


def test_lavas_example_client_follows_a_job_to_its_end(tmp_path: Path, worker: WorkerFactory) -> None:
    require_client_and_port_80()
    client = tmp_path / "zmq_client.py"
    client.write_bytes(gzip.decompress(CLIENT.read_bytes()))  # as shipped: nothing changed
    gate = tmp_path / "go"
    device = {**FAST_DEVICE, "commands": {"users": {
        "gated": {"do": f"sh -c 'while [ ! -e {gate} ]; do sleep 0.05; done'"}}}}  # fmt: skip
    write_devices(tmp_path / "devices", 1, "gated", yaml.safe_load(yaml.safe_dump(device)))
    w: Worker = worker("--listen", "127.0.0.1:80", "--event-topic", "org.lavasoftware",
                       "--event-port", "0").start()  # fmt: skip
    assert w.url == "http://127.0.0.1:80"
    w.login()
    (job_id,) = w.submit(job_yaml("gated", name="followed"))
    follower = subprocess.Popen(
        [sys.executable, str(client), "--hostname", "127.0.0.1", "-j", str(job_id), "-t", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert follower.stdout is not None
        using = follower.stdout.readline()
        assert using.startswith("Using tcp://127.0.0.1:"), using + follower.stderr.read()  # type: ignore[union-attr]
        port = int(using.strip().rsplit(":", 1)[1])
        w.wait_for(lambda: connected(follower.pid, port), 30, "the client to connect to the events")
        gate.touch()
        out, err = follower.communicate(timeout=120)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == 0, err
    printed = yaml.safe_load(out.strip())  # the event's data, printed as a Python dict
    assert printed["job"] == job_id and printed["health"] == "Complete", out
    assert printed["state"] == "Finished" and printed["description"] == "followed"
