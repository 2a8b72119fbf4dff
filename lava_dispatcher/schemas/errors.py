"""Turning voluptuous failures into one clear message.

A schema run can fail in many places at once; a person fixes one thing at a
time, so we report the failure that comes first in the document (the order
in which the keys appear in the YAML file), and say how many more there are.

The message always has the same shape::

    <key path>: got <bad value>; expected <what would be accepted>
    <key path>: required key missing; expected <what the value should be>
    <key path>: got unknown key 'x'; expected one of 'a', 'b' (did you mean 'a'?)

Key paths use dots for mappings and ``[i]`` for list items, from the root of
the document: ``actions[1].boot.method``.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from typing import Any

import voluptuous as vol

from lava_dispatcher.schemas.validators import Conflict, Mismatch, MissingKey, UnknownKey

__all__ = ["format_path", "format_value", "make_error", "pick_error"]

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_@$+-][A-Za-z0-9_@$+/:-]*\Z")

# voluptuous's own messages, in our words (for schemas supplied by plugins)
_VOLUPTUOUS_WORDS = {
    "expected str": "a string",
    "expected int": "an integer",
    "expected float": "a number",
    "expected bool": "true or false",
    "expected dict": "a mapping",
    "expected a dictionary": "a mapping",
    "expected list": "a list",
    "expected a list": "a list",
    "not a valid value": "a valid value",
}


def format_path(path: Sequence[Hashable], root: str = "") -> str:
    """``['actions', 1, 'boot', 'method']`` -> ``actions[1].boot.method``."""
    text = ""
    for part in path:
        if isinstance(part, vol.Marker):
            part = part.schema
        if isinstance(part, int) and not isinstance(part, bool):
            text += f"[{part}]"
        elif isinstance(part, str) and _PLAIN_KEY.match(part):
            text += f".{part}" if text else part
        else:
            text += f"[{format_value(part)}]"
    return text or root


def format_value(value: Any, limit: int = 120) -> str:
    """A compact, YAML-flavoured rendering of ``value`` for messages."""
    text = _render(value, depth=0)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def _render(value: Any, depth: int) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _render_str(value)
    if isinstance(value, int):
        try:
            return repr(value)
        except ValueError:  # beyond Python's limit for int -> str conversion
            return f"<an integer of {value.bit_length()} bits>"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        if depth > 3:
            return "{...}"
        items = [f"{_render_key(k)}: {_render(v, depth + 1)}" for k, v in list(value.items())[:8]]
        if len(value) > 8:
            items.append("...")
        return "{" + ", ".join(items) + "}"
    if isinstance(value, (list, tuple)):
        if depth > 3:
            return "[...]"
        items = [_render(v, depth + 1) for v in list(value)[:8]]
        if len(value) > 8:
            items.append("...")
        return "[" + ", ".join(items) + "]"
    return repr(value)


def _render_str(text: str) -> str:
    """YAML single-quoted style: shown as written (backslashes and all)."""
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        return repr(text)  # control characters: show them escaped
    return "'" + text.replace("'", "''") + "'"


def _render_key(key: Any) -> str:
    if isinstance(key, str) and _PLAIN_KEY.match(key):
        return key
    return _render(key, 4)


_MISSING = object()


def _lookup(data: Any, path: Sequence[Hashable]) -> Any:
    node = data
    for part in path:
        if isinstance(part, vol.Marker):
            part = part.schema
        container: Any = node
        try:
            if isinstance(node, dict) or (isinstance(node, list) and isinstance(part, int)):
                node = container[part]
            else:
                return _MISSING
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return node


def _position(data: Any, path: Sequence[Hashable]) -> tuple[int, ...]:
    """Where ``path`` lies in document order (missing keys sort after their siblings)."""
    order: list[int] = []
    node = data
    for part in path:
        if isinstance(part, vol.Marker):
            part = part.schema
        if isinstance(node, dict):
            keys = list(node)
            try:
                index = keys.index(part)
            except ValueError:
                order.append(len(keys))
                break
            order.append(index)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            order.append(part)
            node = node[part]
        else:
            break
    return tuple(order)


def _flatten(exc: vol.Invalid) -> list[vol.Invalid]:
    if isinstance(exc, vol.MultipleInvalid):
        out: list[vol.Invalid] = []
        for err in exc.errors:
            out.extend(_flatten(err))
        return out
    return [exc]


def pick_error(exc: vol.Invalid, data: Any) -> tuple[vol.Invalid, int]:
    """The failure to report (first in document order) and how many others there are."""
    errors = _flatten(exc) or [exc]
    ranked = sorted(enumerate(errors), key=lambda item: (_position(data, item[1].path), item[0]))
    return ranked[0][1], len(errors) - 1


def describe_error(err: vol.Invalid, data: Any, root: str) -> tuple[str, str, Any, str]:
    """``(message, path, value, expected)`` for one voluptuous error."""
    path = format_path(err.path, root)
    value = _lookup(data, err.path)
    shown = format_value(value) if value is not _MISSING else "nothing"
    hint = getattr(err, "hint", "")
    if isinstance(err, MissingKey):
        expected = err.expected
        message = f"{path}: required key missing; expected {expected}"
        value = None
    elif isinstance(err, UnknownKey):
        key = err.path[-1] if err.path else None
        expected = err.expected
        message = f"{path}: got unknown key {format_value(key)}; expected {expected}"
        value = key
    elif isinstance(err, Conflict):
        expected = err.expected
        message = f"{path}: got {shown}, but {err.detail}; expected {expected}"
    elif isinstance(err, Mismatch):
        expected = err.expected
        message = f"{path}: got {shown}; expected {expected}"
    elif isinstance(err, vol.RequiredFieldInvalid):
        expected = err.msg if err.msg != "required key not provided" else "a value"
        message = f"{path}: required key missing; expected {expected}"
        value = None
    elif err.msg == "extra keys not allowed":
        key = err.path[-1] if err.path else None
        expected = "no other keys here"
        message = f"{path}: got unknown key {format_value(key)}; expected {expected}"
        value = key
    else:
        msg = err.msg
        expected = _VOLUPTUOUS_WORDS.get(msg, msg[9:] if msg.startswith("expected ") else msg)
        message = f"{path}: got {shown}; expected {expected}"
    if hint:
        message += f" ({hint})"
    if value is _MISSING:
        value = None
    return message, path, value, expected


def make_error(exc: vol.Invalid, data: Any, error_cls: type[Exception], root: str) -> Exception:
    """One ``error_cls`` (InvalidJobError/InvalidDeviceError) describing ``exc``."""
    err, others = pick_error(exc, data)
    message, path, value, expected = describe_error(err, data, root)
    if others:
        message += f" (and {others} more problem{'s' if others > 1 else ''})"
    return error_cls(message, path=path, value=value, expected=expected)  # type: ignore[call-arg]
