"""What follows a bootloader's commands: the login, or an installer's end.

Shared by the interrupt-and-commands boot methods (u-boot, grub, ipxe,
barebox, depthcharge): after the commands, the job either expects a shell
(prompts or auto_login: log in, maybe unpack the overlay) or, for an
unattended installer (``boot_finished``), waits for its last words and
powers the board off.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lava_dispatcher.actions.boot.transfer import OverlayUnpack
from lava_dispatcher.actions.connection import CONNECTION, current_connection, expect
from lava_dispatcher.actions.login import AutoLoginAction, ExpectShellSession, prompts_of
from lava_dispatcher.actions.power import PowerOff
from lava_dispatcher.pipeline import Action, RunContext


def device_method(action: Action, method: str) -> Mapping[str, Any]:
    """The device's ``actions.boot.methods.<method>`` block ({} when absent)."""
    methods = ((action.settings.device.get("actions") or {}).get("boot") or {}).get("methods")
    block = (methods or {}).get(method)
    return block if isinstance(block, Mapping) else {}


def add_login(pipeline: Any, parameters: Mapping[str, Any]) -> None:
    """After the bootloader: log in and reach the shell, when the job expects one."""
    if prompts_of(parameters) or parameters.get("auto_login"):
        pipeline.add_action(AutoLoginAction(after_bootloader=True))
        pipeline.add_action(ExpectShellSession())
        if "transfer_overlay" in parameters:
            pipeline.add_action(OverlayUnpack())
    elif parameters.get("boot_finished"):
        pipeline.add_action(InstallerWait())
        pipeline.add_action(PowerOff())


class InstallerWait(Action):
    """An installer runs unattended: wait for the job's ``boot_finished`` message."""

    name = "installer-wait"
    description = "installer wait"
    summary = "wait for task to finish match arbitrary string"
    needs = (CONNECTION,)

    def validate(self) -> None:
        if not self.parameters.get("boot_finished"):
            self.errors.append("Missing boot_finished string")

    def run(self, ctx: RunContext) -> None:
        wanted = self.parameters["boot_finished"]
        patterns = [wanted] if isinstance(wanted, str) else [str(w) for w in wanted]
        ctx.logger.debug(
            f"Not expecting a shell, so waiting for boot_finished: {', '.join(patterns)}"
        )
        connection = current_connection(ctx, self)
        found = expect(ctx, self, connection, patterns)
        self.results = {"boot_finished": patterns[found.index]}
