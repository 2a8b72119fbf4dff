"""MultiNode API calls made from the DUT: from ``<LAVA_MULTI_NODE>`` lines to coordinator calls.

The DUT's helpers (``test_shell/multi_node/``) print one request line:

    <LAVA_MULTI_NODE> <LAVA_SEND id key=value ...>     (returns at once)
    <LAVA_MULTI_NODE> <LAVA_WAIT id>
    <LAVA_MULTI_NODE> <LAVA_WAIT_ALL id [role]>
    <LAVA_MULTI_NODE> <LAVA_SYNC id>

and, except for SEND, then read the console until the reply this module
types back, exactly as LAVA's dispatcher types it (the line, then an extra
``\\n``): ``<LAVA_SYNC_COMPLETE>``, ``<LAVA_WAIT_COMPLETE 1234:key=value
...>``, ``<LAVA_WAIT_ALL_COMPLETE ...>``, or ``... nack>`` when the
coordinator refused. Each call is the test case ``multinode-<api>-<id>``
(lower case) of the running definition: pass, or fail when it timed out (the
test shell then ends with MultinodeProtocolTimeoutError).

The console's reader thread keeps reading and queueing signals while a call
waits: nothing the DUT prints meanwhile is lost, it is handled once the call
returns. A cancel or a console fault ends the wait at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from lava_dispatcher.actions.test.signals import Event
from lava_dispatcher.errors import JobError, MultinodeProtocolTimeoutError, TestError
from lava_dispatcher.pipeline import RunContext
from lava_dispatcher.protocols.multinode import MultinodeGroupAborted, MultinodeProtocol

#: a key of lava-send data (the documented \w+: ASCII letters, digits, '_')
KEY = re.compile(r"\w+\Z", re.ASCII)
#: where LAVA splits the data of a LAVA_SEND: before each `word=`, so values may hold spaces
_ITEM_START = re.compile(r"\s+(?=\w+=)", re.ASCII)

Recorder = Callable[[str, str], None]


def parse_send(raw: str) -> tuple[str, dict[str, str]]:
    """``id key=value ...`` of a LAVA_SEND: the id and its data.

    Values may contain spaces (LAVA splits before each ``word=``). A key that
    is not ``\\w+`` is refused with ValueError, where LAVA would have glued it
    to the previous value (or to the message id) without a word.
    """
    text = raw.strip()
    message_id, _, rest = text.partition(" ")
    if not message_id or "=" in message_id:
        raise ValueError(f"no message id in {raw!r}")
    rest = rest.strip()
    for word in rest.split():
        key, sep, _value = word.partition("=")
        if sep and key and not KEY.match(key):
            raise ValueError(
                f"invalid key {key!r} in {word!r}: keys may only hold letters, digits and '_'"
            )
    data: dict[str, str] = {}
    if rest:
        for item in _ITEM_START.split(rest):
            key, sep, value = item.partition("=")
            if sep and KEY.match(key):
                data[key] = value
    return message_id, data


def reply_items(reply: Mapping[str, Any]) -> str:
    """`` jobid:key=value`` for every item of a wait reply (LAVA's order and str())."""
    if reply.get("response") == "nack":
        return " nack"
    senders = reply.get("message")
    if not isinstance(senders, Mapping):
        return ""
    return "".join(
        f" {sender}:{key}={value}"
        for sender, data in senders.items()
        if isinstance(data, Mapping)
        for key, value in data.items()
    )


def handle(
    ctx: RunContext,
    protocol: MultinodeProtocol,
    event: Event,
    shell: Any,
    *,
    delay: float,
    record: Recorder,
) -> None:
    """Make the call ``event`` asks for, type the reply, record the test case.

    Raises MultinodeProtocolTimeoutError (after recording the failure) when the
    coordinator did not answer in time, TestError when it refused a lava-send
    or the request is malformed.
    """
    name = event.name.upper()
    raw = event.params[0] if event.params else ""
    ctx.logger.debug(f"Received Multi_Node API <LAVA_{name}>")
    words = raw.split()
    if not words:
        ctx.logger.warning(f"MultiNode call {event.text!r} without a message id ignored")
        return
    if name not in ("SEND", "WAIT", "WAIT_ALL", "SYNC"):
        ctx.logger.warning(f"unknown MultiNode call <LAVA_{name}> ignored")
        return
    case = f"multinode-{name}-{words[0]}".lower()
    timeout = protocol.timeout
    try:
        try:
            protocol.check_id(words[0] if name != "SEND" else raw.split()[0])
        except JobError as exc:
            ctx.logger.error(f"<LAVA_{name}> refused: {exc}")
            raise TestError(str(exc)) from None
        if name == "SEND":
            _send(ctx, protocol, raw, timeout)
        elif name == "WAIT":
            _extra(ctx, name, words, 1)
            reply = protocol.wait(ctx, words[0], timeout)
            _type_reply(ctx, shell, f"<LAVA_WAIT_COMPLETE{reply_items(reply)}>", delay)
        elif name == "WAIT_ALL":
            _extra(ctx, name, words, 2)
            role = words[1] if len(words) > 1 else None
            reply = protocol.wait_all(ctx, words[0], timeout, role)
            _type_reply(ctx, shell, f"<LAVA_WAIT_ALL_COMPLETE{reply_items(reply)}>", delay)
        else:
            _extra(ctx, name, words, 1)
            reply = protocol.sync(ctx, words[0], timeout)
            nack = " nack" if reply.get("response") == "nack" else ""
            _type_reply(ctx, shell, f"<LAVA_SYNC_COMPLETE{nack}>", delay)
    except (MultinodeProtocolTimeoutError, MultinodeGroupAborted, TestError) as exc:
        ctx.logger.warning(f"Sync error in multinode signal: {exc} {name}")
        record(case, "fail")
        raise
    record(case, "pass")


def _extra(ctx: RunContext, name: str, words: list[str], allowed: int) -> None:
    if len(words) > allowed:
        ctx.logger.warning(f"<LAVA_{name}>: extra words {words[allowed:]} ignored")


def _send(ctx: RunContext, protocol: MultinodeProtocol, raw: str, timeout: float) -> None:
    try:
        message_id, data = parse_send(raw)
    except ValueError as exc:
        message = f"lava-send refused: {exc}; the message was not sent"
        ctx.logger.error(message)
        raise TestError(message) from None
    ctx.logger.debug(f"{len(data)} key value pair(s) to be sent.")
    reply = protocol.send(ctx, message_id, data, timeout)
    if reply.get("response") == "nack":
        error = reply.get("error")
        raise TestError(
            "Coordinator was unable to accept LAVA_SEND" + (f": {error}" if error else "")
        )


def _type_reply(ctx: RunContext, shell: Any, line: str, delay: float) -> None:
    # as LAVA: the reply line, then "\n" (an empty line more) for the helper's `read`
    shell.sendline(line, delay=delay)
    shell.sendline("\n", delay=0)
