"""LAVA's framing, and what the server does with requests that break it: a nack that
says why (or a plain close when nothing arrived), and the server carries on."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable

import pytest

from lava_dispatcher.protocols.coordinator import BackgroundCoordinator
from lava_dispatcher.protocols.coordinator_wire import encode_frame

from .helpers import Address, call, decode_reply, exchange, frame

GROUP = {
    "request": "group_data",
    "group_name": "g",
    "client_name": "1",
    "role": "r",
    "hostname": "h",
    "group_size": 1,
}
ROLES = {"response": "group_data", "roles": {"1": "r"}}


def still_serving(address: Address) -> None:
    assert call(address, GROUP) == ROLES


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"ZZZZZZZZ{}", "bad header"),
        (b"0x00000A{}", "bad header"),
        (b"00A", "truncated header"),
        (b"00000000", "empty request"),
        (b"FFFFFFFF" + b"{" * 100, "too long"),
        (b"00000064" + b'{"request": "group_data"}', "truncated request"),
        (frame("this is not json"), "not JSON"),
        (frame("[1, 2, 3]"), "JSON object"),
        (b"00000004" + b'"\xff\xfe"', "not UTF-8"),
    ],
)
def test_bad_frames_get_a_nack(address: Address, data: bytes, reason: str) -> None:
    reply = decode_reply(exchange(address, data))
    assert reply["response"] == "nack"
    assert reason in reply["error"]
    still_serving(address)


def test_a_connection_without_a_request_is_closed(address: Address) -> None:
    assert exchange(address, b"") == b""
    still_serving(address)


def test_request_end_found_by_length_without_half_close(address: Address) -> None:
    """LAVA's status check sends and reads without shutting down its side."""
    reply = exchange(address, frame(json.dumps(GROUP)), half_close=False)
    assert decode_reply(reply) == ROLES


def test_non_ascii_counted_in_characters_or_in_bytes(address: Address) -> None:
    still_serving(address)
    message = {**GROUP, "request": "lava_send", "messageID": "héllo", "message": {"k": "vâlue ✓"}}
    text = json.dumps(message, ensure_ascii=False)
    by_chars = b"%08X" % len(text) + text.encode("utf-8")
    by_bytes = b"%08X" % len(text.encode("utf-8")) + text.encode("utf-8")
    for data in (by_chars, by_bytes):
        for half_close in (True, False):
            reply = decode_reply(exchange(address, data, half_close=half_close))
            assert reply == {"response": "ack"}
    wait = {**GROUP, "request": "lava_wait", "messageID": "héllo"}
    reply_bytes = exchange(address, frame(json.dumps(wait)))
    assert reply_bytes.isascii()  # replies are ASCII: length in characters == in bytes
    assert decode_reply(reply_bytes)["message"] == {"1": {"k": "vâlue ✓"}}


def test_a_slow_client_is_cut_off(start_coordinator: Callable[..., BackgroundCoordinator]) -> None:
    server = start_coordinator(read_timeout=0.1)
    address = ("127.0.0.1", server.server.port)
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(b"00000020{")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    reply = decode_reply(data)
    assert reply["response"] == "nack" and "no complete request" in reply["error"]


def test_idle_connections_do_not_block_others(address: Address) -> None:
    """LAVA's coordinator serves one connection at a time; idle ones must not stall us."""
    idle = [socket.create_connection(address, timeout=10) for _ in range(100)]
    try:
        idle[0].sendall(b"0000")
        still_serving(address)
    finally:
        for sock in idle:
            sock.close()
    still_serving(address)


def test_encode_frame() -> None:
    assert encode_frame({"response": "ack"}) == b'00000013{"response": "ack"}'
    data = encode_frame({"k": "é"})
    assert int(data[:8], 16) == len(data) - 8 and data.isascii()


def test_a_huge_request_streamed_at_the_server(address: Address) -> None:
    """Megabytes behind a header that announces 4 GiB: a nack or a close, never a crash."""
    with socket.create_connection(address, timeout=10) as sock:
        data = b""
        try:
            sock.sendall(b"FFFFFFFF" + b"x" * (4 << 20))
        except OSError:
            pass  # the server stopped reading: fine
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except OSError:
            pass
    if data:
        assert decode_reply(data)["response"] == "nack"
    still_serving(address)
