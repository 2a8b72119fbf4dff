"""The plugin manager: built-ins first, then entry points of the group ``lava_dispatcher``."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pluggy

from lava_dispatcher import hookspecs
from lava_dispatcher.errors import ConfigurationError

if TYPE_CHECKING:
    from lava_dispatcher.actions.strategy import Strategy

PROJECT = "lava_dispatcher"
hookimpl = pluggy.HookimplMarker(PROJECT)

#: modules of the dispatcher that register through the hooks like any plugin
BUILTIN_PLUGINS = (
    "lava_dispatcher.devices",
    "lava_dispatcher.actions.boot.minimal",
    "lava_dispatcher.actions.test.interactive",
    "lava_dispatcher.actions.command",
    "lava_dispatcher.results",
)


def new_manager(*, load_entry_points: bool = True) -> pluggy.PluginManager:
    """A manager with the hookspecs, the built-ins and (optionally) installed plugins."""
    import importlib

    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(hookspecs)
    for name in BUILTIN_PLUGINS:
        manager.register(importlib.import_module(name), name=name)
    if load_entry_points:
        try:
            manager.load_setuptools_entrypoints(PROJECT)
        except Exception as exc:
            raise ConfigurationError(f"cannot load a '{PROJECT}' plugin: {exc}") from exc
    return manager


@functools.cache
def get_manager() -> pluggy.PluginManager:
    """The process-wide manager (one job per process)."""
    return new_manager()


def _flatten(results: Iterable[Iterable[Any] | None]) -> list[Any]:
    out: list[Any] = []
    for result in results:
        if result:
            out.extend(result)
    return out


def strategies(manager: pluggy.PluginManager | None = None) -> list[type[Strategy]]:
    manager = manager or get_manager()
    return _flatten(manager.hook.lava_strategies())


def device_type_sources(manager: pluggy.PluginManager | None = None) -> list[tuple[str, Path]]:
    """(plugin name, directory) for every device-type directory, built-ins first.

    Built-ins come first so that a plugin cannot silently change a built-in
    device type; ``lava-dispatch devices`` shows a shadowed name as such.
    """
    manager = manager or get_manager()
    sources: list[tuple[str, Path]] = []
    # pluggy calls the most recently registered plugin first: reverse that
    for impl in reversed(manager.hook.lava_device_type_dirs.get_hookimpls()):
        directories = cast("Iterable[Any]", impl.function() or ())
        for directory in directories:
            sources.append((impl.plugin_name, Path(directory)))
    return sources


def device_type_dirs(manager: pluggy.PluginManager | None = None) -> list[Path]:
    return [directory for _name, directory in device_type_sources(manager)]


def protocols(manager: pluggy.PluginManager | None = None) -> list[type[Any]]:
    manager = manager or get_manager()
    return _flatten(manager.hook.lava_protocols())


def method_schemas(manager: pluggy.PluginManager | None = None) -> dict[tuple[str, str], Any]:
    manager = manager or get_manager()
    merged: dict[tuple[str, str], Any] = {}
    for result in manager.hook.lava_method_schemas():
        if isinstance(result, Mapping):
            merged.update(result)
    return merged
