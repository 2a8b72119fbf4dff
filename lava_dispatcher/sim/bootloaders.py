"""Which module simulates which bootloader (`--bootloader NAME`).

Each is a `loader.Firmware` subclass (the `SimDUT` bootloader factory);
modules are imported only for the bootloader a board has.
"""

from __future__ import annotations

import importlib

from lava_dispatcher.sim.config import BOOTLOADERS, SimConfig
from lava_dispatcher.sim.dut import BootloaderFactory

#: --bootloader name -> "module:class"
FIRMWARE = {
    "u-boot": "lava_dispatcher.sim.uboot:UBoot",
    "grub": "lava_dispatcher.sim.grub:Grub",
    "ipxe": "lava_dispatcher.sim.ipxe:Ipxe",
    "barebox": "lava_dispatcher.sim.barebox:Barebox",
    "depthcharge": "lava_dispatcher.sim.depthcharge:Depthcharge",
}
assert set(FIRMWARE) == set(BOOTLOADERS)


def bootloader_factory(config: SimConfig) -> BootloaderFactory | None:
    """The `SimDUT` bootloader hook for `config.bootloader` (None: no bootloader)."""
    if config.bootloader is None:
        return None
    module, _, name = FIRMWARE[config.bootloader].partition(":")
    firmware: BootloaderFactory = getattr(importlib.import_module(module), name)(config)
    return firmware
