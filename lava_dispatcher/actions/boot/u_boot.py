"""``boot: method: u-boot`` and ``boot: method: bootloader``.

u-boot (LAVA's ``uboot-action``): substitute the commands, connect, then
``uboot-commands``: reset the board (unless ``reset: false``), interrupt
autoboot, type the commands, wait for the final message, log in.
bootloader: the same without the login (``bootloader: <method>`` names the
device method whose prompt and constants are used), to leave the board at
its bootloader for interactive tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lava_dispatcher.actions.boot.bootloader import (
    BootloaderCommandOverlay,
    BootloaderCommandsAction,
    BootloaderInterruptAction,
)
from lava_dispatcher.actions.boot.handover import add_login
from lava_dispatcher.actions.connection import ConnectDevice
from lava_dispatcher.actions.power import ResetDevice
from lava_dispatcher.actions.strategy import Strategy
from lava_dispatcher.devices import Device
from lava_dispatcher.pipeline import Action, RetryAction
from lava_dispatcher.plugins import hookimpl


class UBootAction(RetryAction):
    name = "uboot-action"
    description = "interactive uboot action"
    summary = "pass uboot commands"
    section = "boot"

    def populate(self, parameters: Mapping[str, Any]) -> None:
        pipeline = self.new_pipeline(parameters)
        pipeline.add_action(BootloaderCommandOverlay("u-boot"))
        pipeline.add_action(ConnectDevice())
        pipeline.add_action(UBootCommandsAction())


class UBootCommandsAction(Action):
    name = "uboot-commands"
    description = "interactive uboot commands action"
    summary = "uboot commands"

    def populate(self, parameters: Mapping[str, Any]) -> None:
        pipeline = self.new_pipeline(parameters)
        if parameters.get("reset", True) is not False:
            pipeline.add_action(ResetDevice())
        pipeline.add_action(BootloaderInterruptAction("u-boot"))
        pipeline.add_action(BootloaderCommandsAction("u-boot"))
        add_login(pipeline, parameters)


class BootBootloaderRetry(RetryAction):
    name = "boot-bootloader-retry"
    description = "boot to bootloader with retry"
    summary = "boot bootloader retry"
    section = "boot"

    def populate(self, parameters: Mapping[str, Any]) -> None:
        method = str(parameters.get("bootloader") or "")
        pipeline = self.new_pipeline(parameters)
        pipeline.add_action(BootloaderCommandOverlay(method))
        pipeline.add_action(BootBootloaderAction())

    def validate(self) -> None:
        if not self.parameters.get("bootloader"):
            self.errors.append(
                "method: bootloader needs 'bootloader', the device method to use (e.g. u-boot)"
            )


class BootBootloaderAction(Action):
    name = "boot-bootloader"
    description = "boot to bootloader"
    summary = "boot bootloader"

    def populate(self, parameters: Mapping[str, Any]) -> None:
        method = str(parameters.get("bootloader") or "")
        pipeline = self.new_pipeline(parameters)
        pipeline.add_action(ConnectDevice())
        if parameters.get("reset", True) is not False:
            pipeline.add_action(ResetDevice())
        pipeline.add_action(BootloaderInterruptAction(method))
        pipeline.add_action(BootloaderCommandsAction(method, expect_final=False))


class UBoot(Strategy):
    section = "boot"
    name = "u-boot"

    @classmethod
    def action(cls, parameters: Mapping[str, Any]) -> Action:
        return UBootAction()


class Bootloader(Strategy):
    section = "boot"
    name = "bootloader"
    needs_device_method = False

    @classmethod
    def accepts(cls, device: Device, parameters: Mapping[str, Any]) -> tuple[bool, str]:
        accepted, why = super().accepts(device, parameters)
        if not accepted:
            return accepted, why
        wanted = str(parameters.get("bootloader") or "")
        if not device.has_method("boot", wanted):
            return False, f"device {device.hostname!r} has no {wanted!r} boot method"
        return True, ""

    @classmethod
    def action(cls, parameters: Mapping[str, Any]) -> Action:
        return BootBootloaderRetry()


@hookimpl
def lava_strategies() -> list[type[Strategy]]:
    return [UBoot, Bootloader]
