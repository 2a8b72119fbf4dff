"""The devices directory: one device file per device, ``<hostname>.yaml``.

The hostname is the file name without ``.yaml``; the device type is the
file's ``device_type:`` key, else its ``extends:``. The file itself is a
device dictionary as ``lava-dispatch run --device`` takes it: each job gets
a copy of it as it was when the job started. Files are checked in full by
the validator child before the worker starts; any bad file stops the start
with a message naming it, so a lab never runs with half its devices.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lava_dispatcher.worker.errors import ConfigError


@dataclass(frozen=True)
class DeviceFile:
    hostname: str
    device_type: str
    path: Path


def read_device_file(path: Path) -> DeviceFile:
    """The hostname and device type of one file; ConfigError naming the file and the key."""
    from lava_dispatcher.schemas.loader import load_yaml

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read device file {path}: {exc}") from None
    data = load_yaml(text, str(path), error=ConfigError, allow_duplicates=True)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a device dictionary (a mapping), got {type(data).__name__}")
    device_type = data.get("device_type") or data.get("extends")
    if not isinstance(device_type, str) or not device_type.strip():
        raise ConfigError(
            f"{path}: no device type: give 'device_type: <type>' or 'extends: <type>'"
        )
    return DeviceFile(path.name[: -len(".yaml")], device_type.strip(), path.resolve())
