"""``boot: method: grub`` and ``boot: method: grub-efi``.

LAVA's ``grub-main-action`` (retried as one unit): substitute the commands
(a named stanza of the device's ``grub`` or ``grub-efi`` method, or the
job's list), connect, reset the board, stop GRUB's menu countdown (``c``
for its command line, per ``constants.grub``), type the commands, then log
in. GRUB prints no final message: after ``boot`` the login waits for the
kernel, watching GRUB's error-messages too. A stanza that installs an OS
and ends without a shell (``boot_finished`` in the job, no prompts) waits
for that message and powers the board off (``installer-wait``).

grub-efi uses the ``grub-efi`` method and constants; a device may keep the
board powered (``reset_device: false`` in its grub-efi method).

Not supported (a clear refusal, not a failure half-way): boot sequences
(the device's ``grub.sequence``, boards that reach GRUB through fastboot),
the UEFI menu selection some grub-efi devices need first (``menu_options``),
and the secondary media of installed systems (``{ROOT}``, ``{ROOT_PART}``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lava_dispatcher.actions.boot.bootloader import (
    BootloaderCommandOverlay,
    BootloaderCommandsAction,
    BootloaderInterruptAction,
)
from lava_dispatcher.actions.boot.handover import add_login, device_method
from lava_dispatcher.actions.connection import ConnectDevice
from lava_dispatcher.actions.power import ResetDevice
from lava_dispatcher.actions.strategy import Strategy
from lava_dispatcher.devices import Device
from lava_dispatcher.pipeline import Action, RetryAction
from lava_dispatcher.plugins import hookimpl


class GrubMainAction(RetryAction):
    name = "grub-main-action"
    description = "main grub boot action"
    summary = "run grub boot from power to system"
    section = "boot"

    def populate(self, parameters: Mapping[str, Any]) -> None:
        method = str(parameters.get("method") or "grub")
        pipeline = self.new_pipeline(parameters)
        pipeline.add_action(BootloaderCommandOverlay(method))
        pipeline.add_action(ConnectDevice())
        if parameters.get("reset", True) is not False and (
            method == "grub" or device_method(self, method).get("reset_device", True) is not False
        ):
            pipeline.add_action(ResetDevice())
        pipeline.add_action(BootloaderInterruptAction(method))
        pipeline.add_action(BootloaderCommandsAction(method))
        add_login(pipeline, parameters)

    def validate(self) -> None:
        method = str(self.parameters.get("method") or "grub")
        if method == "grub-efi" and device_method(self, method).get("menu_options"):
            self.errors.append(
                "the device's grub-efi method selects a UEFI menu entry first "
                f"(menu_options: {device_method(self, method)['menu_options']!r}): the UEFI "
                "menu is not supported; boards that start GRUB directly are"
            )


class Grub(Strategy):
    section = "boot"
    name = "grub"

    @classmethod
    def accepts(cls, device: Device, parameters: Mapping[str, Any]) -> tuple[bool, str]:
        accepted, why = super().accepts(device, parameters)
        if not accepted:
            return accepted, why
        grub = device.method("boot", "grub")
        if isinstance(grub, Mapping) and "sequence" in grub:
            return False, (
                f"device {device.hostname!r} boots grub through a sequence "
                f"({', '.join(map(str, grub['sequence'] or []))}): grub sequences are not supported"
            )
        return True, ""

    @classmethod
    def action(cls, parameters: Mapping[str, Any]) -> Action:
        return GrubMainAction()


class GrubEfi(Grub):
    name = "grub-efi"


@hookimpl
def lava_strategies() -> list[type[Strategy]]:
    return [Grub, GrubEfi]
