"""Events: numbering, replay, slow subscribers, who sees what, and the ZeroMQ PUB socket
(real SUB sockets on loopback, with and without CURVE)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from lava_dispatcher.worker.events import EventHub, job_event_data, job_owner
from lava_dispatcher.worker.store import JobRecord, UserRecord
from lava_dispatcher.worker.zmq_publisher import CurveKeys, ZmqPublisher

ALICE = UserRecord("alice", False, True, 0.0)
BOB = UserRecord("bob", False, True, 0.0)
ADMIN = UserRecord("root", True, True, 0.0)


def job(**changes: Any) -> JobRecord:
    fields: dict[str, Any] = {
        "id": 7, "sub_id": None, "target_group": None, "description": "qemu boot",
        "requested_device_type": "qemu", "pinned_device": None, "actual_device": None,
        "tags": (), "priority": 50, "visibility": "public", "submitter": "alice",
        "health_check": False, "essential": False, "state": "Submitted", "health": "Unknown",
        "submit_time": 1_786_000_000.5, "start_time": None, "end_time": None,
        "failure_comment": None, "error_type": None, "error_msg": None, "pid": None,
        "definition": "", "original_definition": "", "multinode_definition": "",
    }  # fmt: skip
    fields.update(changes)
    return JobRecord(**fields)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_events_are_numbered_and_framed_as_lava_does() -> None:
    hub = EventHub("org.example")
    first = hub.publish("testjob", job_event_data(job(), "w1"), username="alice")
    second = hub.publish("device", {"device": "qemu01", "state": "Idle"})
    assert (first.seq, second.seq) == (1, 2)
    topic, uuid, dt, username, payload = first.frames()
    assert topic == "org.example.testjob" and username == "alice"
    assert len(uuid) == 36 and dt.endswith("+00:00")
    data = json.loads(payload)
    assert data == {"job": 7, "state": "Submitted", "health": "Unknown",
                    "description": "qemu boot", "priority": 50,
                    "submit_time": "2026-08-06T07:06:40.500000+00:00", "submitter": "alice",
                    "health_check": False, "device_type": "qemu", "seq": 1}  # fmt: skip
    assert second.frames()[3] == "lavaserver"
    with pytest.raises(ValueError, match="unknown event kind"):
        hub.publish("jobs", {})


def test_a_running_sub_job_names_its_device_worker_and_sub_id() -> None:
    data = job_event_data(job(sub_id="7.1", actual_device="qemu01", state="Running",
                            start_time=1_786_000_100.0), "worker-1")  # fmt: skip
    assert data["sub_id"] == "7.1" and data["device"] == "qemu01" and data["worker"] == "worker-1"
    assert data["start_time"] == "2026-08-06T07:08:20+00:00"
    assert data["job"] == 7 and isinstance(data["job"], int)


def test_a_reconnecting_subscriber_replays_what_it_missed() -> None:
    async def scenario() -> None:
        hub = EventHub(backlog=5)
        for index in range(3):
            hub.publish("device", {"n": index})
        sub = hub.subscribe(after=1)
        got = [await sub.get() for _ in range(2)]
        assert [e.seq for e in got if e] == [2, 3]
        hub.publish("device", {"n": 3})
        event = await sub.get()
        assert event is not None and event.seq == 4
        for index in range(10):
            hub.publish("device", {"n": index})
        with pytest.raises(ValueError, match="no longer kept"):
            hub.subscribe(after=2)
        with pytest.raises(ValueError, match="no event 99"):
            hub.subscribe(after=99)
        assert [e.seq for e in hub.kept()] == [10, 11, 12, 13, 14]

    run(scenario())


def test_a_subscriber_that_does_not_keep_up_is_dropped_not_waited_for() -> None:
    async def scenario() -> None:
        hub = EventHub(queue_size=3)
        slow, fast = hub.subscribe(), hub.subscribe()
        for index in range(3):
            hub.publish("device", {"n": index})
        assert [(await fast.get()).seq for _ in range(3)] == [1, 2, 3]  # type: ignore[union-attr]
        hub.publish("device", {"n": 3})  # slow has 3 waiting already
        assert slow.dropped == "more than 3 events waiting"
        assert hub.subscribers == 1
        # what it had is still delivered, then the end
        assert [(await slow.get()).seq for _ in range(3)] == [1, 2, 3]  # type: ignore[union-attr]
        assert await slow.get() is None
        assert (await fast.get()).seq == 4  # type: ignore[union-attr]

    run(scenario())


def test_private_jobs_events_are_for_their_submitter_and_admins() -> None:
    hub = EventHub()
    private = job(visibility="personal")
    event = hub.publish("testjob", job_event_data(private, None), username="alice",
                        owner=job_owner(private))  # fmt: skip
    assert not event.public
    assert event.visible_to(ALICE) and event.visible_to(ADMIN)
    assert not event.visible_to(BOB) and not event.visible_to(None)
    public = hub.publish("testjob", job_event_data(job(), None), owner=job_owner(job()))
    assert public.visible_to(None) and public.visible_to(BOB)


def test_a_failing_listener_does_not_stop_publishing() -> None:
    hub = EventHub()
    seen: list[int] = []

    def broken(event: Any) -> None:
        raise RuntimeError("boom")

    hub.listeners += [broken, lambda event: seen.append(event.seq)]
    hub.publish("worker", {"hostname": "w1"})
    hub.publish("worker", {"hostname": "w1"})
    assert seen == [1, 2]


# --- the ZeroMQ PUB socket -------------------------------------------------------------


@pytest.fixture
def context() -> Iterator[zmq.Context[Any]]:
    ctx: zmq.Context[Any] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def subscriber(ctx: zmq.Context[Any], address: str, **curve: bytes) -> zmq.Socket[Any]:
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    for name, value in curve.items():
        setattr(sock, name, value)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(address)
    return sock


def wait_connected(sock: zmq.Socket[Any], hub: EventHub, publish: Any) -> None:
    """Publish probes until one arrives (a PUB socket drops what it sends before the
    subscription is live), then drain those still in flight."""
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    for _ in range(100):
        publish(hub.publish("worker", {"hostname": "probe"}))
        if poller.poll(50):
            break
    else:
        raise AssertionError("the subscriber never connected")
    while poller.poll(100):
        sock.recv_multipart()


def test_the_pub_socket_sends_five_frames_and_keeps_private_jobs_to_itself(
    context: zmq.Context[Any],
) -> None:
    hub = EventHub("org.lavasoftware")
    publisher = ZmqPublisher("tcp://127.0.0.1:0")
    try:
        assert publisher.address.startswith("tcp://127.0.0.1:")
        sock = subscriber(context, publisher.address)
        wait_connected(sock, hub, publisher.send)
        private = job(id=8, visibility="personal")
        publisher.send(hub.publish("testjob", job_event_data(private, None),
                                   username="alice", owner=job_owner(private)))  # fmt: skip
        publisher.send(hub.publish("testjob", job_event_data(job(), None), username="alice"))
        frames = sock.recv_multipart()
        assert len(frames) == 5
        topic, _uuid, _dt, username, payload = (f.decode() for f in frames)
        assert topic == "org.lavasoftware.testjob" and username == "alice"
        assert json.loads(payload)["job"] == 7  # the public one; job 8 was not sent
        with pytest.raises(zmq.Again):
            sock.recv_multipart(flags=zmq.NOBLOCK)
    finally:
        publisher.close()


def test_with_curve_keys_private_events_go_to_listed_clients_only(
    context: zmq.Context[Any], tmp_path: Path
) -> None:
    server_public, server_secret = zmq.curve_keypair()
    client_public, client_secret = zmq.curve_keypair()
    stranger_public, stranger_secret = zmq.curve_keypair()
    (tmp_path / "server.secret").write_bytes(server_secret + b"\n")
    clients = tmp_path / "clients"
    clients.mkdir()
    (clients / "ci.key").write_bytes(client_public)
    keys = CurveKeys.load(tmp_path / "server.secret", clients)
    assert keys.public == server_public.decode()
    hub = EventHub()
    publisher = ZmqPublisher("tcp://127.0.0.1:0", keys)
    try:
        allowed = subscriber(context, publisher.address, curve_serverkey=server_public,
                             curve_publickey=client_public, curve_secretkey=client_secret)  # fmt: skip
        wait_connected(allowed, hub, publisher.send)
        stranger = subscriber(context, publisher.address, curve_serverkey=server_public,
                              curve_publickey=stranger_public, curve_secretkey=stranger_secret)  # fmt: skip
        stranger.setsockopt(zmq.RCVTIMEO, 500)
        private = job(id=8, visibility="personal")
        publisher.send(hub.publish("testjob", job_event_data(private, None),
                                   username="alice", owner=job_owner(private)))  # fmt: skip
        assert json.loads(allowed.recv_multipart()[4])["job"] == 8
        with pytest.raises(zmq.Again):
            stranger.recv_multipart()  # its handshake was refused: it gets nothing
    finally:
        publisher.close()


def test_bad_curve_keys_are_refused_clearly(tmp_path: Path) -> None:
    (tmp_path / "server.secret").write_text("not a key\n")
    with pytest.raises(ValueError, match="event CURVE secret key"):
        CurveKeys.load(tmp_path / "server.secret", tmp_path)
    _public, secret = zmq.curve_keypair()
    (tmp_path / "server.secret").write_bytes(secret)
    (tmp_path / "short.key").write_text("abc")
    with pytest.raises(ValueError, match="expected 40 Z85 characters"):
        CurveKeys.load(tmp_path / "server.secret", tmp_path)


def test_an_address_in_use_is_a_clear_error() -> None:
    first = ZmqPublisher("tcp://127.0.0.1:0")
    try:
        with pytest.raises(OSError, match="cannot publish events on"):
            ZmqPublisher(first.address)
    finally:
        first.close()
