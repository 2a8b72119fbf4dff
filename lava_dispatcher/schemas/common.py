"""Schema pieces shared by several LAVA formats: timeouts, artifact URLs,
docker images, prompts, login and overlay transfer, the keys common to every
action block.
"""

from __future__ import annotations

import re
from typing import Any

import voluptuous as vol
from voluptuous import Optional, Required

from lava_dispatcher.schemas.validators import (
    Anything,
    Bool,
    Conflict,
    Either,
    Int,
    Keyed,
    ListOf,
    Map,
    Mismatch,
    MissingKey,
    Nullable,
    Number,
    OneOf,
    Pattern,
    Str,
    Validator,
    exclusive,
    together,
)

# ---------------------------------------------------------------- timeouts

TIMEOUT_UNITS = ("days", "hours", "minutes", "seconds")
TIMEOUT_EXAMPLE = "a timeout such as {minutes: 10}"
_UNIT_SECONDS = {"days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}


#: the longest duration a timedelta (and so LAVA) can hold
MAX_TIMEOUT_SECONDS = 999_999_999 * 86400


def _one_unit(data: dict[Any, Any]) -> None:
    units = [u for u in TIMEOUT_UNITS if u in data]
    if not units:
        raise Mismatch(
            "a timeout with one of 'days', 'hours', 'minutes' or 'seconds', such as {minutes: 10}"
        )
    if len(units) > 1:
        raise Conflict(
            f"{units[1]!r} cannot be used together with {units[0]!r}",
            "exactly one of 'days', 'hours', 'minutes' or 'seconds' in a timeout",
            [units[1]],
        )
    if timeout_seconds(data) > MAX_TIMEOUT_SECONDS:
        raise Mismatch("a timeout shorter than 999999999 days", [units[0]])


TIMEOUT = Map(
    {
        **{Optional(unit): Int(1, expected="a positive integer") for unit in TIMEOUT_UNITS},
        Optional("skip"): Bool(),
    },
    expected=TIMEOUT_EXAMPLE,
    checks=[_one_unit],
)

TIMEOUTS_BY_NAME = Keyed(
    TIMEOUT,
    expected="a mapping of action names to timeouts, such as {http-download: {minutes: 5}}",
    key_expected="an action name (a string)",
)


def timeout_seconds(data: dict[str, Any]) -> int:
    """Duration in seconds of a validated timeout mapping."""
    return sum(int(data.get(unit, 0)) * _UNIT_SECONDS[unit] for unit in TIMEOUT_UNITS)


def timeout_text(data: dict[str, Any]) -> str:
    """``{minutes: 90}`` -> ``'{minutes: 90}'`` (as written)."""
    unit = next((u for u in TIMEOUT_UNITS if u in data), "seconds")
    return f"{{{unit}: {int(data.get(unit, 0))}}}"


# ---------------------------------------------------------------- strings

NAME = Pattern(
    r"[-_a-zA-Z0-9.]+",
    "a name made of letters, digits, '-', '_' and '.'",
)

STRINGS = ListOf(Str(), expected="a list of strings")
NONEMPTY_STRINGS = ListOf(Str(nonempty=True), expected="a list of non-empty strings")
STR_OR_STRINGS = Either(Str(), STRINGS, expected="a string or a list of strings")
COMMANDS = Either(Str(), STRINGS, expected="a command string or a list of command strings")

PROMPTS = Either(
    Str(nonempty=True),
    NONEMPTY_STRINGS,
    expected="a prompt string or a list of prompt strings (non-empty)",
)


class Url(Validator):
    """An artifact URL: ``scheme:...`` (http, https, file, scp, rclone, downloads...)."""

    expected = "a URL string such as https://example.com/image.img or file:///path"
    _form = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S.*", re.S)

    def __call__(self, value: Any) -> Any:
        if not isinstance(value, str) or not self._form.fullmatch(value):
            raise Mismatch(self.expected)
        return value


URL = Url()

# ---------------------------------------------------------------- artifacts

COMPRESSION = Nullable(
    OneOf("bz2", "gz", "xz", "zip", "zstd"), expected="one of 'bz2', 'gz', 'xz', 'zip' or 'zstd'"
)
OVERLAY_BACKEND = OneOf("auto", "e2fsprogs", "guestfs")

_URL_BASE: dict[Any, Any] = {
    Required("url"): URL,
    Optional("headers"): Keyed(Anything(), expected="a mapping of HTTP header names to values"),
    Optional("compression"): COMPRESSION,
    Optional("archive"): OneOf("tar"),
    Optional("md5sum"): Str(),
    Optional("sha256sum"): Str(),
    Optional("sha512sum"): Str(),
    Optional("use_cache"): Bool(),
}

_OVERLAY_FILE = Map(
    {
        **_URL_BASE,
        Required("format"): OneOf("file", "tar"),
        Required("path"): Str(nonempty=True),
    },
    expected="an overlay such as {url: https://..., format: tar, path: /}",
)

_OVERLAYS = Map(
    {Optional("lava"): Bool(), Optional(str): _OVERLAY_FILE},
    expected="a mapping of overlay names to {url, format, path} (plus 'lava: true|false')",
)

_IMAGE_ONLY_WITH_OVERLAYS = ("format", "partition", "sparse", "overlay_backend")


def url_dict(extra: dict[Any, Any] | None = None, *, overlays: bool = True) -> Map:
    """An artifact: ``{url: ..., compression: ..., md5sum: ...}`` plus method keys.

    With ``overlays`` (the default, as in LAVA), the artifact may carry
    ``overlays`` (files injected into the image) and then must say its
    ``format``; ``partition``, ``sparse`` and ``overlay_backend`` are only
    meaningful with ``overlays`` unless the method declares them itself.
    """
    extra = dict(extra or {})
    own = {m.schema if isinstance(m, vol.Marker) else m for m in extra}
    fields: dict[Any, Any] = {**_URL_BASE, **extra}
    checks = []
    if overlays:
        extras_for_overlays = {
            Optional("format"): OneOf("cpio.newc", "ext4", "tar"),
            Optional("partition"): Int(0),
            Optional("sparse"): Bool(),
            Optional("overlay_backend"): OVERLAY_BACKEND,
            Optional("overlays"): _OVERLAYS,
        }
        for marker, value in extras_for_overlays.items():
            if marker.schema not in own:
                fields[marker] = value
        only_with = [k for k in _IMAGE_ONLY_WITH_OVERLAYS if k not in own]

        def overlay_rules(data: dict[Any, Any]) -> None:
            if "overlays" in data and "format" not in data:
                raise MissingKey(
                    "the image format ('cpio.newc', 'ext4' or 'tar') when 'overlays' is used",
                    ["format"],
                )
            if "overlays" not in data:
                for key in only_with:
                    if key in data:
                        raise Conflict(
                            f"{key!r} is only used together with 'overlays'",
                            f"'overlays' alongside {key!r}, or no {key!r}",
                            [key],
                        )

        checks.append(overlay_rules)
    return Map(fields, expected="an artifact such as {url: https://...}", checks=checks)


def images(item: Any, *, nonempty: bool = True, what: str = "artifacts") -> Keyed:
    """``images: {label: artifact}``."""
    return Keyed(
        item,
        nonempty=nonempty,
        expected=(
            f"a {'non-empty ' if nonempty else ''}mapping of labels to {what}, "
            "such as {rootfs: {url: https://...}}"
        ),
        key_expected="an image label (a string)",
    )


# ---------------------------------------------------------------- docker

DOCKER_IMAGE = Pattern(
    r"[a-z0-9]+[a-z0-9._/:-]*[a-z0-9]+(:[a-zA-Z0-9_]+[a-zA-Z0-9._-]*)?",
    "a docker image name such as 'debian:bookworm' or 'registry.example.com/team/image:1.0'",
)

DOCKER_LOGIN = Map(
    {Required("registry"): Str(), Required("user"): Str(), Required("password"): Str()}
)


def docker(image_key: str = "image", more: dict[Any, Any] | None = None) -> Map:
    """``{image: name, local: bool, container_name, network_from, login}`` (+ ``more``)."""
    return Map(
        {
            Required(image_key): DOCKER_IMAGE,
            Optional("local"): Bool(),
            Optional("container_name"): Str(),
            Optional("network_from"): Str(),
            Optional("login"): DOCKER_LOGIN,
            **(more or {}),
        },
        expected=f"a docker mapping such as {{{image_key}: debian:bookworm}}",
    )


# ---------------------------------------------------------------- boot pieces

AUTO_LOGIN = Map(
    {
        Required("login_prompt"): Str(nonempty=True),
        Required("username"): Str(),
        Optional("password_prompt"): Str(),
        Optional("password"): Str(),
        Optional("login_commands"): STRINGS,
    },
    expected="a login mapping such as {login_prompt: 'login:', username: root}",
    checks=[together("password_prompt", "password")],
)


#: transfer methods that need no download command on the DUT ('console' is ours:
#: the file is typed through the shell)
_NO_DOWNLOAD_COMMAND = ("zmodem", "console")


def _transfer_rules(data: dict[Any, Any]) -> None:
    if data.get("transfer_method") not in _NO_DOWNLOAD_COMMAND and "download_command" not in data:
        raise MissingKey(
            "the command that fetches the overlay on the DUT, such as 'wget -O -'"
            " (only 'transfer_method: zmodem' or 'console' needs none)",
            ["download_command"],
        )


TRANSFER_OVERLAY = Map(
    {
        Optional("download_command"): Str(),
        Required("unpack_command"): Str(),
        Optional("transfer_method"): Str(
            expected="a transfer method such as 'http', 'nfs', 'zmodem' or 'console'"
        ),
    },
    expected="a mapping such as {download_command: wget, unpack_command: 'tar -C / -xzf'}",
    checks=[_transfer_rules],
)

# ---------------------------------------------------------------- action keys

RESERVED_NAMESPACES = ("common", "docker-test-shell")


class Namespace(Validator):
    expected = "a namespace name other than 'common' and 'docker-test-shell' (they are reserved)"

    def __call__(self, value: Any) -> Any:
        if not isinstance(value, str) or not value or value in RESERVED_NAMESPACES:
            raise Mismatch(self.expected)
        return value


MULTINODE_REQUESTS = (
    "lava-send",
    "lava-wait",
    "lava-wait-all",
    "lava-sync",
    "lava_send",
    "lava_wait",
    "lava_wait_all",
    "lava_sync",
)

_PROTOCOL_CALL = Map(
    {
        Required("action"): Str(
            nonempty=True,
            expected="the name of the action that makes the call, such as 'execute-qemu'",
        ),
        Required("request"): OneOf(
            *MULTINODE_REQUESTS,
            expected="one of 'lava-send', 'lava-wait', 'lava-wait-all' or 'lava-sync'",
        ),
        Required("messageID"): Str(nonempty=True, expected="a message identifier (a string)"),
        Optional("message"): Either(
            Keyed(Anything()), Str(), expected="a mapping of keys to values, or a string"
        ),
        Optional("timeout"): Either(TIMEOUT, Number(0), expected=TIMEOUT_EXAMPLE),
        Optional("role"): Str(),
        Optional("poll_delay"): Int(1),
    },
    expected="a protocol call such as {action: execute-qemu, request: lava-wait, messageID: ready}",
)

_PROTOCOL_CALLS = Either(
    ListOf(_PROTOCOL_CALL, expected="a list of protocol calls"),
    _PROTOCOL_CALL,
    expected="a list of protocol calls such as [{action: execute-qemu, request: lava-wait, messageID: ready}]",
)

_XNBD_CALL = Map({Required("action"): Str(nonempty=True)}, extra=Anything())

ACTION_PROTOCOLS = Map(
    {
        Optional("lava-multinode"): _PROTOCOL_CALLS,
        Optional("lava-xnbd"): Either(
            ListOf(_XNBD_CALL), _XNBD_CALL, expected="a list of protocol calls"
        ),
    },
    expected="a mapping of protocol names ('lava-multinode', 'lava-xnbd') to lists of calls",
)

ROLE_LIST = Either(
    ListOf(Str(nonempty=True), nonempty=True),
    Str(nonempty=True),
    expected="a list of MultiNode role names such as [server, client]",
)

ACTION_COMMON: dict[Any, Any] = {
    Optional("namespace"): Namespace(),
    Optional("connection-namespace"): Str(nonempty=True, expected="a namespace name"),
    Optional("protocols"): ACTION_PROTOCOLS,
    Optional("role"): ROLE_LIST,
    Optional("timeout"): TIMEOUT,
    Optional("timeouts"): TIMEOUTS_BY_NAME,
    Optional("repeat"): Int(1, expected="a positive integer (how many times to run the block)"),
    Optional("failure_retry"): Int(1, expected="a positive integer (how many attempts)"),
    Optional("failure_retry_interval"): Int(
        1, expected="a positive integer (seconds between attempts)"
    ),
}

ACTION_CHECKS = (exclusive("failure_retry", "repeat"),)

__all__ = [
    "ACTION_CHECKS",
    "ACTION_COMMON",
    "AUTO_LOGIN",
    "COMMANDS",
    "DOCKER_IMAGE",
    "NAME",
    "PROMPTS",
    "RESERVED_NAMESPACES",
    "STRINGS",
    "STR_OR_STRINGS",
    "TIMEOUT",
    "TIMEOUTS_BY_NAME",
    "TRANSFER_OVERLAY",
    "URL",
    "Anything",
    "Bool",
    "Either",
    "Int",
    "Keyed",
    "ListOf",
    "Map",
    "MethodSchema",
    "Nullable",
    "OneOf",
    "Str",
    "docker",
    "images",
    "timeout_seconds",
    "timeout_text",
    "url_dict",
]


# ---------------------------------------------------------------- method tables


class MethodSchema:
    """A method's own keys (voluptuous dict keys) and checks on the whole block."""

    __slots__ = ("checks", "fields")

    def __init__(self, fields: dict[Any, Any], *checks: Any) -> None:
        self.fields = fields
        self.checks = tuple(checks)
