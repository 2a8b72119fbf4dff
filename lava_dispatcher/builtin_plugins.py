"""The dispatcher's own plugins, and the process-wide plugin manager.

This is the composition root: it names the built-in modules (strategies,
device types, result writers), which register through the same hooks as
third-party plugins, the way pytest lists its default plugins. It sits at
the top of the layers, next to the parser and the CLI.
"""

from __future__ import annotations

import functools

import pluggy

from lava_dispatcher.plugins import new_manager

BUILTIN_PLUGINS = (
    "lava_dispatcher.devices",
    "lava_dispatcher.actions.boot.minimal",
    "lava_dispatcher.actions.deploy.overlay",
    "lava_dispatcher.actions.deploy.flasher",
    "lava_dispatcher.actions.deploy.images",
    "lava_dispatcher.actions.boot.qemu",
    "lava_dispatcher.actions.deploy.tftp",
    "lava_dispatcher.actions.boot.u_boot",
    "lava_dispatcher.actions.boot.grub",
    "lava_dispatcher.actions.boot.ipxe",
    "lava_dispatcher.actions.boot.barebox",
    "lava_dispatcher.actions.boot.depthcharge",
    "lava_dispatcher.actions.deploy.fastboot",
    "lava_dispatcher.actions.boot.fastboot",
    "lava_dispatcher.actions.deploy.ssh",
    "lava_dispatcher.actions.boot.ssh",
    "lava_dispatcher.actions.test.shell",
    "lava_dispatcher.actions.test.monitor",
    "lava_dispatcher.actions.test.interactive",
    "lava_dispatcher.actions.command",
    "lava_dispatcher.protocols.multinode",
    "lava_dispatcher.results",
)


@functools.cache
def get_manager() -> pluggy.PluginManager:
    """Built-ins plus installed plugins; one per process (one job per process)."""
    return new_manager(BUILTIN_PLUGINS)
