"""Users and API tokens, and the one function the HTTP layer calls to know who asks.

A token is 64 random characters ``[0-9a-z]`` shown once, when it is made;
the store keeps only its SHA-256. A slow password hash is not needed: a
token has ~330 bits of entropy, so its hash cannot be reversed by guessing,
and a fast hash keeps every authenticated request cheap.

Clients send ``Authorization: Basic base64(user:token)`` (XML-RPC; lavacli
puts ``user:token@`` in the URL) or ``Authorization: Token <token>`` (REST).
No header means anonymous: public jobs can be read, nothing can be changed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import string

from lava_dispatcher.worker.errors import AuthFailed, BadRequest, NotFound, WorkerError
from lava_dispatcher.worker.store import Store, UserRecord, now

TOKEN_ALPHABET = string.digits + string.ascii_lowercase
TOKEN_LENGTH = 64
#: how stale a token's ``last_used`` may get (seconds)
LAST_USED_STEP = 60.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9@.+_-]{0,149}$")


class UserExists(WorkerError):
    """``users add`` of a name that is taken."""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(TOKEN_LENGTH))


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise BadRequest(
            f"user name {name!r}: expected letters, digits and @.+_- (starting with a letter "
            "or digit, at most 150 characters)"
        )
    return name


def add_user(store: Store, name: str, admin: bool = False) -> str:
    """Create a user with a first token; returns the token (shown once)."""
    check_name(name)
    token = new_token()
    with store.transaction() as db:
        if store.user(name) is not None:
            raise UserExists(f"user {name!r} exists already (use 'users token {name}' for a new token)")
        db.execute(
            "INSERT INTO users (name, is_admin, created) VALUES (?, ?, ?)", (name, int(admin), now())
        )
        db.execute(
            "INSERT INTO tokens (user, hash, created) VALUES (?, ?, ?)", (name, token_hash(token), now())
        )
    return token


def add_token(store: Store, name: str) -> str:
    """Another token for an existing user (earlier tokens stay valid)."""
    token = new_token()
    with store.transaction() as db:
        if store.user(name) is None:
            raise NotFound(f"user {name!r} was not found")
        db.execute(
            "INSERT INTO tokens (user, hash, created) VALUES (?, ?, ?)", (name, token_hash(token), now())
        )
    return token


def delete_user(store: Store, name: str) -> None:
    """Delete a user and every token of theirs (their jobs stay)."""
    with store.transaction() as db:
        if store.user(name) is None:
            raise NotFound(f"user {name!r} was not found")
        db.execute("DELETE FROM tokens WHERE user = ?", (name,))
        db.execute("DELETE FROM users WHERE name = ?", (name,))


def token_counts(store: Store) -> dict[str, int]:
    rows = store.db.execute("SELECT user, COUNT(*) FROM tokens GROUP BY user")
    return {str(user): int(count) for user, count in rows}


def authenticate(store: Store, username: str | None, token: str) -> UserRecord:
    """The active user owning ``token`` (and named ``username`` when given), else AuthFailed."""
    digest = token_hash(token)
    row = store.db.execute("SELECT id, user, hash, last_used FROM tokens WHERE hash = ?", (digest,)).fetchone()
    # compare_digest keeps the last check constant-time; the lookup is by a hash
    if row is None or not hmac.compare_digest(row["hash"], digest):
        raise AuthFailed("Invalid token")
    user = store.user(row["user"])
    if user is None or not user.is_active or (username is not None and username != user.name):
        raise AuthFailed("Invalid token")
    # recorded to the minute: not one synchronous write per request
    if row["last_used"] is None or now() - row["last_used"] > LAST_USED_STEP:
        with store.transaction() as db:
            db.execute("UPDATE tokens SET last_used = ? WHERE id = ?", (now(), row["id"]))
    return user


def authenticate_header(store: Store, header: str | None) -> UserRecord | None:
    """Who sent an ``Authorization`` header: a user, None for anonymous.

    AuthFailed (HTTP 401) for wrong credentials, BadRequest (HTTP 400) for a
    header that is not ``Basic`` or ``Token``, or not decodable.
    """
    if header is None or not header.strip():
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "token" and value:
        return authenticate(store, None, value)
    if scheme.lower() != "basic" or not value:
        raise BadRequest("Authorization: expected 'Basic <base64 user:token>' or 'Token <token>'")
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise BadRequest("Authorization: the Basic credentials are not base64 of 'user:token'") from None
    username, sep, token = decoded.partition(":")
    if not sep:
        raise BadRequest("Authorization: the Basic credentials are not 'user:token'")
    return authenticate(store, username, token)
