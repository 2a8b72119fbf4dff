"""Plugin plumbing: the hookimpl marker, building a manager, asking it questions.

This module sits at the bottom of the layers and imports no action: which
modules are the built-in plugins is decided at the top, by
:mod:`lava_dispatcher.builtin_plugins`, which builds the process-wide manager.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pluggy

from lava_dispatcher import hookspecs
from lava_dispatcher.errors import ConfigurationError

if TYPE_CHECKING:
    from lava_dispatcher.actions.strategy import Strategy

PROJECT = "lava_dispatcher"
hookimpl = pluggy.HookimplMarker(PROJECT)

def new_manager(
    builtins: Sequence[str] = (), *, load_entry_points: bool = True
) -> pluggy.PluginManager:
    """A manager with the hookspecs, the given built-in modules and installed plugins."""
    import importlib

    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(hookspecs)
    for name in builtins:
        manager.register(importlib.import_module(name), name=name)
    if load_entry_points:
        try:
            manager.load_setuptools_entrypoints(PROJECT)
        except Exception as exc:
            raise ConfigurationError(f"cannot load a '{PROJECT}' plugin: {exc}") from exc
    return manager


def _flatten(results: Iterable[Iterable[Any] | None]) -> list[Any]:
    out: list[Any] = []
    for result in results:
        if result:
            out.extend(result)
    return out


def strategies(manager: pluggy.PluginManager) -> list[type[Strategy]]:
    return _flatten(manager.hook.lava_strategies())


def device_type_sources(manager: pluggy.PluginManager) -> list[tuple[str, Path]]:
    """(plugin name, directory) for every device-type directory, built-ins first.

    Built-ins come first so that a plugin cannot silently change a built-in
    device type; ``lava-dispatch devices`` shows a shadowed name as such.
    """
    sources: list[tuple[str, Path]] = []
    # pluggy calls the most recently registered plugin first: reverse that
    for impl in reversed(manager.hook.lava_device_type_dirs.get_hookimpls()):
        directories = cast("Iterable[Any]", impl.function() or ())
        for directory in directories:
            sources.append((impl.plugin_name, Path(directory)))
    return sources


def device_type_dirs(manager: pluggy.PluginManager) -> list[Path]:
    return [directory for _name, directory in device_type_sources(manager)]


def protocols(manager: pluggy.PluginManager) -> list[type[Any]]:
    return _flatten(manager.hook.lava_protocols())


def method_schemas(manager: pluggy.PluginManager) -> dict[tuple[str, str], Any]:
    merged: dict[tuple[str, str], Any] = {}
    for result in manager.hook.lava_method_schemas():
        if isinstance(result, Mapping):
            merged.update(result)
    return merged
