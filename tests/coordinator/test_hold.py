"""Held requests: answered as soon as the answer is no longer ``wait``, by the change itself.

Timing goals belong to bench/; these tests check that a held request is released by
the event (its hold is far from over when it returns) and that many can be held at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from lava_dispatcher.protocols.coordinator import BackgroundCoordinator

from .helpers import Address, Node, form, group

LONG = 40.0  # a hold that never runs out in these tests


@pytest.fixture
def server(start_coordinator: Callable[..., BackgroundCoordinator]) -> BackgroundCoordinator:
    return start_coordinator()


def addr(server: BackgroundCoordinator) -> Address:
    return ("127.0.0.1", server.server.port)


def until_held(server: BackgroundCoordinator, count: int, within: float = 20.0) -> None:
    """Wait (in the test) until the server holds `count` requests."""
    deadline = time.monotonic() + within
    while server.server.held < count:
        assert time.monotonic() < deadline, f"{server.server.held} of {count} requests held"
        time.sleep(0.005)


def test_held_wait_is_released_by_the_send(server: BackgroundCoordinator) -> None:
    sender, waiter = group(addr(server), "g1", {"1": "server", "2": "client"})
    form([sender, waiter])
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(waiter.call, "lava_wait", messageID="ready", hold=LONG, timeout=60)
        until_held(server, 1)
        assert not pending.done()
        started = time.monotonic()
        assert sender.call("lava_send", messageID="ready", message={"ip": "10.0.0.5"}) == {
            "response": "ack"
        }
        reply = pending.result(timeout=LONG / 2)
        released_after = time.monotonic() - started
    assert reply == {"response": "ack", "message": {"1": {"ip": "10.0.0.5"}}}
    assert released_after < LONG / 2  # released by the send, not by the hold running out
    assert server.server.held == 0


def test_hold_runs_out_with_wait(server: BackgroundCoordinator) -> None:
    (node,) = group(addr(server), "g2", {"1": "solo"})
    form([node])
    assert node.call("lava_wait", messageID="never", hold=0.05) == {"response": "wait"}
    assert server.server.held == 0


@pytest.mark.parametrize("hold", [0, -1, 50.5, "5", True, [], float("nan")])
def test_invalid_hold_is_refused(server: BackgroundCoordinator, hold: Any) -> None:
    (node,) = group(addr(server), "g3", {"1": "solo"})
    reply = node.call("group_data", hold=hold)
    assert reply["response"] == "nack" and "hold" in reply["error"]


def test_hold_on_an_immediate_answer_changes_nothing(server: BackgroundCoordinator) -> None:
    (node,) = group(addr(server), "g4", {"1": "solo"})
    assert node.call("group_data", hold=LONG) == {"response": "group_data", "roles": {"1": "solo"}}
    assert node.call("lava_send", messageID="m", hold=LONG) == {"response": "ack"}


def test_held_group_data_forms_the_group_in_one_call_each(server: BackgroundCoordinator) -> None:
    nodes = group(addr(server), "g5", {str(n): "r" for n in range(5)})
    with ThreadPoolExecutor(len(nodes)) as pool:
        replies = list(pool.map(lambda node: node.call("group_data", hold=LONG, timeout=60), nodes))
    assert all(
        reply == {"response": "group_data", "roles": {str(n): "r" for n in range(5)}}
        for reply in replies
    )


def test_held_sync_gets_its_ack_without_another_poll(server: BackgroundCoordinator) -> None:
    nodes = group(addr(server), "g6", {"1": "a", "2": "b", "3": "b"})
    form(nodes)
    for _round in range(2):  # the id can be used again
        with ThreadPoolExecutor(len(nodes)) as pool:
            replies = list(
                pool.map(
                    lambda node: node.call("lava_sync", messageID="step", hold=LONG, timeout=60),
                    nodes,
                )
            )
        assert replies == [{"response": "ack", "message": "step"}] * 3


def test_held_sync_next_to_polling_lava_clients(server: BackgroundCoordinator) -> None:
    held, polled_a, polled_b = group(addr(server), "g7", {"1": "a", "2": "b", "3": "b"})
    form([held, polled_a, polled_b])
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(held.call, "lava_sync", messageID="s", hold=LONG, timeout=60)
        until_held(server, 1)
        assert polled_a.call("lava_sync", messageID="s") == {"response": "wait"}
        assert not pending.done()
        # the last node to arrive: the held one is answered at once, the poller polls again
        assert polled_b.call("lava_sync", messageID="s") == {"response": "wait"}
        assert pending.result(timeout=LONG / 2) == {"response": "ack", "message": "s"}
    assert polled_a.call("lava_sync", messageID="s") == {"response": "ack", "message": "s"}
    assert polled_b.call("lava_sync", messageID="s") == {"response": "ack", "message": "s"}


def test_held_syncs_in_a_loop(server: BackgroundCoordinator) -> None:
    """The same sync id again and again (a loop in a test definition), nodes at their pace."""
    nodes = group(addr(server), "g-loop", {str(n): "r" for n in range(4)})
    form(nodes)

    def loop(node: Node) -> list[dict[str, Any]]:
        return [node.call("lava_sync", messageID="tick", hold=LONG, timeout=60) for _ in range(5)]

    with ThreadPoolExecutor(len(nodes)) as pool:
        results = list(pool.map(loop, nodes))
    assert results == [[{"response": "ack", "message": "tick"}] * 5] * 4
    assert server.server.groups.groups["g-loop"].syncs == {}


def test_held_wait_all_for_a_role(server: BackgroundCoordinator) -> None:
    s1, s2, client = group(addr(server), "g8", {"1": "server", "2": "server", "3": "client"})
    form([s1, s2, client])
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(
            client.call, "lava_wait_all", messageID="up", waitrole="server", hold=LONG, timeout=60
        )
        until_held(server, 1)
        s1.call("lava_send", messageID="up")
        s2.call("lava_wait", messageID="nothing", hold=0.01)  # other traffic in the group
        assert not pending.done()
        s2.call("lava_send", messageID="up")
        assert pending.result(timeout=LONG / 2) == {
            "response": "ack",
            "message": {"1": {}, "2": {}},
        }


def test_64_held_waits_at_once(server: BackgroundCoordinator) -> None:
    count = 64
    nodes = group(
        addr(server), "g-many", {str(n): "client" for n in range(count)} | {"sender": "server"}
    )
    with ThreadPoolExecutor(len(nodes)) as pool:
        formed = list(pool.map(lambda node: node.call("group_data", hold=LONG, timeout=60), nodes))
        assert all(reply["response"] == "group_data" for reply in formed)
        waits: list[Future[dict[str, Any]]] = [
            pool.submit(node.call, "lava_wait", messageID="go", hold=LONG, timeout=60)
            for node in nodes[:count]
        ]
        until_held(server, count)
        assert not any(w.done() for w in waits)
        nodes[-1].call("lava_send", messageID="go", message={"now": "yes"})
        replies = [w.result(timeout=LONG / 2) for w in waits]
    assert replies == [{"response": "ack", "message": {"sender": {"now": "yes"}}}] * count


def test_a_stopping_server_answers_held_requests_wait(
    start_coordinator: Callable[..., BackgroundCoordinator],
) -> None:
    server = start_coordinator()
    (node,) = group(addr(server), "g9", {"1": "solo"})
    form([node])
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(node.call, "lava_wait", messageID="never", hold=LONG, timeout=60)
        until_held(server, 1)
        server.stop()
        assert pending.result(timeout=LONG / 2) == {"response": "wait"}


def test_node_polls_and_holds_interchangeably(server: BackgroundCoordinator) -> None:
    """A LAVA dispatcher and one of ours in the same group."""
    ours, lavas = group(addr(server), "g10", {"1": "server", "2": "client"})
    assert isinstance(ours, Node)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(ours.call, "group_data", hold=LONG, timeout=60)
        until_held(server, 1)
        assert lavas.poll("group_data")["response"] == "group_data"
        assert pending.result(timeout=LONG / 2)["response"] == "group_data"
