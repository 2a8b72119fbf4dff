"""Calling a callback URL with aiohttp: one attempt, bounded by the callback timeout.

The token goes raw in the named header (LAVA's behaviour, which KernelCI
relies on). Redirects are not followed (a redirect could lead past the
allowed hosts); a 3xx answer is a failure that says where it pointed.
Connection errors, timeouts and HTTP 408, 425, 429 and 5xx are worth another
attempt; any other 4xx is not.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import aiohttp

from lava_dispatcher.worker.notify.errors import Permanent, Temporary
from lava_dispatcher.worker.notify.urls import check, redact

#: an HTTP header name (RFC 9110 token)
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
#: headers that frame the request: a job does not get to set them
FRAMING = {"host", "content-length", "transfer-encoding", "connection"}
RETRY_STATUSES = (408, 425, 429)
#: how much of an answer is kept in the records
ANSWER = 200


@dataclass(frozen=True)
class CallbackRequest:
    url: str
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None

    @property
    def target(self) -> str:
        return f"{self.method} {redact(self.url)}"


def check_headers(headers: Mapping[str, str]) -> None:
    for name, value in headers.items():
        if not HEADER_NAME.match(name) or name.lower() in FRAMING:
            raise Permanent(f"{name!r} is not a header a callback token can be sent in")
        if any(c in value for c in "\r\n\0"):
            raise Permanent(f"the value of header {name!r} has line breaks")


async def call(
    session: aiohttp.ClientSession, request: CallbackRequest, timeout: float, allowed_hosts: Sequence[str] = ()
) -> str:
    """Make the request once; the answer's status on success, else Temporary or Permanent."""
    check(request.url, allowed_hosts)
    check_headers(request.headers)
    try:
        async with session.request(
            request.method,
            request.url,
            headers=dict(request.headers),
            data=request.body,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as response:
            answer = (await response.content.read(ANSWER)).decode("utf-8", "replace")
            status = response.status
            location = response.headers.get("Location", "")
    except TimeoutError:
        raise Temporary(f"no answer within {timeout:g} s") from None
    except (aiohttp.InvalidURL, ValueError) as exc:  # ValueError: a request aiohttp refuses to make
        raise Permanent(f"cannot make this request: {exc}") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise Temporary(f"{type(exc).__name__}: {exc}") from None
    said = f"HTTP {status}" + (f": {answer.strip()}" if answer.strip() else "")
    if 200 <= status < 300:
        return said
    if 300 <= status < 400:
        raise Permanent(f"HTTP {status} redirect to {location!r}: redirects are not followed")
    if status in RETRY_STATUSES or status >= 500:
        raise Temporary(said)
    raise Permanent(said)
