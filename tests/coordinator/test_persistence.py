"""With --state, a coordinator killed (SIGKILL) mid-group and started again loses nothing:
its clients reconnect on their own (one request per connection) and the group completes."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lava_dispatcher.protocols.coordinator_state import Group, Groups
from lava_dispatcher.protocols.coordinator_store import StateStore

from .helpers import CoordinatorProcess, Node, form, group


def persistent_call(
    node: Node, request: str, within: float = 60.0, **fields: Any
) -> dict[str, Any]:
    """What a client does across a coordinator restart: ask again until answered."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            reply = node.call(request, **fields)
        except (OSError, AssertionError):  # refused, reset, or closed without a reply
            time.sleep(0.02)
            continue
        if reply["response"] != "wait":
            return reply
    raise AssertionError(f"{request} {fields} not answered within {within} s")


def test_sigkill_and_restart_lose_nothing(
    tmp_path: Path, coordinator_process: Callable[..., CoordinatorProcess]
) -> None:
    state = tmp_path / "state"
    first = coordinator_process("--state", str(state))
    address = first.start()
    a, b, c = group(address, "g-persist", {"1": "server", "2": "client", "3": "client"})
    roles = form([a, b, c])
    assert a.call("lava_send", messageID="ip", message={"ipv4": "10.0.0.5"}) == {"response": "ack"}
    assert b.call("lava_sync", messageID="s") == {"response": "wait"}
    assert c.call("lava_sync", messageID="s") == {"response": "wait"}
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(persistent_call, b, "lava_wait", messageID="later", hold=30)
        deadline = time.monotonic() + 20
        while "holding group=g-persist client=2 request=lava_wait" not in first.log():
            assert time.monotonic() < deadline and not held.done(), first.log()
            time.sleep(0.01)
        assert first.signal(signal.SIGKILL) == -signal.SIGKILL

        second = coordinator_process(
            "--state", str(state), listen=f"127.0.0.1:{address[1]}", log="coordinator-2.log"
        )
        assert second.start() == address
        assert "1 group(s) loaded" in second.log()
        assert a.call("group_data") == {"response": "group_data", "roles": roles}
        assert c.call("lava_wait", messageID="ip") == {
            "response": "ack",
            "message": {"1": {"ipv4": "10.0.0.5"}},
        }
        assert a.call("lava_sync", messageID="s") == {"response": "wait"}  # the last one
        for node in (a, b, c):
            assert node.poll("lava_sync", messageID="s") == {"response": "ack", "message": "s"}
        assert a.call("lava_send", messageID="later", message={"k": "v"}) == {"response": "ack"}
        assert held.result(timeout=60) == {"response": "ack", "message": {"1": {"k": "v"}}}
    for node in (a, b, c):
        assert node.call("clear_group") == {"response": "ack"}
    assert sorted(p.name for p in state.iterdir()) == ["lock"]  # the group is gone, no temp file
    assert second.signal(signal.SIGTERM) == 0


def test_store_round_trip_and_bad_files(tmp_path: Path) -> None:
    groups = Groups()
    base = {"group_name": "g/1 é", "role": "r", "hostname": "h", "group_size": 2}
    groups.handle({**base, "request": "group_data", "client_name": "1"})
    groups.handle(
        {
            **base,
            "request": "lava_send",
            "client_name": "1",
            "messageID": "m",
            "message": {"k": "v"},
        }
    )
    groups.handle({**base, "request": "lava_sync", "client_name": "1", "messageID": "s"})
    store = StateStore(tmp_path)
    store.save(groups.groups["g/1 é"])
    (tmp_path / "group-0000.json").write_text("{not json")
    (tmp_path / (StateStore.filename("x") + ".tmp")).write_text("half written")
    loaded = store.load()
    store.close()
    assert list(loaded) == ["g/1 é"]
    assert loaded["g/1 é"].to_json() == groups.groups["g/1 é"].to_json()
    assert (tmp_path / "group-0000.bad").exists()
    assert not list(tmp_path.glob("*.tmp"))
    journal = (tmp_path / StateStore.journal_name("g/1 é")).read_text().splitlines()
    assert Group.from_json(json.loads(journal[-1])).messages == {"m": {"1": {"k": "v"}}}


def test_a_state_directory_serves_one_coordinator(tmp_path: Path) -> None:
    import pytest

    from lava_dispatcher.protocols.coordinator_store import StateError

    store = StateStore(tmp_path)
    try:
        with pytest.raises(StateError, match="in use"):
            StateStore(tmp_path)
    finally:
        store.close()
    StateStore(tmp_path).close()


def _group_with(messages: int) -> Groups:
    groups = Groups()
    base = {"group_name": "g", "role": "r", "hostname": "h", "group_size": 1}
    groups.handle({**base, "request": "group_data", "client_name": "1"})
    for index in range(messages):
        groups.handle({**base, "request": "lava_send", "client_name": "1",
                       "messageID": f"m{index}", "message": {"k": "v" * 50}})  # fmt: skip
    return groups


def test_a_journal_line_torn_by_a_crash_is_ignored(tmp_path: Path) -> None:
    groups = _group_with(1)
    store = StateStore(tmp_path)
    store.save(groups.groups["g"])
    _group_with(2)  # a later state, half written when the coordinator died
    with open(tmp_path / StateStore.journal_name("g"), "a", encoding="utf-8") as journal:
        journal.write('{"format": 1, "name": "g", "size": 1, "clie')
    store.close()
    store = StateStore(tmp_path)
    try:
        loaded = store.load()
    finally:
        store.close()
    assert loaded["g"].to_json() == groups.groups["g"].to_json()


def test_a_long_journal_is_folded_into_a_snapshot(tmp_path: Path) -> None:
    groups = _group_with(0)
    store = StateStore(tmp_path)
    base = {"group_name": "g", "role": "r", "hostname": "h", "client_name": "1"}
    try:
        for index in range(400):  # a few KB per state: past COMPACT_BYTES more than once
            groups.handle({**base, "request": "lava_send", "messageID": f"m{index}",
                           "message": {"k": "v" * 50}})  # fmt: skip
            store.save(groups.groups["g"])
        journal = tmp_path / StateStore.journal_name("g")
        assert journal.stat().st_size <= 256 * 1024
        assert (tmp_path / StateStore.filename("g")).exists()
    finally:
        store.close()
    store = StateStore(tmp_path)
    try:
        assert store.load()["g"].to_json() == groups.groups["g"].to_json()
        store.delete("g")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["lock"]
    finally:
        store.close()
