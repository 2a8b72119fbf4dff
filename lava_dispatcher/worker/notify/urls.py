"""Callback URLs: LAVA's ``{NAME}`` substitution, and which URLs may be called.

Every ``{ NAME }`` (upper-case letters, ``_``, ``-``, spaces around allowed)
becomes the job's attribute of that name in lower case, as LAVA does;
``{STATUS}`` is the legacy integer status and ``{STATUS_STRING}`` its name in
lower case. Unknown names stay as they are. Unlike LAVA, the substituted
value is percent-encoded, so a description with ``/``, ``?`` or ``#`` cannot
change the URL's path, query or host, and the URL is substituted at each
notification with the job as it is then (LAVA keeps the URL of the first).
Only job fields are offered: secrets such as the job's token never are.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Sequence
from urllib.parse import quote, urlsplit, urlunsplit

from lava_dispatcher.worker.notify.errors import Permanent
from lava_dispatcher.worker.notify.jobinfo import (
    health_number,
    lava_time,
    legacy_status,
    legacy_status_string,
    state_number,
)
from lava_dispatcher.worker.store import JobRecord

PLACEHOLDER = re.compile(r"{\s*[A-Z_-]*\s*}")
_VISIBILITY = {"public": 0, "personal": 1}

_FIELDS: dict[str, Callable[[JobRecord], object]] = {
    "id": lambda j: j.id,
    "pk": lambda j: j.id,
    "sub_id": lambda j: j.sub_id or "",
    "display_id": lambda j: j.display_id,
    "status": legacy_status,
    "status_string": legacy_status_string,
    "state": state_number,
    "health": health_number,
    "description": lambda j: j.description,
    "priority": lambda j: j.priority,
    "submitter": lambda j: j.submitter,
    "submitter_id": lambda j: j.submitter,
    "actual_device": lambda j: j.actual_device,
    "actual_device_id": lambda j: j.actual_device,
    "requested_device_type": lambda j: j.requested_device_type,
    "requested_device_type_id": lambda j: j.requested_device_type,
    "target_group": lambda j: j.target_group,
    "health_check": lambda j: j.health_check,
    "is_public": lambda j: j.is_public,
    "is_multinode": lambda j: j.target_group is not None,
    "visibility": lambda j: _VISIBILITY.get(j.visibility, 2),
    "failure_comment": lambda j: j.failure_comment,
    "submit_time": lambda j: lava_time(j.submit_time),
    "start_time": lambda j: lava_time(j.start_time),
    "end_time": lambda j: lava_time(j.end_time),
}


def substitute(url: str, job: JobRecord) -> str:
    """The callback URL for ``job`` now: each known ``{NAME}`` replaced, percent-encoded."""

    def value(match: re.Match[str]) -> str:
        name = match.group(0)[1:-1].strip().lower()
        get = _FIELDS.get(name)
        return match.group(0) if get is None else quote(str(get(job)), safe="")

    return PLACEHOLDER.sub(value, url)


def check(url: str, allowed_hosts: Sequence[str] = ()) -> None:
    """Refuse (Permanent) anything but an http(s) URL with a host, and hosts not allowed."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 (a bad port raises here)
    except ValueError as exc:
        raise Permanent(f"not a valid URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise Permanent(f"only http and https callbacks are made, not {parts.scheme or 'no scheme'!r}")
    if not host:
        raise Permanent("the callback URL has no host")
    if any(c in url for c in "\r\n\t\0"):
        raise Permanent("the callback URL has control characters")
    if allowed_hosts and not any(fnmatch.fnmatchcase(host, pattern) for pattern in allowed_hosts):
        raise Permanent(f"callback host {host!r} is not in the allowed hosts ({', '.join(allowed_hosts)})")


def redact(url: str) -> str:
    """The URL without a password, for the records and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
