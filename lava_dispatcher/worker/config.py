"""The worker's settings: defaults, then the config file, then the command line.

The config file (``/etc/lava-dispatcher/worker.yaml`` unless ``--config``
says otherwise) is a YAML mapping whose keys are the long options without
their dashes, with ``-`` or ``_`` (``state-dir: /srv/lava``). An unknown key
or a value of the wrong kind is refused with the file, the key and what was
expected, so that a typo never leaves a setting silently at its default.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from lava_dispatcher.worker.errors import ConfigError

DEFAULT_CONFIG = Path("/etc/lava-dispatcher/worker.yaml")
DEFAULT_STATE_DIR = Path("/var/lib/lava-dispatcher")
DEFAULT_DEVICES = Path("/etc/lava-dispatcher/devices")
DEFAULT_LISTEN = "127.0.0.1:8000"


def host_port(text: str, what: str = "listen") -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8000`` for IPv6) as a pair; port 0 picks a free one."""
    host, sep, port = str(text).rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{what}: expected HOST:PORT such as 127.0.0.1:8000, not {text!r}")
    return host, int(port)


def _seconds(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(f"{key}: expected a number of seconds (0 or more), not {value!r}")
    return float(value)


def _path(value: Any, key: str) -> Path:
    if not isinstance(value, (str, Path)) or not str(value):
        raise ConfigError(f"{key}: expected a path, not {value!r}")
    return Path(value)


def _text(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: expected a string, not {value!r}")
    return value


def _listen(value: Any, key: str) -> str:
    host_port(value if isinstance(value, str) else repr(value), key)
    return str(value)


def _port(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ConfigError(f"{key}: expected a TCP port (0 picks a free one), not {value!r}")
    return value


def _topic(value: Any, key: str) -> str:
    text = _text(value, key)
    if any(c.isspace() for c in text) or text.startswith(".") or text.endswith("."):
        raise ConfigError(f"{key}: expected a dotted topic such as org.lavasoftware, not {value!r}")
    return text


def _notify(value: Any, key: str) -> Any:
    from lava_dispatcher.worker.notify.settings import NotifySettings

    NotifySettings.from_mapping(value, key)  # ConfigError names the key path
    return value


@dataclass(frozen=True)
class WorkerConfig:
    """Everything the daemon needs to know; see docs/worker.md for each key."""

    #: SQLite store, job directories, health-check jobs, the lock
    state_dir: Path = DEFAULT_STATE_DIR
    #: one device file per device, ``<hostname>.yaml``
    devices: Path = DEFAULT_DEVICES
    #: the HTTP listener (XML-RPC, REST)
    listen: str = DEFAULT_LISTEN
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: LAVA's dispatcher.yaml, passed to every job
    dispatcher: Path | None = None
    #: a MultiNode coordinator to use instead of the embedded one
    coordinator: str | None = None
    #: a Good device is health-checked again after this long (0: only when Unknown)
    health_check_interval: float = 24 * 3600.0
    #: a canceled job gets SIGTERM, then SIGKILL (its process group) after this long
    cancel_timeout: float = 60.0
    #: how long a stopping worker waits for its canceled jobs before SIGKILL
    stop_timeout: float = 30.0
    #: the worker's name (``scheduler.workers.*``)
    name: str = field(default_factory=socket.gethostname)
    log_level: str = "INFO"
    #: event notifications (ZeroMQ PUB and the /ws/ WebSocket): off unless a topic is set
    event_topic: str | None = None
    event_host: str = "127.0.0.1"
    event_port: int = 5500
    #: CURVE for the ZeroMQ socket: the server's secret key file, a directory of
    #: client public keys (``*.key``); then private jobs' events go there too
    event_curve_secret: Path | None = None
    event_curve_clients: Path | None = None
    #: user notifications: SMTP, IRC, callbacks, retries (docs/notifications.md)
    notify: Any = None

    @property
    def health_checks(self) -> Path:
        """Where health-check jobs live: ``<device-type>.yaml``."""
        return self.state_dir / "health-checks"

    def check(self) -> WorkerConfig:
        """Refuse settings that cannot work together (one clear error); absolute paths."""
        absolute: dict[str, Any] = {k: Path(v).absolute() for k in ("state_dir", "devices", "tls_cert", "tls_key", "dispatcher",
                                                                   "event_curve_secret", "event_curve_clients")
                    if (v := getattr(self, k)) is not None and not Path(v).is_absolute()}  # fmt: skip
        if absolute:
            return replace(self, **absolute).check()
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls-cert and tls-key: give both (a certificate and its key) or neither")
        for key in ("tls_cert", "tls_key", "dispatcher"):
            path = getattr(self, key)
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"{key.replace('_', '-')}: {path} is not a readable file")
        if (self.event_curve_secret is None) != (self.event_curve_clients is None):
            raise ConfigError("event-curve-secret and event-curve-clients: give both or neither")
        if self.event_curve_secret is not None and self.event_topic is None:
            raise ConfigError("event-curve-secret: events are off; give event-topic too")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"log-level: expected DEBUG, INFO, WARNING or ERROR, not {self.log_level!r}")
        return self


_CHECKS: dict[str, Callable[[Any, str], Any]] = {
    "state_dir": _path,
    "devices": _path,
    "listen": _listen,
    "tls_cert": _path,
    "tls_key": _path,
    "dispatcher": _path,
    "coordinator": _listen,
    "health_check_interval": _seconds,
    "cancel_timeout": _seconds,
    "stop_timeout": _seconds,
    "name": _text,
    "log_level": _text,
    "event_topic": _topic,
    "event_host": _text,
    "event_port": _port,
    "event_curve_secret": _path,
    "event_curve_clients": _path,
    "notify": _notify,
}
assert set(_CHECKS) == {f.name for f in fields(WorkerConfig)}


def settings_from(data: Mapping[Any, Any], source: str) -> dict[str, Any]:
    """Checked settings from a mapping of config keys (``-`` or ``_``); ConfigError names the key."""
    settings: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if key not in _CHECKS:
            known = ", ".join(k.replace("_", "-") for k in _CHECKS)
            raise ConfigError(f"{source}: unknown key {raw_key!r}; the keys are: {known}")
        if value is None:
            continue
        try:
            settings[key] = _CHECKS[key](value, str(raw_key))
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    return settings


def read_config_file(path: Path) -> dict[str, Any]:
    """The settings in a worker.yaml (empty file: none)."""
    from lava_dispatcher.schemas.loader import load_yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    data = load_yaml(text, str(path), error=ConfigError)
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    return settings_from(data, str(path))


def load_config(path: Path | None, overrides: Mapping[str, Any]) -> WorkerConfig:
    """Defaults, then ``path`` (or the default file when it exists), then ``overrides``."""
    settings: dict[str, Any] = {}
    if path is not None:
        settings.update(read_config_file(path))
    elif DEFAULT_CONFIG.is_file():
        settings.update(read_config_file(DEFAULT_CONFIG))
    settings.update(settings_from({k: v for k, v in overrides.items() if v is not None}, "option"))
    return replace(WorkerConfig(), **settings).check()
