"""The client's pieces without a coordinator: settings, framing, signing, DUT line parsing."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest

from lava_dispatcher.actions.test.multinode import parse_send, reply_items
from lava_dispatcher.errors import ConfigurationError, JobError
from lava_dispatcher.protocols.multinode import call_timeout
from lava_dispatcher.protocols.multinode_client import (
    CoordinatorClient,
    CoordinatorSettings,
    ReplyError,
    canonical,
    decode,
    encode,
    resolve_settings,
    sign,
)
from lava_dispatcher.timing import Interrupter


def test_the_dispatcher_setting_wins(tmp_path: Path) -> None:
    conf = tmp_path / "lava-coordinator.conf"
    conf.write_text(json.dumps({"port": 4000, "poll_delay": 3, "coordinator_hostname": "lab"}))
    settings = resolve_settings({"coordinator": "10.0.0.2:5000", "coordinator_secret": "s"}, conf)
    assert (settings.host, settings.port, settings.poll_delay, settings.secret) == (
        "10.0.0.2",
        5000,
        1.0,
        "s",
    )
    assert resolve_settings({"coordinator": "[::1]:5000"}, conf).host == "::1"


def test_lava_configuration_file_then_default(tmp_path: Path) -> None:
    conf = tmp_path / "lava-coordinator.conf"
    conf.write_text(json.dumps({"port": 4000, "blocksize": 8192, "poll_delay": 3,
                                "coordinator_hostname": "lab"}))  # fmt: skip
    settings = resolve_settings({}, conf)
    assert (settings.host, settings.port, settings.blocksize, settings.poll_delay) == (
        "lab",
        4000,
        8192,
        3,
    )
    assert settings.source == str(conf)
    default = resolve_settings({}, tmp_path / "missing.conf")
    assert (default.host, default.port, default.poll_delay) == ("127.0.0.1", 3079, 1.0)


@pytest.mark.parametrize(
    "dispatcher",
    [{"coordinator": "nohost"}, {"coordinator": "h:0"}, {"coordinator": "h:99999"},
     {"coordinator": "h:1", "coordinator_secret": ""}, {"coordinator": "h:1", "coordinator_poll_delay": 0}],
)  # fmt: skip
def test_bad_settings_are_configuration_errors(
    dispatcher: dict[str, object], tmp_path: Path
) -> None:
    with pytest.raises(ConfigurationError, match="dispatcher config"):
        resolve_settings(dispatcher, tmp_path / "missing.conf")


def test_a_broken_configuration_file_is_named(tmp_path: Path) -> None:
    conf = tmp_path / "lava-coordinator.conf"
    conf.write_text("{not json")
    with pytest.raises(ConfigurationError, match=str(conf)):
        resolve_settings({}, conf)


def test_framing_is_lavas() -> None:
    data = encode({"request": "lava_send", "message": {"k": "é"}})
    text = json.dumps({"request": "lava_send", "message": {"k": "é"}})
    assert data == b"%08X" % len(text) + text.encode()
    assert data[:8] == data[:8].upper()
    assert decode(b"%08X" % 19 + b'{"response": "ack"}') == {"response": "ack"}
    with pytest.raises(JobError, match="too long"):
        encode({"message": "x" * 0xFFFF})


@pytest.mark.parametrize("data", [b"", b"0000001", b"zzzzzzzz{}", b"00000010{}", b"00000002[]",
                                  b"00000002{}"])  # fmt: skip
def test_bad_replies(data: bytes) -> None:
    with pytest.raises(ReplyError):
        decode(data)


def test_signing_matches_the_coordinators() -> None:
    request = {"request": "lava_send", "message": {"b": "ü", "a": 1}, "client_name": "1"}
    signed = sign("secret", request)
    assert canonical(signed) == canonical(request)
    assert (
        canonical(request)
        == '{"client_name":"1","message":{"a":1,"b":"ü"},"request":"lava_send"}'.encode()
    )
    try:
        from lava_dispatcher.protocols import coordinator_auth
    except ImportError:  # pragma: no cover - the server side is another module
        return
    assert coordinator_auth.check("secret", signed) is None


def test_a_request_waits_for_the_reply_and_an_interrupt_ends_it_at_once() -> None:
    """A coordinator that never answers: the wait ends when interrupted, not at its timeout."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True).start()
    client = CoordinatorClient(CoordinatorSettings("127.0.0.1", server.getsockname()[1]), {})
    interrupter = Interrupter()
    threading.Timer(0.3, interrupter.cancel, args=(KeyboardInterrupt(),)).start()
    begin = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        client.request({"request": "lava_wait"}, timeout=30, interrupter=interrupter, waits=True)
    assert time.monotonic() - begin < 1.0
    # the request was sent: its connection is left open for the answer, not cut
    accepted[0].settimeout(5)
    header = accepted[0].recv(8)
    assert int(header, 16) > 0
    server.close()
    accepted[0].close()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ready", ("ready", {})),
        ("ready ipv4=10.0.0.5 port=80", ("ready", {"ipv4": "10.0.0.5", "port": "80"})),
        ("ready text=hello world n=1", ("ready", {"text": "hello world", "n": "1"})),
        ("ready url=http://x/?a=b", ("ready", {"url": "http://x/?a=b"})),
    ],
)
def test_parse_send(raw: str, expected: tuple[str, dict[str, str]]) -> None:
    assert parse_send(raw) == expected


@pytest.mark.parametrize("raw", ["ready my-key=1", "ready a=1 b.c=2", "k=v", "ready clé=1"])
def test_parse_send_refuses_bad_keys(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_send(raw)


def test_reply_items_as_lava_types_them() -> None:
    reply = {"response": "ack", "message": {"1234": {"ipv4": "10.0.0.5", "port": 80}, "1235": {}}}
    assert reply_items(reply) == " 1234:ipv4=10.0.0.5 1234:port=80"
    assert reply_items({"response": "nack"}) == " nack"
    assert reply_items({"response": "ack", "message": "done"}) == ""


def test_call_timeouts() -> None:
    assert call_timeout(None, 30) == 30
    assert call_timeout({"minutes": 2}, 30) == 120
    assert call_timeout(5, 30) == 5
    for bad in (True, -1, "soon"):
        with pytest.raises(JobError):
            call_timeout(bad, 30)
