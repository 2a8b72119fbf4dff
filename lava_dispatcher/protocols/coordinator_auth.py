"""Optional shared secret between the coordinator and its clients.

LAVA's coordinator trusts anybody who can reach its port. With a secret,
every request carries ``"auth"``: the HMAC-SHA256 (hex) of the request
without that key, in a canonical JSON form both sides compute the same way.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

AUTH_KEY = "auth"


def canonical(request: Mapping[str, Any]) -> bytes:
    """The bytes that are signed: sorted keys, no spaces, UTF-8, the auth key left out."""
    body = {key: value for key, value in request.items() if key != AUTH_KEY}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def sign(secret: str, request: Mapping[str, Any]) -> str:
    """The ``auth`` value for a request (clients call this)."""
    return hmac.new(secret.encode("utf-8"), canonical(request), hashlib.sha256).hexdigest()


def signed(secret: str, request: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the request with its ``auth`` value."""
    return {**request, AUTH_KEY: sign(secret, request)}


def check(secret: str, request: Mapping[str, Any]) -> str | None:
    """Why the request is refused, or None when its auth is right."""
    given = request.get(AUTH_KEY)
    if given is None:
        return "authentication required: the request has no auth field"
    if not isinstance(given, str):
        return "bad auth field: expected a hexadecimal string"
    if not hmac.compare_digest(
        given.lower().encode("ascii", "replace"), sign(secret, request).encode()
    ):
        return "authentication failed: wrong auth for this request (is the secret the same?)"
    return None


def read_secret(path: Path) -> str:
    """The secret held in a file (one line, whitespace stripped); ValueError when unusable."""
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ValueError(f"cannot read secret file {path}: {reason}") from None
    if not secret:
        raise ValueError(f"secret file {path} is empty")
    return secret
