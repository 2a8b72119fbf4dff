"""A real worker publishing events (ZeroMQ, real SUB sockets on loopback) and sending a
job's notifications: what the store commits is what subscribers hear."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
import zmq
from zmq.utils.monitor import recv_monitor_message

from lava_dispatcher.multinode_group import free_port

from .helpers import Worker, job_yaml, write_devices

WorkerFactory = Any
TOPIC = "org.example.lab"


@pytest.fixture
def sub() -> Iterator[Any]:
    """A SUB socket factory: connected (the handshake done) before it is returned."""
    ctx: zmq.Context[Any] = zmq.Context()
    made: list[zmq.Socket[Any]] = []

    def connect(port: int) -> zmq.Socket[Any]:
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 20_000)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        monitor.setsockopt(zmq.RCVTIMEO, 20_000)
        sock.connect(f"tcp://127.0.0.1:{port}")
        assert recv_monitor_message(monitor)["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED
        sock.disable_monitor()
        monitor.close(linger=0)
        made.append(sock)
        return sock

    yield connect
    for sock in made:
        sock.close(linger=0)
    ctx.term()


def events_until(sock: zmq.Socket[Any], done: Any) -> list[tuple[str, str, dict[str, Any]]]:
    """(topic, username, payload) of every event until ``done(payload, topic)`` holds."""
    got = []
    while True:
        frames = sock.recv_multipart()
        assert len(frames) == 5, frames
        topic, _uuid, _dt, username, data = (f.decode() for f in frames)
        payload = json.loads(data)
        got.append((topic, username, payload))
        if done(payload, topic):
            return got


def finished(job_id: int) -> Any:
    return lambda p, t: t.endswith(".testjob") and p.get("job") == job_id and p["state"] == "Finished"


def test_a_job_is_followed_over_zeromq(tmp_path: Path, worker: WorkerFactory, sub: Any) -> None:
    port = free_port()
    write_devices(tmp_path / "devices", 1)
    w: Worker = worker("--event-topic", TOPIC, "--event-port", str(port)).start()
    w.login()
    sock = sub(port)
    (warm,) = w.submit(job_yaml(name="warm-up"))  # the subscription is surely live after it
    events_until(sock, finished(warm))
    (job_id,) = w.submit(job_yaml(name="followed"))
    got = events_until(sock, finished(job_id))
    mine = [(p["state"], p["health"]) for t, _u, p in got if t == f"{TOPIC}.testjob" and p["job"] == job_id]
    assert mine[0] == ("Submitted", "Unknown")
    assert ("Running", "Unknown") in mine
    assert mine[-1] == ("Finished", "Complete")
    last = [p for t, _u, p in got if t.endswith(".testjob")][-1]
    for key in ("description", "priority", "submit_time", "submitter", "health_check",
                "device", "worker", "device_type", "start_time", "end_time"):  # fmt: skip
        assert key in last, (key, last)
    assert last["submitter"] == "admin" and last["device"] == "fast-01"
    assert all(u == "admin" for t, u, _p in got if t.endswith(".testjob"))
    devices = [(p["state"], p.get("job")) for t, u, p in got if t == f"{TOPIC}.device"]
    assert ("Running", str(job_id)) in devices and devices[-1][0] == "Idle", devices
    assert all(u == "lavaserver" for t, u, _p in got if t.endswith(".device"))
    seqs = [p["seq"] for _t, _u, p in got]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_private_jobs_stay_off_the_zeromq_socket(tmp_path: Path, worker: WorkerFactory, sub: Any) -> None:
    port = free_port()
    write_devices(tmp_path / "devices", 1)
    w: Worker = worker("--event-topic", TOPIC, "--event-port", str(port)).start()
    w.login()
    sock = sub(port)
    (warm,) = w.submit(job_yaml(name="warm-up"))
    events_until(sock, finished(warm))
    (private,) = w.submit(job_yaml(name="secret", visibility="personal"))
    (public,) = w.submit(job_yaml(name="open"))
    got = events_until(sock, finished(public))
    jobs = {p.get("job") for t, _u, p in got if t.endswith(".testjob")}
    assert public in jobs and private not in jobs
    assert w.wait_finished([private])[str(private)]["health"] == "Complete"


def test_events_are_off_unless_a_topic_is_given(tmp_path: Path, worker: WorkerFactory) -> None:
    write_devices(tmp_path / "devices", 1)
    w: Worker = worker().start()
    assert "events: topic" not in w.output()
    taken = free_port()
    blocker = zmq.Context().socket(zmq.PUB)
    blocker.bind(f"tcp://127.0.0.1:{taken}")
    try:
        busy: Worker = worker("--event-topic", TOPIC, "--event-port", str(taken),
                              state=tmp_path / "state2")  # fmt: skip
        busy.process = None
        with pytest.raises(AssertionError, match="event-port: cannot publish events on"):
            busy.start()
        assert busy.wait_exit() == 2
    finally:
        blocker.close(linger=0)


class _Receiver(http.server.BaseHTTPRequestHandler):
    calls: list[tuple[str, str, dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.calls.append((self.path, self.headers.get("Authorization", ""), json.loads(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_a_finished_job_calls_its_callback(tmp_path: Path, worker: WorkerFactory) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        write_devices(tmp_path / "devices", 1)
        w: Worker = worker().start()
        w.login()
        url = f"http://127.0.0.1:{server.server_address[1]}/done/{{ID}}"
        notify = {"criteria": {"status": "finished"},
                  "callbacks": [{"url": url, "method": "POST", "token": "raw-secret",
                                 "dataset": "minimal", "content-type": "json"}]}  # fmt: skip
        (job_id,) = w.submit(job_yaml(name="notified", notify=notify))
        assert w.wait_finished([job_id])[str(job_id)]["health"] == "Complete"
        w.wait_for(lambda: _Receiver.calls or None, 20, "the callback")
        ((path, token, payload),) = _Receiver.calls
        assert path == f"/done/{job_id}" and token == "raw-secret"
        assert payload["id"] == job_id and payload["status"] == 2  # LAVA's legacy "complete"
        assert payload["health_string"] == "Complete" and payload["actual_device_id"] == "fast-01"
    finally:
        server.shutdown()
        server.server_close()


def test_the_event_settings_are_checked(tmp_path: Path, worker: WorkerFactory) -> None:
    write_devices(tmp_path / "devices", 1)
    config = tmp_path / "worker.yaml"
    config.write_text(yaml.safe_dump({"event-topic": "has space", "event-port": 5500}))
    bad: Worker = worker("--config", str(config))
    with pytest.raises(AssertionError, match="event-topic: expected a dotted topic"):
        bad.start()
    config.write_text(yaml.safe_dump({"notify": {"smtp": {"port": "x"}}}))
    with pytest.raises(AssertionError, match="notify"):
        worker("--config", str(config), state=tmp_path / "s2").start()


@pytest.mark.slow
def test_a_lava_test_event_line_is_an_event(tmp_path: Path, worker: WorkerFactory, sub: Any) -> None:
    from e2e.helpers import power_commands
    from testshell.helpers import PROMPT, busybox_rootfs, have_namespaces

    if have_namespaces.args[0]:
        pytest.skip(have_namespaces.kwargs["reason"])
    from lava_dispatcher.sim import SimServer

    rootfs = busybox_rootfs(tmp_path / "rootfs")
    with SimServer(tmp_path / "board", pty=True, boot_time=0.05, boot_lines=4, rootfs=rootfs) as board:
        device = {"extends": "sim", "commands": {
            "connections": {"uart0": {"serial": board.pty, "tags": ["primary"]}},
            **power_commands(board)}}  # fmt: skip
        write_devices(tmp_path / "devices", 1, "board", device)
        port = free_port()
        w: Worker = worker("--event-topic", TOPIC, "--event-port", str(port)).start()
        w.login()
        sock = sub(port)
        definition = {
            "job_name": "events", "device_type": "sim", "visibility": "public",
            "timeouts": {"job": {"seconds": 90}},
            "actions": [
                {"deploy": {"to": "overlay"}},
                {"boot": {"method": "minimal", "prompts": [PROMPT], "timeout": {"seconds": 30},
                          "auto_login": {"login_prompt": "login:", "username": "root"},
                          "transfer_overlay": {"download_command": "wget -q",
                                               "unpack_command": "tar -C / -xzf"}}},
                {"test": {"timeout": {"seconds": 30}, "definitions": [{
                    "from": "inline", "name": "ev", "path": "inline/ev.yaml",
                    "repository": {"metadata": {"format": "Lava-Test Test Definition 1.0",
                                                "name": "ev", "description": "events"},
                                   "run": {"steps": ["lava-test-event booted-fine"]}}}]}},
            ],
        }  # fmt: skip
        (job_id,) = w.submit(yaml.safe_dump(definition))
        got = events_until(sock, finished(job_id))
    lines = [p for t, _u, p in got if t == f"{TOPIC}.event"]
    assert lines == [{"job": job_id, "message": "booted-fine", "seq": lines[0]["seq"]}], got
    assert [p["health"] for t, _u, p in got if t.endswith(".testjob")][-1] == "Complete"


def test_event_port_0_is_told_by_xmlrpc(tmp_path: Path, worker: WorkerFactory, sub: Any) -> None:
    """scheduler.get_publisher_event_socket gives the port the system picked."""
    import xmlrpc.client

    write_devices(tmp_path / "devices", 1)
    w: Worker = worker("--event-topic", TOPIC, "--event-port", "0").start()
    w.login()
    address = xmlrpc.client.ServerProxy(f"{w.url}/RPC2").scheduler.get_publisher_event_socket()
    host, _, port = address.removeprefix("tcp://").rpartition(":")
    assert host == "127.0.0.1" and port.isdigit() and int(port) > 0, address
    sock = sub(int(port))
    (job_id,) = w.submit(job_yaml(name="found"))
    assert events_until(sock, finished(job_id))
