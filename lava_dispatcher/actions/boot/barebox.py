"""``boot: method: barebox``.

LAVA's ``barebox-action``: substitute the commands (a named stanza of the
device's ``barebox`` method, usually ``bootm -v -r /mnt/tftp/{RAMDISK} -o
/mnt/tftp/{DTB} /mnt/tftp/{KERNEL}``, or the job's list), connect, then the
retried ``barebox-retry``: reset, stop the autoboot countdown (a newline,
per ``constants.barebox``), type the commands, wait for the final message
('Starting kernel'), log in. barebox's ``ERROR: ...`` lines end the boot at
once, quoted.
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
from lava_dispatcher.pipeline import Action, RetryAction
from lava_dispatcher.plugins import hookimpl


class BareboxAction(Action):
    name = "barebox-action"
    description = "interactive barebox action"
    summary = "pass barebox commands"
    section = "boot"

    def populate(self, parameters: Mapping[str, Any]) -> None:
        pipeline = self.new_pipeline(parameters)
        pipeline.add_action(BootloaderCommandOverlay("barebox"))
        pipeline.add_action(ConnectDevice())
        pipeline.add_action(BareboxRetry())


class BareboxRetry(RetryAction):
    name = "barebox-retry"
    description = "interactive barebox retry action"
    summary = "barebox commands with retry"
    section = "boot"

    def populate(self, parameters: Mapping[str, Any]) -> None:
        pipeline = self.new_pipeline(parameters)
        pipeline.add_action(ResetDevice())
        pipeline.add_action(BootloaderInterruptAction("barebox"))
        pipeline.add_action(BootloaderCommandsAction("barebox"))
        add_login(pipeline, parameters)


class Barebox(Strategy):
    section = "boot"
    name = "barebox"

    @classmethod
    def action(cls, parameters: Mapping[str, Any]) -> Action:
        return BareboxAction()


@hookimpl
def lava_strategies() -> list[type[Strategy]]:
    return [Barebox]
