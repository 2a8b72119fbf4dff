"""The coordinator's framing, shared by LAVA's dispatchers and ours (byte for byte).

One request per TCP connection: 8 hexadecimal digits giving the length of
the JSON text *in characters*, then that JSON encoded as UTF-8. The client
usually half-closes its side; the server answers with the same framing and
closes. LAVA's own status check never half-closes, so the end of a request
is found by its length, never by waiting for EOF.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import re
from typing import Any

HEADER_LEN = 8
#: longest request we read (characters); LAVA's clients refuse to send more than 0xFFFE
MAX_REQUEST_CHARS = 1 << 20
_HEADER = re.compile(rb"[0-9A-Fa-f]{8}")
_CHUNK = 64 * 1024


class FrameError(Exception):
    """A request that cannot be read: the reason goes back in a nack."""


def encode_frame(message: Any) -> bytes:
    """Header and JSON for one message.

    The JSON is kept ASCII (non-ASCII characters escaped), so that its length in
    characters is also its length in bytes: LAVA's clients count either way.
    """
    text = json.dumps(message)
    if len(text) > 0xFFFFFFFF:
        raise ValueError("message too long for the coordinator framing")
    return b"%08X" % len(text) + text.encode("ascii")


def decode_header(header: bytes) -> int:
    """The body length announced by an 8-byte header."""
    if not _HEADER.fullmatch(header):
        shown = header[:HEADER_LEN].decode("ascii", "backslashreplace")
        raise FrameError(f"bad header {shown!r}: expected 8 hexadecimal digits of length")
    return int(header, 16)


def parse_request(text: str) -> dict[str, Any]:
    """The request object of a JSON text, or FrameError saying what is wrong."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise FrameError(f"request is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise FrameError(f"request must be a JSON object, not {type(data).__name__}")
    return data


def _complete_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


async def read_request(
    reader: asyncio.StreamReader, max_chars: int = MAX_REQUEST_CHARS
) -> dict[str, Any]:
    """Read one framed request; FrameError for anything but a well-formed JSON object.

    ConnectionError or asyncio.IncompleteReadError (no header at all) mean the
    peer went away and nothing can be answered.
    """
    try:
        header = await reader.readexactly(HEADER_LEN)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise
        raise FrameError(f"truncated header ({len(exc.partial)} of {HEADER_LEN} bytes)") from None
    count = decode_header(header)
    if count == 0:
        raise FrameError("empty request")
    if count > max_chars:
        raise FrameError(f"request too long: {count} characters (at most {max_chars})")
    decoder = codecs.getincrementaldecoder("utf-8")()
    raw = 0
    parts: list[str] = []
    chars = 0
    while chars < count:
        chunk = await reader.read(_CHUNK)
        if not chunk:
            break
        raw += len(chunk)
        try:
            text = decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            raise FrameError(f"request is not UTF-8: {exc.reason}") from None
        parts.append(text)
        chars += len(text)
        # a client that counted bytes rather than characters (non-ASCII text)
        # and does not half-close: its request is complete when it parses
        if chars < count <= raw and _complete_json("".join(parts)):
            return parse_request("".join(parts))
    try:
        tail = decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise FrameError(f"request is not UTF-8: {exc.reason}") from None
    text = "".join(parts) + tail
    if len(text) < count and raw != count:
        raise FrameError(f"truncated request: {len(text)} of {count} characters")
    return parse_request(text[:count])
