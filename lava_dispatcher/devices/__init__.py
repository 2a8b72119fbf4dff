"""Device dictionaries: loading, ``extends:`` inheritance, validation.

A device file is LAVA's rendered device dictionary, loaded as it is. Our own
device files may instead say ``extends: <device-type>`` and give only what
differs (hostname, connection, power commands): the named device type (a
``<type>.yaml`` in this directory or in a plugin's) is deep-merged under
the file. Device types may extend other device types. The merged result is
validated before anything runs, so a typo in a lab's device file is caught
at load time with the key path that is wrong.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lava_dispatcher.errors import InvalidDeviceError
from lava_dispatcher.plugins import hookimpl

DEVICE_TYPES_DIR = Path(__file__).resolve().parent


@hookimpl
def lava_device_type_dirs() -> list[Path]:
    return [DEVICE_TYPES_DIR]


class Device(dict[str, Any]):
    """A loaded, validated device dictionary (a plain dict, as actions expect)."""

    path: Path | None = None

    @property
    def hostname(self) -> str:
        return str(self.get("hostname") or (self.path.stem if self.path else "device"))

    @property
    def device_type(self) -> str:
        return str(self.get("device_type") or self.get("devicetype") or "")

    def method(self, section: str, name: str) -> Mapping[str, Any] | None:
        """The device's settings for a deploy/boot method, or None if it lacks it."""
        methods = ((self.get("actions") or {}).get(section) or {}).get("methods") or {}
        if name not in methods:
            return None
        return methods[name] or {}

    def has_method(self, section: str, name: str) -> bool:
        methods = ((self.get("actions") or {}).get(section) or {}).get("methods") or {}
        return name in methods


_TIMEOUT_KEYS = frozenset({"days", "hours", "minutes", "seconds", "skip"})


def _is_timeout(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value) and set(value) <= _TIMEOUT_KEYS


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``: mappings merge key by key, anything else replaces.

    A timeout (``{seconds: 30}``) is one value, not a mapping to merge: an
    override in other units replaces the base's rather than adding to it.
    """
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if _is_timeout(value):
            merged[key] = copy.deepcopy(value)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def find_device_type(name: str, type_dirs: Sequence[Path]) -> Path | None:
    if not name or "/" in name or name.startswith("."):
        return None
    for directory in type_dirs:
        candidate = directory / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    return None


def _read(path: Path) -> Any:
    from lava_dispatcher.schemas import load_yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidDeviceError(f"cannot read device file {path}: {exc.strerror}") from exc
    # LAVA's own rendered device files may repeat a key (last one wins there)
    return load_yaml(text, str(path), error=InvalidDeviceError, allow_duplicates=True)


def resolve(data: Any, source: str, type_dirs: Sequence[Path], chain: tuple[str, ...] = ()) -> Any:
    """Follow ``extends:`` down to the root device type and merge back up."""
    if not isinstance(data, Mapping) or "extends" not in data:
        return data
    parent_name = data["extends"]
    if not isinstance(parent_name, str):
        raise InvalidDeviceError(
            f"{source}: extends: got {parent_name!r}; expected the name of a device type",
            path="extends",
            value=parent_name,
            expected="a device-type name",
        )
    if parent_name in chain:
        loop = " -> ".join((*chain, parent_name))
        raise InvalidDeviceError(f"{source}: extends: loop between device types: {loop}")
    parent_path = find_device_type(parent_name, type_dirs)
    if parent_path is None:
        known = ", ".join(sorted(t.name for t in list_device_types(type_dirs))) or "none"
        raise InvalidDeviceError(
            f"{source}: extends: got {parent_name!r}; expected a known device type ({known})",
            path="extends",
            value=parent_name,
            expected=f"one of: {known}",
        )
    parent = resolve(_read(parent_path), str(parent_path), type_dirs, (*chain, parent_name))
    if not isinstance(parent, Mapping):
        raise InvalidDeviceError(f"{parent_path}: a device type must be a mapping")
    own = {k: v for k, v in data.items() if k != "extends"}
    merged = deep_merge(parent, own)
    # a device is of the type it extends directly, unless it says otherwise
    merged["device_type"] = own.get("device_type") or parent_name
    return merged


def load_device_data(
    data: Any, source: str = "device", type_dirs: Sequence[Path] | None = None
) -> Device:
    """Resolve ``extends``, validate, and wrap ``data`` (already parsed YAML).

    ``type_dirs`` are where ``extends:`` looks (the plugin manager's
    ``device_type_dirs``); without them, only the built-in device types.
    """
    from lava_dispatcher.schemas import validate_device

    if type_dirs is None:
        type_dirs = [DEVICE_TYPES_DIR]
    merged = resolve(data, source, type_dirs)
    try:
        valid = validate_device(merged)
    except InvalidDeviceError as exc:
        raise InvalidDeviceError(
            f"{source}: {exc}", path=exc.path, value=exc.value, expected=exc.expected
        ) from exc
    device = Device(valid)
    return device


def load_device(path: str | Path, type_dirs: Sequence[Path] | None = None) -> Device:
    """Load a device file (a LAVA rendered dictionary, or one that extends a type)."""
    path = Path(path)
    device = load_device_data(_read(path), str(path), type_dirs)
    device.path = path
    return device


@dataclass(frozen=True)
class DeviceType:
    name: str
    path: Path


def list_device_types(type_dirs: Sequence[Path]) -> list[DeviceType]:
    """Every ``<type>.yaml`` in the directories, first one of a name wins."""
    seen: dict[str, DeviceType] = {}
    for directory in type_dirs:
        for candidate in sorted(Path(directory).glob("*.yaml")):
            seen.setdefault(candidate.stem, DeviceType(candidate.stem, candidate))
    return list(seen.values())
