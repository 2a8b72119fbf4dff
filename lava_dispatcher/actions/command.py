"""``command: {name: X}``: a command run on the worker, from the device dictionary.

X is a built-in device command (``power_on``, ``hard_reset``...) or one of
``commands.users``; a user command's ``undo`` runs at cleanup if its ``do``
ran. Commands come from the device dictionary, never from the job, so a job
can only choose among what the lab admin allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lava_dispatcher.actions.host import run_device_command
from lava_dispatcher.actions.strategy import Strategy
from lava_dispatcher.devices import Device
from lava_dispatcher.errors import InfrastructureError
from lava_dispatcher.hostcmd import command_list
from lava_dispatcher.pipeline import Action, RunContext
from lava_dispatcher.plugins import hookimpl

BUILTIN_COMMANDS = (
    "hard_reset",
    "power_on",
    "power_off",
    "pre_power_command",
    "pre_os_command",
    "recovery_mode",
    "recovery_exit",
)


def _commands(device: Mapping[str, Any]) -> Mapping[str, Any]:
    return device.get("commands") or {}


class CommandAction(Action):
    name = "user-command"
    description = "execute one of the commands listed by the admin"
    summary = "execute commands"
    section = "command"
    timeout_exception = InfrastructureError

    def __init__(self) -> None:
        super().__init__()
        self.ran_do = False

    def _lookup(self) -> tuple[list[str], list[str]]:
        command = str(self.parameters.get("name"))
        commands = _commands(self.settings.device)
        if command in BUILTIN_COMMANDS:
            return command_list(commands.get(command)), []
        user = (commands.get("users") or {}).get(command) or {}
        return command_list(user.get("do")), command_list(user.get("undo"))

    def validate(self) -> None:
        command = self.parameters.get("name")
        commands = _commands(self.settings.device)
        users = commands.get("users") or {}
        if command in BUILTIN_COMMANDS:
            if not commands.get(command):
                self.errors.append(f"command {command!r} is not defined for this device")
            return
        if command not in users:
            known = ", ".join(sorted([*users, *(c for c in BUILTIN_COMMANDS if commands.get(c))]))
            self.errors.append(
                f"unknown user command {command!r}; the device offers: {known or 'none'}"
            )
        elif not (users[command] or {}).get("do"):
            self.errors.append(f"user command {command!r} has no 'do' command")

    def run(self, ctx: RunContext) -> None:
        do, _undo = self._lookup()
        name = self.parameters.get("name")
        for command in do:
            self.ran_do = True
            run_device_command(ctx, command, what=f"command {name!r}")
        self.results = {"success": name}

    def cleanup(self, ctx: RunContext) -> None:
        _do, undo = self._lookup()
        if not (self.ran_do and undo):
            return
        self.ran_do = False
        for command in undo:
            run_device_command(ctx, command, what=f"undo of command {self.parameters.get('name')!r}")


class Command(Strategy):
    section = "command"
    name = "command"

    @classmethod
    def accepts(cls, device: Device, parameters: Mapping[str, Any]) -> tuple[bool, str]:
        return ("name" in parameters, "" if "name" in parameters else "the block has no 'name'")

    @classmethod
    def action(cls, parameters: Mapping[str, Any]) -> Action:
        return CommandAction()


@hookimpl
def lava_strategies() -> list[type[Strategy]]:
    return [Command]
