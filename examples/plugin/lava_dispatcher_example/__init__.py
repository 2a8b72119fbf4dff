"""An example lava_dispatcher plugin: one boot method and one device type.

How it plugs in: ``setup.cfg`` names this module in the entry-point group
``lava_dispatcher``; the dispatcher then calls the ``@hookimpl`` functions
below like those of its own built-in modules.

- ``lava_strategies`` adds :class:`ButtonBoot`, the strategy that accepts
  ``boot: method: button-boot`` on devices whose type lists the method;
- ``lava_method_schemas`` tells job validation which keys the method takes;
- ``lava_device_type_dirs`` adds ``devices/button-board.yaml``.

The boot itself reuses the dispatcher's actions (connect, power, login) and
adds one of its own, :class:`PressButton`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lava_dispatcher.actions.connection import ConnectDevice, current_connection, expect
from lava_dispatcher.actions.host import run_device_command
from lava_dispatcher.actions.login import AutoLoginAction, ExpectShellSession
from lava_dispatcher.actions.power import device_commands
from lava_dispatcher.actions.strategy import Strategy
from lava_dispatcher.errors import ConfigurationError
from lava_dispatcher.pipeline import Action, RetryAction, RunContext
from lava_dispatcher.plugins import hookimpl


class PressButton(Action):
    """Press the power button (the device's power_on command) and wait for the banner."""

    name = "press-button"
    description = "press the board's power button and wait for its banner"
    summary = "press the power button"

    def validate(self) -> None:
        if not device_commands(self, "power_on"):
            raise ConfigurationError("button-boot needs a power_on command on the device")

    def run(self, ctx: RunContext) -> None:
        connection = current_connection(ctx, self)
        for command in device_commands(self, "power_off") + device_commands(self, "power_on"):
            run_device_command(ctx, command, what="press the power button")
        settings = self.settings.device["actions"]["boot"]["methods"]["button-boot"]
        banner = self.parameters.get("banner") or settings["parameters"]["banner"]
        match = expect(ctx, self, connection, [banner])
        self.results = {"banner": match.after}


class ButtonBootAction(RetryAction):
    name = "button-boot"
    description = "boot a board with its power button, then log in"
    summary = "button boot"
    section = "boot"

    def populate(self, parameters: Mapping[str, Any]) -> None:
        pipeline = self.new_pipeline(parameters)
        pipeline.add_action(ConnectDevice())
        pipeline.add_action(PressButton())
        # the banner is already consumed: log in without waiting for it again
        pipeline.add_action(AutoLoginAction(booting=False))
        pipeline.add_action(ExpectShellSession())


class ButtonBoot(Strategy):
    section = "boot"
    name = "button-boot"

    @classmethod
    def action(cls, parameters: Mapping[str, Any]) -> Action:
        return ButtonBootAction()


@hookimpl
def lava_strategies() -> list[type[Strategy]]:
    return [ButtonBoot]


@hookimpl
def lava_method_schemas() -> dict[tuple[str, str], dict[Any, Any]]:
    from voluptuous import Optional, Required

    return {
        ("boot", "button-boot"): {
            Required("method"): "button-boot",
            Optional("banner"): str,
            Optional("prompts"): [str],
            Optional("auto_login"): dict,
        }
    }


@hookimpl
def lava_device_type_dirs() -> list[Path]:
    return [Path(__file__).resolve().parent / "devices"]
