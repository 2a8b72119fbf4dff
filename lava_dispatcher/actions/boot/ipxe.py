"""``boot: method: ipxe``: x86 boards that network-boot with iPXE.

LAVA's ``bootloader-action``: substitute the commands (a named stanza of
the device's ``ipxe`` method, or the job's list), connect, then the retried
``bootloader-retry``: reset, stop iPXE with Ctrl-B (``interrupt_ctrl_list``
of ``constants.ipxe``; iPXE takes no interrupt character), type the
commands, log in. iPXE prints no final message: after ``boot`` the login
waits for the kernel, watching iPXE's error-messages too.

``use_bootscript: true`` in the job: the commands are written to an iPXE
script (``#!ipxe``) next to the kernel in the job's TFTP directory, and the
board is only told ``dhcp net0`` and ``chain tftp://<server>/<dir>/script.ipxe``:
two short lines typed instead of many long ones.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any

from lava_dispatcher.actions.boot.bootloader import (
    BOOT_COMMANDS,
    BootloaderCommandOverlay,
    BootloaderCommandsAction,
    BootloaderInterruptAction,
)
from lava_dispatcher.actions.boot.handover import add_login
from lava_dispatcher.actions.connection import ConnectDevice
from lava_dispatcher.actions.deploy.overlay import dispatcher_ip
from lava_dispatcher.actions.deploy.tftp import job_tftp_directory
from lava_dispatcher.actions.overlay_data import BOOT_FILE
from lava_dispatcher.actions.power import ResetDevice
from lava_dispatcher.actions.strategy import Strategy
from lava_dispatcher.errors import JobError
from lava_dispatcher.pipeline import Action, RetryAction, RunContext
from lava_dispatcher.plugins import hookimpl

SCRIPT_NAME = "script.ipxe"


class IpxeCommandOverlay(BootloaderCommandOverlay):
    """The commands, substituted; with ``use_bootscript``, put in a script the board chains."""

    def run(self, ctx: RunContext) -> None:
        super().run(ctx)
        if not self.parameters.get("use_bootscript"):
            return
        space = ctx.data(self.namespace)
        kernel = space.get(BOOT_FILE, label="kernel", default=None)
        if not kernel:
            raise JobError(
                "use_bootscript needs a tftp deploy with a kernel: the script goes next to it"
            )
        directory = job_tftp_directory(ctx)
        relative = posixpath.join(posixpath.dirname(kernel), SCRIPT_NAME)
        commands = space.get(BOOT_COMMANDS, label=self.method)
        script = directory.root / relative
        script.write_text("#!ipxe\n\n" + "".join(f"{line}\n" for line in commands))
        chained = ["dhcp net0", f"chain tftp://{dispatcher_ip(ctx.job.dispatcher)}/{relative}"]
        space.set(BOOT_COMMANDS, chained, label=self.method)
        ctx.logger.info(f"boot commands written to {relative}; the board runs:")
        for line in chained:
            ctx.logger.info(f"- {line}")
        self.results = {**self.results, "bootscript": relative}


class BootloaderAction(Action):
    name = "bootloader-action"
    description = "interactive bootloader action"
    summary = "pass boot commands"
    section = "boot"

    def populate(self, parameters: Mapping[str, Any]) -> None:
        pipeline = self.new_pipeline(parameters)
        pipeline.add_action(IpxeCommandOverlay("ipxe"))
        pipeline.add_action(ConnectDevice())
        pipeline.add_action(BootloaderRetry())


class BootloaderRetry(RetryAction):
    name = "bootloader-retry"
    description = "interactive uboot retry action"
    summary = "uboot commands with retry"
    section = "boot"

    def populate(self, parameters: Mapping[str, Any]) -> None:
        pipeline = self.new_pipeline(parameters)
        pipeline.add_action(ResetDevice())
        pipeline.add_action(BootloaderInterruptAction("ipxe"))
        pipeline.add_action(BootloaderCommandsAction("ipxe"))
        add_login(pipeline, parameters)


class Ipxe(Strategy):
    section = "boot"
    name = "ipxe"

    @classmethod
    def action(cls, parameters: Mapping[str, Any]) -> Action:
        return BootloaderAction()


@hookimpl
def lava_strategies() -> list[type[Strategy]]:
    return [Ipxe]
