"""The lava-multinode protocol against real coordinators (LAVA's from Debian, and ours).

Group members run in threads of this process, each with its own protocol
and run context, talking to a coordinator process over loopback.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from lava_dispatcher.errors import (
    InfrastructureError,
    JobCanceled,
    JobError,
    MultinodeProtocolTimeoutError,
    TestError,
)
from lava_dispatcher.pipeline import Action
from lava_dispatcher.protocols.multinode import (
    ABORT_ID,
    MULTINODE_DATA,
    MultinodeGroupAborted,
    MultinodeProtocol,
    received,
)

from .conftest import Coordinator, free_port, start_coordinator
from .helpers import Member, in_threads, member

pytestmark = pytest.mark.slow  # coordinator processes; LAVA's polls once a second


def group_of(address: str, roles: dict[str, str], **options: Any) -> list[Member]:
    name = str(uuid.uuid4())
    return [member(address, job, role, name, len(roles), roles=roles, **options)
            for job, role in roles.items()]  # fmt: skip


class TopLevel(Action):
    name = "lava-test-retry"


class BootAction(Action):
    name = "auto-login-action"


def test_group_send_wait_wait_all_sync(coordinator: Coordinator) -> None:
    server, client1, client2 = group_of(
        coordinator.address, {"101": "server", "102": "client", "103": "client"}
    )

    def serve() -> list[Any]:
        server.protocol.set_up(server.ctx)
        sent = server.protocol.send(server.ctx, "ready", {"ip": "10.0.0.1", "text": "a b"}, 10)
        server.protocol.send(server.ctx, "round", {"from": "101"}, 10)
        everyone = server.protocol.wait_all(server.ctx, "round", 10)
        synced = server.protocol.sync(server.ctx, "done", 10)
        server.protocol.finalise(server.ctx)
        return [sent, everyone, synced]

    def client(node: Member) -> list[Any]:
        node.protocol.set_up(node.ctx)
        got = node.protocol.wait(node.ctx, "ready", 10)
        node.protocol.send(node.ctx, "round", {"from": node.protocol.job_id}, 10)
        servers = node.protocol.wait_all(node.ctx, "round", 10, role="server")
        synced = node.protocol.sync(node.ctx, "done", 10)
        node.protocol.finalise(node.ctx)
        return [got, servers, synced]

    results = in_threads(serve, lambda: client(client1), lambda: client(client2))
    for result in results:
        assert not isinstance(result, BaseException), result
    (sent, everyone, synced), *clients = results
    assert sent == {"response": "ack"}
    assert everyone["response"] == "ack"
    assert everyone["message"] == {
        "101": {"from": "101"},
        "102": {"from": "102"},
        "103": {"from": "103"},
    }
    assert synced["response"] == "ack"
    for got, servers, synced in clients:
        assert got == {"response": "ack", "message": {"101": {"ip": "10.0.0.1", "text": "a b"}}}
        assert servers["response"] == "ack" and servers["message"]["101"] == {"from": "101"}
        assert synced["response"] == "ack"
    for node in (server, client1, client2):
        assert node.protocol.roles == {"101": "server", "102": "client", "103": "client"}


def test_roles_come_from_the_coordinator_when_the_job_has_none(coordinator: Coordinator) -> None:
    name = str(uuid.uuid4())
    nodes = [
        member(coordinator.address, job, role, name, 2) for job, role in (("7", "a"), ("8", "b"))
    ]
    results = in_threads(*(lambda n=n: n.protocol.set_up(n.ctx) for n in nodes))
    assert results == [None, None]
    assert nodes[0].protocol.roles == nodes[1].protocol.roles == {"7": "a", "8": "b"}
    for node in nodes:
        node.protocol.finalise(node.ctx)


def test_delayed_start_waits_for_lava_start(coordinator: Coordinator) -> None:
    roles = {"201": "server", "202": "client"}
    name = str(uuid.uuid4())
    server = member(coordinator.address, "201", "server", name, 2, roles=roles)
    client = member(coordinator.address, "202", "client", name, 2, roles=roles,
                    request="lava-start", expect_role="server")  # fmt: skip
    started: dict[str, float] = {}

    def late_start() -> None:
        server.protocol.set_up(server.ctx)
        time.sleep(0.5)  # the server's own work before it lets the client start
        started["sent"] = time.monotonic()
        server.protocol.send(server.ctx, "lava_start", {}, 10)

    def delayed() -> None:
        client.protocol.set_up(client.ctx)
        started["client"] = time.monotonic()

    assert in_threads(late_start, delayed) == [None, None]
    assert started["client"] >= started["sent"]
    assert any("start is delayed until role 'server'" in m for m in client.messages("info"))
    for node in (server, client):
        node.protocol.finalise(node.ctx)


def test_expect_role_must_not_be_the_own_role() -> None:
    parameters = {"protocols": {"lava-multinode": {"target_group": "g", "role": "a", "group_size": 2,
                                                   "request": "lava-start", "expect_role": "a"}}}  # fmt: skip
    with pytest.raises(JobError, match="expect_role"):
        MultinodeProtocol(parameters, "1")


@pytest.mark.parametrize("kind", ["lava", "ours"])
def test_a_node_that_never_arrives_times_out_on_the_wall_clock(tmp_path: Path, kind: str) -> None:
    started = start_coordinator(kind, tmp_path)
    try:
        (alone,) = [member(started.address, "301", "server", str(uuid.uuid4()), 2,
                           dispatcher={"multinode_system_timeout": 1.5})]  # fmt: skip
        begin = time.monotonic()
        with pytest.raises(MultinodeProtocolTimeoutError, match="group_data"):
            alone.protocol.set_up(alone.ctx)
        elapsed = time.monotonic() - begin
        assert 1.5 <= elapsed < 2.5, elapsed
        # it left the group (clear_group) before raising; finalise does not repeat it
        alone.protocol.finalise(alone.ctx)
    finally:
        started.stop()


def test_an_unreachable_coordinator_times_out_on_the_wall_clock() -> None:
    """Connection failures count against the timeout (LAVA's client skips it there)."""
    (alone,) = [member(f"127.0.0.1:{free_port()}", "1", "a", "g", 2,
                       dispatcher={"multinode_system_timeout": 2})]  # fmt: skip
    begin = time.monotonic()
    with pytest.raises(MultinodeProtocolTimeoutError, match="Connection refused"):
        alone.protocol.set_up(alone.ctx)
    assert 2.0 <= time.monotonic() - begin < 3.0
    warnings = [m for m in alone.messages("warning") if "group_data failed" in m]
    assert len(warnings) == 1, alone.messages("warning")


def test_a_silent_peer_times_out_a_wait_within_a_second(coordinator: Coordinator) -> None:
    waiter, silent = group_of(coordinator.address, {"401": "client", "402": "server"})
    assert in_threads(*(lambda n=n: n.protocol.set_up(n.ctx) for n in (waiter, silent))) == [
        None,
        None,
    ]
    begin = time.monotonic()
    with pytest.raises(MultinodeProtocolTimeoutError, match="lava_wait never"):
        waiter.protocol.wait(waiter.ctx, "never", 2.0)
    assert 2.0 <= time.monotonic() - begin < 3.0
    for node in (waiter, silent):
        node.protocol.finalise(node.ctx)


def test_a_cancel_ends_a_wait_at_once(coordinator: Coordinator) -> None:
    waiter, other = group_of(coordinator.address, {"501": "a", "502": "b"})
    in_threads(*(lambda n=n: n.protocol.set_up(n.ctx) for n in (waiter, other)))
    timer = threading.Timer(0.5, waiter.ctx.interrupter.cancel, args=(JobCanceled("canceled"),))
    timer.start()
    begin = time.monotonic()
    with pytest.raises(JobCanceled):
        waiter.protocol.wait(waiter.ctx, "never", 30)
    assert time.monotonic() - begin < 1.5
    waiter.ctx.interrupter.rearm()
    for node in (waiter, other):
        node.protocol.finalise(node.ctx)


def test_a_failed_essential_job_ends_the_others(coordinator: Coordinator) -> None:
    name = str(uuid.uuid4())
    roles = {"601": "server", "602": "client"}
    server = member(coordinator.address, "601", "server", name, 2, roles=roles, essential=True)
    client = member(coordinator.address, "602", "client", name, 2, roles=roles)
    in_threads(*(lambda n=n: n.protocol.set_up(n.ctx) for n in (server, client)))
    failed_at: list[float] = []

    def fail_essential() -> None:
        time.sleep(0.3)
        failed_at.append(time.monotonic())
        try:
            raise TestError("boom")
        except TestError:  # the pipeline calls after_action while the error goes up
            server.protocol.after_action(TopLevel(), server.ctx, {"result": "fail"})

    def blocked() -> Any:
        return client.protocol.wait(client.ctx, "never", 30)

    results = in_threads(blocked, fail_essential)
    ended = time.monotonic()
    assert isinstance(results[0], MultinodeGroupAborted), results
    assert "job 601 of essential role 'server' failed (Test: boom)" in str(results[0])
    assert results[0].error_type == "Job"
    assert ended - failed_at[0] < 2.5  # LAVA's coordinator: one poll_delay (1 s) at most
    for node in (server, client):
        node.ctx.interrupter.rearm()
        node.protocol.finalise(node.ctx)


def test_a_non_essential_failure_ends_nobody(coordinator: Coordinator) -> None:
    quitter, other = group_of(coordinator.address, {"701": "a", "702": "b"})
    in_threads(*(lambda n=n: n.protocol.set_up(n.ctx) for n in (quitter, other)))
    try:
        raise TestError("boom")
    except TestError:
        quitter.protocol.after_action(TopLevel(), quitter.ctx, {"result": "fail"})
    quitter.protocol.finalise(quitter.ctx)
    with pytest.raises(MultinodeProtocolTimeoutError):
        other.protocol.wait(other.ctx, "never", 1.5)
    other.protocol.finalise(other.ctx)


def test_the_abort_id_is_reserved(coordinator: Coordinator) -> None:
    (alone,) = group_of(coordinator.address, {"801": "a"})
    alone.protocol.set_up(alone.ctx)
    with pytest.raises(JobError, match="reserved"):
        alone.protocol.send(alone.ctx, ABORT_ID, {}, 5)
    alone.protocol.finalise(alone.ctx)


def test_requests_at_named_actions_fill_dollar_values(coordinator: Coordinator) -> None:
    server, client = group_of(coordinator.address, {"901": "server", "902": "client"})
    in_threads(*(lambda n=n: n.protocol.set_up(n.ctx) for n in (server, client)))
    action = BootAction()
    action.parameters = {"namespace": "common", "protocols": {"lava-multinode": [
        {"action": "auto-login-action", "request": "lava-wait", "messageID": "ipv4",
         "message": {"ipaddr": "$ipaddr"}, "timeout": {"seconds": 10}},
        {"action": "other-action", "request": "lava-sync", "messageID": "x"},
    ]}}  # fmt: skip
    sender = BootAction()
    sender.parameters = {"protocols": {"lava-multinode": {
        "action": "auto-login-action", "request": "lava-send", "messageID": "ipv4",
        "message": {"ipaddr": "192.168.0.3", "extra": 5}}}}  # fmt: skip
    assert len(client.protocol.requests_for(action)) == 1
    results = in_threads(lambda: client.protocol.before_action(action, client.ctx),
                         lambda: server.protocol.before_action(sender, server.ctx))  # fmt: skip
    assert results == [None, None]
    assert client.ctx.data("common").get(MULTINODE_DATA) == {"ipv4": {"ipaddr": "192.168.0.3"}}
    assert received(client.ctx, "common", "ipv4") == {"ipaddr": "192.168.0.3"}
    assert "Setting namespace data key ipv4 to {'ipaddr': '192.168.0.3'}" in client.messages("info")
    missing = BootAction()
    missing.parameters = {"protocols": {"lava-multinode": [
        {"action": "auto-login-action", "request": "lava-wait", "messageID": "ipv4",
         "message": {"netmask": "$netmask"}}]}}  # fmt: skip
    with pytest.raises(JobError, match="Unable to identify replaceable values"):
        client.protocol.before_action(missing, client.ctx)
    for node in (server, client):
        node.protocol.finalise(node.ctx)


def test_held_waits_answer_at_once_where_lava_polls(tmp_path: Path) -> None:
    """Ours answers a wait the moment the message is sent, whatever poll_delay says."""
    started = start_coordinator("ours", tmp_path)
    try:
        waiter, sender = group_of(started.address, {"11": "a", "12": "b"},
                                  dispatcher={"coordinator_poll_delay": 5})  # fmt: skip
        in_threads(*(lambda n=n: n.protocol.set_up(n.ctx) for n in (waiter, sender)))
        sent_at: list[float] = []

        def send_later() -> None:
            time.sleep(0.3)
            sent_at.append(time.monotonic())
            sender.protocol.send(sender.ctx, "go", {"k": "v"}, 5)

        def wait() -> float:
            waiter.protocol.wait(waiter.ctx, "go", 10)
            return time.monotonic()

        answered, _ = in_threads(wait, send_later)
        assert answered - sent_at[0] < 0.3, answered - sent_at[0]
        for node in (waiter, sender):
            node.protocol.finalise(node.ctx)
    finally:
        started.stop()


def test_a_shared_secret_signs_every_request(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("s3cret\n")
    started = start_coordinator("ours", tmp_path, "--secret-file", str(secret_file))
    try:
        nodes = group_of(started.address, {"21": "a", "22": "b"},
                         dispatcher={"coordinator_secret": "s3cret"})  # fmt: skip
        assert in_threads(*(lambda n=n: n.protocol.set_up(n.ctx) for n in nodes)) == [None, None]
        a, b = nodes
        got, _ = in_threads(lambda: a.protocol.wait(a.ctx, "m", 5),
                            lambda: b.protocol.send(b.ctx, "m", {"k": "v"}, 5))  # fmt: skip
        assert got == {"response": "ack", "message": {"22": {"k": "v"}}}
        for node in nodes:
            node.protocol.finalise(node.ctx)
        (wrong,) = group_of(started.address, {"31": "a"}, dispatcher={"coordinator_secret": "nope"})
        with pytest.raises(InfrastructureError, match="refused to form group"):
            wrong.protocol.set_up(wrong.ctx)
    finally:
        started.stop()
