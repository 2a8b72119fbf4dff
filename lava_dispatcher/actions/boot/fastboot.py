"""``boot: method: fastboot``: boot what was flashed (or a boot image) with fastboot.

LAVA's ``fastboot-boot`` (retried as one unit): the job's ``commands``
(``fastboot-boot-commands``: each entry is split into arguments for one
``fastboot -s SERIAL ...``, e.g. ``--set-active=a``), then the board is put in
fastboot mode (``hard_reset``: connect its console and reset it; otherwise
``enter-fastboot-action``), then the device's boot sequence, its
``actions.boot.methods.fastboot`` list:

- ``boot``, ``no-flash-boot``: ``boot-fastboot``, ``fastboot boot <the deployed
  boot image>`` (the image labelled ``boot`` in the deploy);
- ``reboot``: ``fastboot-reboot``, ``fastboot reboot`` (the flashed system);
- ``auto-login``, ``shell-session``, ``overlay-unpack``: those steps;

each fastboot step after ``wait-device-boardid``. Then the pre-OS command,
and with ``prompts`` or ``auto_login`` the login on the console, the shell
prompt, and the overlay delivered by ``transfer_overlay``.

Where we differ from LAVA: no adb (LAVA ends a board without hard_reset with
an adb connection and pushes the overlay over it; here such a board needs a
console for a test shell, and validation says so); fastboot runs on the
worker (a ``docker:`` block is reported and ignored); ``wait-device-boardid``
comes only before the steps that talk fastboot; ``export-env`` in a sequence
is accepted and does nothing, as we have no ``export-device-env``.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

from lava_dispatcher.actions.boot.transfer import OverlayUnpack
from lava_dispatcher.actions.connection import ConnectDevice, console_spec
from lava_dispatcher.actions.deploy.download import DOWNLOADED
from lava_dispatcher.actions.deploy.fastboot import (
    EnterFastbootAction,
    FastbootCommandAction,
    FastbootReboot,
    WaitFastbootDevice,
    boot_sequence,
    device_errors,
    finished_line,
    run_fastboot,
)
from lava_dispatcher.actions.login import AutoLoginAction, ExpectShellSession, prompts_of
from lava_dispatcher.actions.power import PreOs, ResetDevice, device_commands
from lava_dispatcher.actions.strategy import Strategy
from lava_dispatcher.errors import ConfigurationError, JobError
from lava_dispatcher.pipeline import Action, RetryAction, RunContext
from lava_dispatcher.plugins import hookimpl

#: the steps a device's fastboot boot sequence may name
SEQUENCE_STEPS = (
    "boot", "reboot", "no-flash-boot", "auto-login", "overlay-unpack", "shell-session", "export-env",
)  # fmt: skip


def _has_console(device: Mapping[str, Any]) -> bool:
    try:
        console_spec(device)
    except ConfigurationError:
        return False
    return True


class BootFastbootCommands(FastbootCommandAction):
    name = "fastboot-boot-commands"
    description = "Run custom fastboot commands before boot"
    summary = "Run fastboot boot commands"

    def validate(self) -> None:
        for command in self.parameters.get("commands") or []:
            try:
                if not shlex.split(str(command)):
                    self.errors.append("commands: an empty fastboot command")
            except ValueError as exc:
                self.errors.append(f"commands: {command!r} cannot be split into arguments: {exc}")

    def run(self, ctx: RunContext) -> None:
        ctx.logger.info("Running custom fastboot boot commands....")
        done = []
        for command in self.parameters.get("commands") or []:
            run_fastboot(ctx, self, shlex.split(str(command)), what=f"fastboot command {command!r}")
            done.append(str(command))
        self.results = {"commands": done}


class FastbootBootAction(FastbootCommandAction):
    """``fastboot boot <boot image>``: boot the deployed image without flashing it."""

    name = "boot-fastboot"
    description = "fastboot boot into system"
    summary = "attempt to fastboot boot"

    def run(self, ctx: RunContext) -> None:
        image = ctx.data(self.namespace).get(DOWNLOADED, label="boot", default=None)
        if image is None:
            raise JobError(
                "the device boots with 'fastboot boot <image>': the deploy needs an image "
                "named 'boot' (images: {boot: {url: ...}})"
            )
        result = run_fastboot(ctx, self, ["boot", str(image)], what="Unable to boot with fastboot")
        self.results = {"status": finished_line(result.output) or "booted"}


class BootFastbootAction(RetryAction):
    name = "fastboot-boot"
    description = "fastboot boot into the system"
    summary = "fastboot boot"
    section = "boot"

    def populate(self, parameters: Mapping[str, Any]) -> None:
        pipeline = self.new_pipeline(parameters)
        device = self.settings.device
        if parameters.get("commands"):
            pipeline.add_action(BootFastbootCommands())
        hard_reset = bool(device_commands(self, "hard_reset"))
        if hard_reset:
            pipeline.add_action(ConnectDevice())
            pipeline.add_action(ResetDevice())
        else:
            if _has_console(device):
                pipeline.add_action(ConnectDevice())  # before the boot: nothing is missed
            pipeline.add_action(EnterFastbootAction())
        sequence = boot_sequence(device)
        steps = [str(step) for step in sequence] if isinstance(sequence, list) else []
        for step in steps:
            if step in ("boot", "no-flash-boot"):
                pipeline.add_action(WaitFastbootDevice())
                pipeline.add_action(FastbootBootAction())
            elif step == "reboot":
                pipeline.add_action(WaitFastbootDevice())
                pipeline.add_action(FastbootReboot())
            elif step == "auto-login":
                pipeline.add_action(AutoLoginAction())
            elif step == "overlay-unpack":
                pipeline.add_action(OverlayUnpack())
            elif step == "shell-session":
                pipeline.add_action(ExpectShellSession())
        if hard_reset:
            pipeline.add_action(PreOs())
        if (prompts_of(parameters) or parameters.get("auto_login")) and "auto-login" not in steps:
            pipeline.add_action(AutoLoginAction())
            pipeline.add_action(ExpectShellSession())
            if "transfer_overlay" in parameters:
                pipeline.add_action(OverlayUnpack())

    def run(self, ctx: RunContext) -> None:
        if self.parameters.get("docker"):
            ctx.logger.warning("docker: ignored, fastboot runs on the worker itself")
        super().run(ctx)

    def validate(self) -> None:
        device = self.settings.device
        self.errors.extend(device_errors(device))
        sequence = boot_sequence(device)
        if not isinstance(sequence, list):
            self.errors.append(
                "fastboot_sequence undefined: the device's actions.boot.methods.fastboot must "
                f"list the boot sequence (e.g. [boot] or [reboot]), not {sequence!r}"
            )
        else:
            for step in sequence:
                if step not in SEQUENCE_STEPS:
                    self.errors.append(
                        f"Unknown boot sequence '{step}'; expected one of {', '.join(SEQUENCE_STEPS)}"
                    )
        wants_shell = prompts_of(self.parameters) or self.parameters.get("auto_login")
        if wants_shell and not _has_console(device):
            self.errors.append(
                "the device has no console to log in on (commands.connect or connections); "
                "a login over adb is not supported by this dispatcher"
            )


class BootFastboot(Strategy):
    section = "boot"
    name = "fastboot"

    @classmethod
    def action(cls, parameters: Mapping[str, Any]) -> Action:
        return BootFastbootAction()


@hookimpl
def lava_strategies() -> list[type[Strategy]]:
    return [BootFastboot]
