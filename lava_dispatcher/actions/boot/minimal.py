"""``boot: method: minimal``: connect, power-cycle, log in. No bootloader interaction."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lava_dispatcher.actions.boot.transfer import OverlayUnpack
from lava_dispatcher.actions.connection import ConnectDevice
from lava_dispatcher.actions.login import AutoLoginAction, ExpectShellSession, prompts_of
from lava_dispatcher.actions.power import PreOs, PrePower, ResetDevice
from lava_dispatcher.actions.strategy import Strategy
from lava_dispatcher.pipeline import Action, RetryAction
from lava_dispatcher.plugins import hookimpl


class MinimalBoot(RetryAction):
    name = "minimal-boot"
    description = "connect and reset device"
    summary = "connect and reset device"
    section = "boot"

    def populate(self, parameters: Mapping[str, Any]) -> None:
        pipeline = self.new_pipeline(parameters)
        pipeline.add_action(ConnectDevice())
        if parameters.get("pre_power_command"):
            pipeline.add_action(PrePower())
        if parameters.get("pre_os_command"):
            pipeline.add_action(PreOs())
        if parameters.get("reset", True):
            pipeline.add_action(ResetDevice())
        if prompts_of(parameters) or parameters.get("auto_login"):
            pipeline.add_action(AutoLoginAction())
            pipeline.add_action(ExpectShellSession())
            if "transfer_overlay" in parameters:
                pipeline.add_action(OverlayUnpack())


class Minimal(Strategy):
    section = "boot"
    name = "minimal"

    @classmethod
    def action(cls, parameters: Mapping[str, Any]) -> Action:
        return MinimalBoot()


@hookimpl
def lava_strategies() -> list[type[Strategy]]:
    return [Minimal]
