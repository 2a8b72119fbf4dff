"""The optional shared secret: every request signed, anything else refused (and logged)."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from pathlib import Path

from lava_dispatcher.protocols.coordinator import BackgroundCoordinator
from lava_dispatcher.protocols.coordinator_auth import canonical, sign, signed

from .helpers import CoordinatorProcess, call, group

REQUEST = {
    "request": "group_data",
    "group_name": "g",
    "client_name": "1",
    "role": "r",
    "hostname": "h",
    "group_size": 1,
    "message": {"é": "✓"},
    "hold": 5,
}
ROLES = {"response": "group_data", "roles": {"1": "r"}}


def test_the_signature_contract() -> None:
    """hmac-sha256(secret, json.dumps(request without auth, sorted, compact, not ASCII))."""
    body = json.dumps(REQUEST, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    expected = hmac.new(b"s3cret", body.encode("utf-8"), hashlib.sha256).hexdigest()
    assert canonical({**REQUEST, "auth": "anything"}) == body.encode("utf-8")
    assert sign("s3cret", REQUEST) == expected
    assert signed("s3cret", REQUEST) == {**REQUEST, "auth": expected}


def test_requests_must_be_signed(start_coordinator: Callable[..., BackgroundCoordinator]) -> None:
    server = start_coordinator(secret="s3cret")
    address = ("127.0.0.1", server.server.port)
    refused = call(address, REQUEST)
    assert refused["response"] == "nack" and "authentication required" in refused["error"]
    wrong = call(address, signed("other", REQUEST))
    assert wrong["response"] == "nack" and "authentication failed" in wrong["error"]
    tampered = {**signed("s3cret", REQUEST), "client_name": "2"}
    assert call(address, tampered)["response"] == "nack"
    assert call(address, {**REQUEST, "auth": 42})["response"] == "nack"
    assert server.server.groups.groups == {}  # nothing refused reached the groups
    assert call(address, signed("s3cret", REQUEST)) == ROLES
    a, b = group(address, "g2", {"1": "server", "2": "client"}, secret="s3cret")
    a.call("group_data")
    assert b.call("group_data")["response"] == "group_data"
    a.call("lava_send", messageID="m", message={"k": "v"})
    assert b.call("lava_wait", messageID="m", hold=5) == {
        "response": "ack",
        "message": {"1": {"k": "v"}},
    }


def test_without_a_secret_auth_is_ignored(address: tuple[str, int]) -> None:
    assert call(address, signed("whatever", REQUEST)) == ROLES
    assert call(address, REQUEST) == ROLES


def test_secret_file_and_refusals_logged(
    tmp_path: Path, coordinator_process: Callable[..., CoordinatorProcess]
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("  s3cret \n")
    process = coordinator_process("--secret-file", str(secret))
    address = process.start()
    assert "secret required" in process.log()
    assert call(address, signed("s3cret", REQUEST)) == ROLES
    assert call(address, REQUEST)["response"] == "nack"
    assert "refused request from 127.0.0.1:" in process.log()
    assert "s3cret" not in process.log()
