"""Power control and the end of every job: power on/off, reset, finalize."""

from __future__ import annotations

from typing import Any

from lava_dispatcher.actions.connection import CONNECTION, current_connection
from lava_dispatcher.actions.host import run_device_command
from lava_dispatcher.errors import InfrastructureError, JobError
from lava_dispatcher.hostcmd import command_list
from lava_dispatcher.pipeline import Action, RunContext

#: what LAVA types when a device has no way to be reset but its console
SOFT_REBOOT_COMMANDS = ["reboot", "reboot -n", "reboot -nf"]


def device_commands(action: Action, key: str) -> list[str]:
    commands = action.settings.device.get("commands") or {}
    return command_list(commands.get(key))


class _DeviceCommandAction(Action):
    """Runs one device-dictionary command key, a string or a list."""

    key = ""
    verb = ""
    timeout_exception = InfrastructureError

    def run(self, ctx: RunContext) -> None:
        commands = device_commands(self, self.key)
        if not commands:
            ctx.logger.debug(f"{self.name}: the device has no {self.key} command")
            return
        for command in commands:
            run_device_command(ctx, command, what=f"Unable to {self.verb}")
        self.results = {"status": "success"}


class PowerOn(_DeviceCommandAction):
    name = "power-on"
    description = "supply power to device"
    summary = "send power_on command"
    key = "power_on"
    verb = "power-on"


class PowerOff(_DeviceCommandAction):
    name = "power-off"
    description = "discontinue power to device"
    summary = "send power_off command"
    key = "power_off"
    verb = "power-off"
    default_timeout = 10.0


class PDUReboot(_DeviceCommandAction):
    name = "pdu-reboot"
    description = "issue commands to a PDU to power cycle a device"
    summary = "hard reboot using PDU"
    key = "hard_reset"
    verb = "reboot"


class PrePower(_DeviceCommandAction):
    name = "pre-power-command"
    description = "issue pre power command"
    summary = "send pre-power-command"
    key = "pre_power_command"
    verb = "run pre-power command"


class PreOs(_DeviceCommandAction):
    name = "pre-os-command"
    description = "issue pre os command"
    summary = "send pre-os-command"
    key = "pre_os_command"
    verb = "run pre-os command"


class PowerCycle(Action):
    """Power off then on, for devices that have power commands but no hard_reset."""

    name = "power-cycle"
    description = "power the device off then on"
    summary = "power cycle with power_off and power_on"
    timeout_exception = InfrastructureError

    def populate(self, parameters: Any) -> None:
        pipeline = self.new_pipeline(parameters)
        pipeline.add_action(PowerOff())
        pipeline.add_action(PowerOn())


class SendRebootCommands(Action):
    """Reboot over the console, for devices with no power control at all."""

    name = "send-reboot-commands"
    description = "Issue a reboot command on the device"
    summary = "Issue a reboot command on the device"

    def run(self, ctx: RunContext) -> None:
        commands = command_list(self.parameters.get("soft_reboot")) or device_commands(
            self, "soft_reboot"
        )
        if not commands:
            ctx.logger.warning("No soft reboot command defined in the test job. Using defaults.")
            commands = SOFT_REBOOT_COMMANDS
        connection = current_connection(ctx, self)
        message = (self.parameters.get("parameters") or {}).get(
            "shutdown-message"
        ) or self.get_constant("shutdown-message")
        for command in commands:
            connection.shell.sendline(command, delay=self.character_delay)
        if message:
            try:
                connection.shell.expect([message], timeout=ctx.remaining())
            except Exception as exc:
                raise JobError(f"Soft reboot failed: {exc}") from exc
        self.results = {"commands": commands}


class ResetDevice(Action):
    """hard_reset if the device has one, else power off+on, else reboot over the console."""

    name = "reset-device"
    description = "reboot or power-cycle the device"
    summary = "reboot the device"

    def populate(self, parameters: Any) -> None:
        pipeline = self.new_pipeline(parameters)
        if device_commands(self, "hard_reset"):
            pipeline.add_action(PDUReboot())
        elif device_commands(self, "power_on"):
            pipeline.add_action(PowerCycle())
        else:
            pipeline.add_action(SendRebootCommands())


class ReadFeedback(Action):
    """Close every namespace's console.

    LAVA listens to each console for a second here, because its consoles are
    read only during expect. Ours are read all the time, so whatever the DUT
    printed is already in the log: closing is enough.
    """

    name = "read-feedback"
    description = "Check for messages on all other namespaces"
    summary = "Read from other namespaces"

    def run(self, ctx: RunContext) -> None:
        for namespace in ctx.data.namespaces():
            connection = ctx.data(namespace).pop(CONNECTION)
            if connection is not None and not connection.closed:
                ctx.logger.info(f"Finalising connection for namespace '{namespace}'")
                connection.close()


class FinalizeAction(Action):
    """Always the last top-level action: power off, close consoles, release everything.

    If the job failed before reaching it, the job runs it after cleanup.
    """

    name = "finalize"
    section = "finalize"
    description = "finish the process and cleanup"
    summary = "finalize the job"
    default_timeout = 30.0

    def __init__(self) -> None:
        super().__init__()
        self.ran = False

    def populate(self, parameters: Any) -> None:
        pipeline = self.new_pipeline(parameters)
        pipeline.add_action(PowerOff())
        pipeline.add_action(ReadFeedback())

    def run(self, ctx: RunContext) -> None:
        self.ran = True
        try:
            super().run(ctx)
        finally:
            failed = ctx.run_finalizers()
            if failed:
                raise InfrastructureError(f"failed to release: {', '.join(failed)}")
