"""``boot: method: depthcharge``: Chromebooks with the netboot build of Depthcharge.

LAVA's ``depthcharge-action``: ``depthcharge-overlay`` writes the kernel
command line (the ``cmdline`` of the device's stanza, substituted, plus the
job's ``extra_kernel_args``) to a file ``cmdline`` next to the kernel in the
job's TFTP directory, and fills in the stanza's commands, typically
``tftpboot {SERVER_IP} {DEPTHCHARGE_KERNEL} {CMDLINE} {DEPTHCHARGE_RAMDISK}``
(a missing ramdisk leaves its place empty). Then the retried
``depthcharge-retry``: connect, reset, wait for the device's
``start_message`` (Depthcharge has no countdown to interrupt: it waits at
its prompt), type the commands, wait for the final message, log in.

Not supported: FIT images (LAVA's ``prepare-fit`` for arm boards, made with
mkimage at deploy time): ``{DEPTHCHARGE_KERNEL}`` is the deployed kernel.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

from lava_dispatcher.actions.boot.bootloader import (
    BOOT_COMMANDS,
    BootloaderCommandOverlay,
    BootloaderCommandsAction,
    method_parameters,
    substitute,
)
from lava_dispatcher.actions.boot.handover import add_login, device_method
from lava_dispatcher.actions.connection import CONNECTION, ConnectDevice, current_connection, expect
from lava_dispatcher.actions.deploy.tftp import job_tftp_directory
from lava_dispatcher.actions.power import ResetDevice
from lava_dispatcher.actions.strategy import Strategy
from lava_dispatcher.errors import InfrastructureError
from lava_dispatcher.pipeline import Action, RetryAction, RunContext
from lava_dispatcher.plugins import hookimpl

CMDLINE_FILE = "cmdline"


def fill(commands: Sequence[str], values: Mapping[str, str | None]) -> list[str]:
    """Put in ``values``: an empty value just removes its placeholder, None drops the line."""
    result = []
    for line in commands:
        keys = [key for key in values if key in line]
        if any(values[key] is None for key in keys):
            continue
        for key in keys:
            line = line.replace(key, values[key] or "")
        result.append(line.rstrip() if keys else line)
    return result


class DepthchargeCommandOverlay(BootloaderCommandOverlay):
    """The commands, and the kernel command line as a file the board fetches by TFTP."""

    name = "depthcharge-overlay"

    def __init__(self) -> None:
        super().__init__("depthcharge")
        self.cmdline = ""

    def validate(self) -> None:
        super().validate()
        wanted = self.parameters.get("commands")
        if isinstance(wanted, str):
            stanza = device_method(self, self.method).get(wanted)
            if isinstance(stanza, Mapping):
                if "cmdline" not in stanza:
                    self.errors.append(f"No cmdline found in {wanted}")
                self.cmdline = str(stanza.get("cmdline") or "")

    def run(self, ctx: RunContext) -> None:
        subs = self.substitutions(ctx)
        kernel = subs.get("{KERNEL}")
        cmdline_file = self.write_cmdline(ctx, kernel, subs) if kernel else None
        if not kernel:
            ctx.logger.info("Skipping creating cmdline file as kernel is not defined")
        own: dict[str, str | None] = {
            "{CMDLINE}": cmdline_file,
            "{DEPTHCHARGE_KERNEL}": kernel,
            "{DEPTHCHARGE_RAMDISK}": subs.get("{RAMDISK}") or "",
        }
        commands = substitute(fill(self.commands, own), subs)
        ctx.data(self.namespace).set(BOOT_COMMANDS, commands, label=self.method)
        ctx.logger.info("Parsed boot commands:")
        for command in commands:
            ctx.logger.info(f"- {command}")

    def write_cmdline(self, ctx: RunContext, kernel: str, subs: Mapping[str, str | None]) -> str:
        """Write the command line next to the kernel; return its name for TFTP."""
        cmdline = self.cmdline
        for key, value in subs.items():
            if value:
                cmdline = cmdline.replace(key, value)
        extra = self.parameters.get("extra_kernel_args")
        if extra:
            cmdline = f"{cmdline} {extra}"
        relative = posixpath.join(posixpath.dirname(kernel), CMDLINE_FILE)
        (job_tftp_directory(ctx).root / relative).write_text(cmdline)
        ctx.logger.debug(f"kernel command line in {relative}: {cmdline}")
        self.results = {"cmdline": cmdline}
        return relative


class DepthchargeStart(Action):
    """Wait for Depthcharge to start: it then sits at its prompt, nothing to interrupt."""

    name = "depthcharge-start"
    description = "wait for Depthcharge to start"
    summary = "Depthcharge start"
    timeout_exception = InfrastructureError
    default_timeout = 180.0
    needs = (CONNECTION,)

    def validate(self) -> None:
        if not method_parameters(self, "depthcharge").get("start_message"):
            self.errors.append(
                "Missing Depthcharge start message for device "
                "(actions.boot.methods.depthcharge.parameters.start_message)"
            )

    def run(self, ctx: RunContext) -> None:
        message = str(method_parameters(self, "depthcharge")["start_message"])
        expect(ctx, self, current_connection(ctx, self), [message])


class DepthchargeAction(Action):
    name = "depthcharge-action"
    description = "interactive Depthcharge action"
    summary = "sets up boot with Depthcharge"
    section = "boot"

    def populate(self, parameters: Mapping[str, Any]) -> None:
        pipeline = self.new_pipeline(parameters)
        pipeline.add_action(DepthchargeCommandOverlay())
        pipeline.add_action(DepthchargeRetry())


class DepthchargeRetry(RetryAction):
    name = "depthcharge-retry"
    description = "interactive depthcharge retry action"
    summary = "depthcharge commands with retry"
    section = "boot"

    def populate(self, parameters: Mapping[str, Any]) -> None:
        pipeline = self.new_pipeline(parameters)
        pipeline.add_action(ConnectDevice())
        pipeline.add_action(ResetDevice())
        pipeline.add_action(DepthchargeStart())
        pipeline.add_action(BootloaderCommandsAction("depthcharge"))
        add_login(pipeline, parameters)


class Depthcharge(Strategy):
    section = "boot"
    name = "depthcharge"

    @classmethod
    def action(cls, parameters: Mapping[str, Any]) -> Action:
        return DepthchargeAction()


@hookimpl
def lava_strategies() -> list[type[Strategy]]:
    return [Depthcharge]
