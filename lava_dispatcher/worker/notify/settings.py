"""The notification settings an admin gives the worker (the ``notify:`` key of worker.yaml).

Everything a job's ``notify`` block cannot say, because it is the lab's
business: which SMTP server sends mail and as whom, the IRC nick, how long a
callback may take and which hosts callbacks may reach, how deliveries are
retried, and what our store does not hold about users: their email address,
IRC handle and the secrets their callbacks send (the store keeps token
hashes only, so a secret to send must be given here).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from lava_dispatcher.worker.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class SmtpSettings:
    """The SMTP server every email goes through."""

    host: str = "localhost"
    port: int = 25
    #: the From: address (LAVA's SERVER_EMAIL)
    sender: str = "lava@localhost"
    #: upgrade the plain connection with STARTTLS
    starttls: bool = False
    #: connect with TLS from the start (SMTPS, usually port 465)
    ssl: bool = False
    username: str | None = None
    password: str | None = None
    #: seconds for the whole conversation of one attempt
    timeout: float = 30.0


@dataclass(frozen=True)
class IrcSettings:
    """How the IRC client connects; a recipient's ``server`` may carry its own ``:port``."""

    nick: str = "lava-bot"
    port: int = 6667
    tls: bool = False
    #: the server of recipients that name none (LAVA: the user's profile, else not sent)
    server: str | None = None
    #: seconds for one whole attempt: connect, register, send, quit
    timeout: float = 30.0


@dataclass(frozen=True)
class CallbackSettings:
    """HTTP callbacks: LAVA's CALLBACK_TIMEOUT and CALLBACK_ALLOWED_HOSTS."""

    timeout: float = 5.0
    #: glob patterns of host names callbacks may reach; empty: any host
    allowed_hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class RetrySettings:
    """Exponential back-off: attempt n+1 starts ``delay * factor**(n-1)`` (at most ``max_delay``) after attempt n failed."""

    attempts: int = 5
    delay: float = 2.0
    factor: float = 2.0
    max_delay: float = 300.0

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return float(min(self.max_delay, self.delay * self.factor ** max(0, attempt - 1)))


@dataclass(frozen=True)
class Contact:
    """What LAVA keeps in a user's profile, given by the admin for our users."""

    email: str | None = None
    first_name: str = ""
    last_name: str = ""
    irc_handle: str | None = None
    irc_server: str | None = None
    #: token description -> secret, for callbacks whose ``token:`` names one
    tokens: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NotifySettings:
    """All of it; :meth:`from_mapping` reads the ``notify:`` mapping of worker.yaml."""

    #: where the worker's web pages are, for the links in emails and IRC lines
    url: str = "http://localhost:8000"
    #: the worker's name, shown in emails
    worker: str = field(default_factory=socket.gethostname)
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    irc: IrcSettings = field(default_factory=IrcSettings)
    callbacks: CallbackSettings = field(default_factory=CallbackSettings)
    retry: RetrySettings = field(default_factory=RetrySettings)
    #: deliveries attempted at the same time (the others wait their turn)
    concurrency: int = 16
    #: user name -> contact details and callback secrets
    users: Mapping[str, Contact] = field(default_factory=dict)
    #: device hostname -> the user ``{LAVA_DEVICE_OWNER}`` means
    device_owners: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, data: Mapping[Any, Any] | None, source: str = "notify") -> NotifySettings:
        """Checked settings; ConfigError names the key path, the value and what was expected."""
        if data is None:
            return cls()
        values = _section(cls, data, source, {
            "smtp": lambda v, k: _dataclass(SmtpSettings, v, k),
            "irc": lambda v, k: _dataclass(IrcSettings, v, k),
            "callbacks": lambda v, k: _dataclass(CallbackSettings, v, k),
            "retry": lambda v, k: _retry(v, k),
            "users": _users,
            "device_owners": lambda v, k: _str_map(v, k),
        })  # fmt: skip
        return cls(**values)


# -- checking ----------------------------------------------------------------------


def _fail(key: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"{key}: expected {expected}, not {value!r}")


def _text(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(key, value, "a string")
    return value


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(key, value, "true or false")
    return value


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise _fail(key, value, "a number (0 or more)")
    return float(value)


def _positive(value: Any, key: str) -> float:
    if _number(value, key) <= 0:
        raise _fail(key, value, "a number of seconds above 0")
    return float(value)


def _count(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(key, value, "a whole number, 1 or more")
    return value


def _port(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise _fail(key, value, "a port number (1 to 65535)")
    return value


def _url(value: Any, key: str) -> str:
    text = _text(value, key)
    if not text.startswith(("http://", "https://")):
        raise _fail(key, value, "an http:// or https:// URL")
    return text.rstrip("/")


def _patterns(value: Any, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _fail(key, value, "a list of host name patterns such as ['*.example.com']")
    return tuple(v.lower() for v in value)


def _str_map(value: Any, key: str) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in value.items()
    ):
        raise _fail(key, value, "a mapping of names to strings")
    return dict(value)


#: the check of each known field name, whatever dataclass it is in
_CHECKS: dict[str, Callable[[Any, str], Any]] = {
    "url": _url,
    "worker": _text,
    "host": _text,
    "port": _port,
    "sender": _text,
    "starttls": _bool,
    "ssl": _bool,
    "tls": _bool,
    "username": _text,
    "password": _text,
    "timeout": _positive,
    "nick": _text,
    "server": _text,
    "allowed_hosts": _patterns,
    "attempts": _count,
    "delay": _number,
    "factor": _number,
    "max_delay": _number,
    "concurrency": _count,
    "email": _text,
    "first_name": lambda v, k: v if isinstance(v, str) else _text(v, k),
    "last_name": lambda v, k: v if isinstance(v, str) else _text(v, k),
    "irc_handle": _text,
    "irc_server": _text,
    "tokens": _str_map,
}


def _section(
    cls: type[Any],
    data: Any,
    source: str,
    nested: Mapping[str, Callable[[Any, str], Any]] | None = None,
) -> dict[str, Any]:
    """The checked fields of one mapping for ``cls``; unknown keys are refused by name."""
    if not isinstance(data, Mapping):
        raise _fail(source, data, "a mapping")
    names = [f.name for f in fields(cls)]
    values: dict[str, Any] = {}
    for raw_key, value in data.items():
        name = str(raw_key).replace("-", "_")
        key = f"{source}.{raw_key}"
        if name not in names:
            known = ", ".join(n.replace("_", "-") for n in names)
            raise ConfigError(f"{key}: unknown key; the keys here are: {known}")
        if value is None:
            continue
        check = (nested or {}).get(name) or _CHECKS[name]
        values[name] = check(value, key)
    return values


def _dataclass(cls: type[T], data: Any, source: str) -> T:
    values = _section(cls, data, source)
    instance = cls(**values)
    if isinstance(instance, SmtpSettings) and instance.ssl and instance.starttls:
        raise ConfigError(f"{source}: give ssl (SMTPS) or starttls, not both")
    if isinstance(instance, SmtpSettings) and (instance.username is None) != (instance.password is None):
        raise ConfigError(f"{source}: give both username and password (SMTP login), or neither")
    return instance


def _retry(data: Any, source: str) -> RetrySettings:
    retry = _dataclass(RetrySettings, data, source)
    if retry.factor < 1:
        raise _fail(f"{source}.factor", retry.factor, "a factor of 1 or more")
    return retry


def _users(data: Any, source: str) -> dict[str, Contact]:
    if not isinstance(data, Mapping):
        raise _fail(source, data, "a mapping of user names to contact details")
    return {str(name): _dataclass(Contact, value or {}, f"{source}.{name}") for name, value in data.items()}
