"""What each request means, run against our coordinator and, where LAVA's coordinator
(Debian's lava-coordinator) behaves the same, against LAVA's too: the same polling
clients get the same answers. The documented differences are asserted both ways."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable

import pytest

from lava_dispatcher.protocols.coordinator import BackgroundCoordinator

from .helpers import (
    LAVA_PACKAGE_DIR,
    SYSTEM_PYTHON,
    Address,
    Node,
    call,
    exchange,
    form,
    frame,
    group,
    require_lava_coordinator,
)

IMPLEMENTATIONS = ["ours", "lava"]


@pytest.fixture(params=IMPLEMENTATIONS)
def server(
    request: pytest.FixtureRequest,
    start_coordinator: Callable[..., BackgroundCoordinator],
    lava_coordinator: Callable[[], Address],
) -> tuple[str, Address]:
    if request.param == "lava":
        return "lava", lava_coordinator()
    return "ours", ("127.0.0.1", start_coordinator().server.port)


def new_group(address: Address, roles: dict[str, str]) -> list[Node]:
    return group(address, f"group-{uuid.uuid4()}", roles)


# --- behaviour shared with LAVA's coordinator -----------------------------------------


def test_group_data_waits_for_every_member_then_gives_the_roles(
    server: tuple[str, Address],
) -> None:
    _, address = server
    a, b, c = new_group(address, {"100": "server", "101": "client", "102": "client"})
    assert a.call("group_data") == {"response": "wait"}
    assert b.call("group_data") == {"response": "wait"}
    assert a.call("group_data") == {"response": "wait"}
    roles = c.call("group_data")
    assert roles == {
        "response": "group_data",
        "roles": {"100": "server", "101": "client", "102": "client"},
    }
    assert a.call("group_data") == roles


def test_a_new_group_needs_its_size(server: tuple[str, Address]) -> None:
    _, address = server
    (node,) = new_group(address, {"1": "solo"})
    assert node.call("lava_send", messageID="x", message={})["response"] == "nack"


def test_unknown_request_is_refused(server: tuple[str, Address]) -> None:
    _, address = server
    (node,) = new_group(address, {"1": "solo"})
    assert node.call("group_data")["response"] == "group_data"
    assert node.call("no_such_request")["response"] == "nack"


def test_send_then_wait_returns_every_senders_data(server: tuple[str, Address]) -> None:
    _, address = server
    a, b, c = new_group(address, {"1": "server", "2": "client", "3": "client"})
    form([a, b, c])
    assert b.call("lava_wait", messageID="ready", nodeID="2") == {"response": "wait"}
    assert a.call("lava_send", messageID="ready", message={"ipv4": "10.0.0.5"}) == {
        "response": "ack"
    }
    expected = {"response": "ack", "message": {"1": {"ipv4": "10.0.0.5"}}}
    assert b.call("lava_wait", messageID="ready", nodeID="2") == expected
    # the data stays for the life of the group: a later wait needs no waiting
    assert c.call("lava_wait", messageID="ready", nodeID="3") == expected
    assert b.call("lava_wait", messageID="ready", nodeID="2") == expected
    # a second sender's data is added next to the first one's
    assert c.call("lava_send", messageID="ready", message={"ipv4": "10.0.0.7"}) == {
        "response": "ack"
    }
    assert b.call("lava_wait", messageID="ready")["message"] == {
        "1": {"ipv4": "10.0.0.5"},
        "3": {"ipv4": "10.0.0.7"},
    }


def test_wait_all_without_role_waits_for_every_member(server: tuple[str, Address]) -> None:
    _, address = server
    a, b = new_group(address, {"1": "server", "2": "client"})
    form([a, b])
    a.call("lava_send", messageID="done", message={"k": "a"})
    assert a.call("lava_wait_all", messageID="done") == {"response": "wait"}
    b.call("lava_send", messageID="done", message={"k": "b"})
    expected = {"response": "ack", "message": {"1": {"k": "a"}, "2": {"k": "b"}}}
    assert a.call("lava_wait_all", messageID="done") == expected
    assert b.call("lava_wait_all", messageID="done") == expected


def test_sync_polled_as_lava_does(server: tuple[str, Address]) -> None:
    """Every node waits until the last arrives; each polls once more to collect its ack,
    and the sync id can be used again once everyone has."""
    _, address = server
    nodes = new_group(address, {"1": "a", "2": "b", "3": "b"})
    form(nodes)
    for _round in range(2):
        for node in nodes:
            assert node.call("lava_sync", messageID="step") == {"response": "wait"}
        for node in nodes:
            assert node.call("lava_sync", messageID="step") == {
                "response": "ack",
                "message": "step",
            }


def test_clear_group_ends_the_group_when_every_member_has(server: tuple[str, Address]) -> None:
    _, address = server
    a, b = new_group(address, {"1": "server", "2": "client"})
    form([a, b])
    a.call("lava_send", messageID="m", message={"x": "1"})
    assert a.call("clear_group") == {"response": "ack"}
    assert b.call("lava_wait", messageID="m")["response"] == "ack"  # not gone yet
    assert b.call("clear_group") == {"response": "ack"}
    # gone: the group is unknown again, and a request without group_size is refused
    assert b.call("lava_wait", messageID="m")["response"] == "nack"


def test_lava_status_check_client(server: tuple[str, Address]) -> None:
    """LAVA's own status check (lava.coordinator.status, which never half-closes)."""
    require_lava_coordinator()
    _, address = server
    code = (
        f"import sys; sys.path.insert(0, {str(LAVA_PACKAGE_DIR)!r})\n"
        "from lava.coordinator.status import lava_poll\n"
        f"r1 = lava_poll({address[1]}, '127.0.0.1', 'status', 'group_data')\n"
        f"r2 = lava_poll({address[1]}, '127.0.0.1', 'status', 'clear_group')\n"
        "print(r1, r2)\n"
    )
    result = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-2:] == ["0", "0"], result.stdout


# --- where we differ from LAVA's coordinator (docs/coordinator.md) --------------------


def test_same_sender_adds_data_under_the_same_id(server: tuple[str, Address]) -> None:
    """Ours adds the keys; LAVA replaces the sender's earlier data."""
    kind, address = server
    a, b = new_group(address, {"1": "server", "2": "client"})
    form([a, b])
    a.call("lava_send", messageID="info", message={"ip": "10.0.0.5"})
    a.call("lava_send", messageID="info", message={"port": "80"})
    data = b.call("lava_wait", messageID="info")["message"]["1"]
    if kind == "ours":
        assert data == {"ip": "10.0.0.5", "port": "80"}
    else:
        assert data == {"port": "80"}


def test_wait_all_with_role_waits_for_every_member_of_the_role(server: tuple[str, Address]) -> None:
    """Ours waits for all members of the role; LAVA answers once the first one has sent."""
    kind, address = server
    s1, s2, client = new_group(address, {"1": "server", "2": "server", "3": "client"})
    form([s1, s2, client])
    s1.call("lava_send", messageID="up", message={"n": "1"})
    first = client.call("lava_wait_all", messageID="up", waitrole="server")
    if kind == "ours":
        assert first == {"response": "wait"}
    else:
        assert first["response"] == "ack"
    s2.call("lava_send", messageID="up", message={"n": "2"})
    reply = client.call("lava_wait_all", messageID="up", waitrole="server")
    assert reply == {"response": "ack", "message": {"1": {"n": "1"}, "2": {"n": "2"}}}


def test_sync_again_before_everyone_collected(server: tuple[str, Address]) -> None:
    """A node told first that a sync is over, and asking the same id again at once, is at
    the next rendezvous: ours makes it wait for the others; LAVA acks it at once."""
    kind, address = server
    a, b = new_group(address, {"1": "x", "2": "y"})
    form([a, b])
    assert a.call("lava_sync", messageID="loop") == {"response": "wait"}
    assert b.call("lava_sync", messageID="loop") == {"response": "wait"}
    assert a.call("lava_sync", messageID="loop") == {"response": "ack", "message": "loop"}
    again = a.call("lava_sync", messageID="loop")  # round 2 for a; b has not collected round 1
    if kind == "lava":
        assert again == {"response": "ack", "message": "loop"}
        return
    assert again == {"response": "wait"}
    assert b.call("lava_sync", messageID="loop") == {"response": "ack", "message": "loop"}
    assert a.call("lava_sync", messageID="loop") == {"response": "wait"}  # b not there yet
    assert b.call("lava_sync", messageID="loop") == {"response": "wait"}  # b arrives: round 2
    assert a.call("lava_sync", messageID="loop") == {"response": "ack", "message": "loop"}
    assert b.call("lava_sync", messageID="loop") == {"response": "ack", "message": "loop"}


def test_wait_all_before_anyone_sent(server: tuple[str, Address]) -> None:
    """Ours waits (as documented); LAVA refuses with nack."""
    kind, address = server
    a, b = new_group(address, {"1": "server", "2": "client"})
    form([a, b])
    reply = a.call("lava_wait_all", messageID="nobody-yet")
    assert reply["response"] == ("wait" if kind == "ours" else "nack")


def test_message_available_to_members_that_join_later(server: tuple[str, Address]) -> None:
    """Ours keeps one copy for the group; LAVA copies to the members known at send time."""
    kind, address = server
    a, b = new_group(address, {"1": "server", "2": "client"})
    a.call("group_data")
    a.call("lava_send", messageID="early", message={"k": "v"})
    b.call("group_data")
    reply = b.call("lava_wait", messageID="early")
    assert reply["response"] == ("ack" if kind == "ours" else "wait")


def test_complete_is_acknowledged(server: tuple[str, Address]) -> None:
    """Ours answers ack; LAVA closes without a reply (its client reads that as wait)."""
    kind, address = server
    (node,) = new_group(address, {"1": "solo"})
    node.call("group_data")
    if kind == "ours":
        assert node.call("complete") == {"response": "ack"}
    else:
        assert exchange(address, frame(json.dumps(node.message("complete")))) == b""


# --- ours only ------------------------------------------------------------------------


def test_nack_says_why(address: Address) -> None:
    (node,) = group(address, "g-why", {"1": "solo"})
    reply = node.call("lava_send", messageID="x")
    assert reply["response"] == "nack" and "group_size" in reply["error"]
    assert "request" in call(address, {"group_name": "g", "client_name": "1"})["error"]
    assert "client_name" in call(address, {"request": "group_data", "group_name": "g"})["error"]
    assert node.call("group_data") == {"response": "group_data", "roles": {"1": "solo"}}
    assert "unknown request" in node.call("frobnicate")["error"]
    assert "messageID" in node.call("lava_wait")["error"]
    assert "mapping" in node.call("lava_send", messageID="x", message="text")["error"]


def test_a_full_group_refuses_another_member(address: Address) -> None:
    a, b = group(address, "g-full", {"1": "server", "2": "client"})
    form([a, b])
    intruder = Node(address, "g-full", "3", "client", 2)
    reply = intruder.call("group_data")
    assert reply["response"] == "nack" and "members" in reply["error"]


def test_wait_all_for_an_unknown_role_is_refused_once_the_group_is_whole(address: Address) -> None:
    a, b = group(address, "g-role", {"1": "server", "2": "client"})
    a.call("group_data")
    assert a.call("lava_wait_all", messageID="m", waitrole="nobody") == {"response": "wait"}
    form([a, b])
    reply = a.call("lava_wait_all", messageID="m", waitrole="nobody")
    assert reply["response"] == "nack" and "nobody" in reply["error"]


def test_lava_start_is_a_send_of_lava_start(address: Address) -> None:
    """The delayed start: the receivers wait for lava_start from the expected role."""
    server, client = group(address, "g-start", {"1": "server", "2": "client"})
    form([server, client])
    assert client.call("lava_wait_all", messageID="lava_start", waitrole="server") == {
        "response": "wait"
    }
    assert server.call("lava_start", message={"go": "yes"}) == {"response": "ack"}
    assert client.call("lava_wait_all", messageID="lava_start", waitrole="server") == {
        "response": "ack",
        "message": {"1": {"go": "yes"}},
    }


def test_aggregate_gathers_bundles_for_sub_id_zero(address: Address) -> None:
    a, b = group(address, "g-agg", {"1": "server", "2": "client"})
    form([a, b])
    assert a.call("aggregate", bundle={"a": 1}, sub_id="7.0") == {"response": "wait"}
    assert b.call("aggregate", bundle={"b": 2}, sub_id="7.1") == {"response": "ack"}
    assert a.call("aggregate", bundle={"a": 1}, sub_id="7.0") == {
        "response": "ack",
        "message": {"bundle": {"1": {"a": 1}, "2": {"b": 2}}},
    }
    assert a.call("aggregate", sub_id="7.0")["response"] == "nack"


def test_send_without_message_and_int_names(address: Address) -> None:
    """LAVA's clients may send message null and numeric job ids: both are fine."""
    base = {"group_name": "g-int", "role": "r", "hostname": "h"}
    assert call(address, {**base, "request": "group_data", "client_name": 5, "group_size": 1}) == {
        "response": "group_data",
        "roles": {"5": "r"},
    }
    assert call(
        address,
        {**base, "request": "lava_send", "client_name": 5, "messageID": "m", "message": None},
    ) == {"response": "ack"}
    assert call(
        address, {**base, "request": "lava_wait", "client_name": "5", "messageID": "m"}
    ) == {"response": "ack", "message": {"5": {}}}


def test_sync_with_a_message_returns_it(address: Address) -> None:
    (node,) = group(address, "g-syncmsg", {"1": "solo"})
    form([node])
    assert node.call("lava_sync", messageID="s", message="hello") == {"response": "wait"}
    assert node.call("lava_sync", messageID="s", message="hello") == {
        "response": "ack",
        "message": "hello",
    }
