"""``deploy: to: flasher``: download images, then run the device's own flash commands.

The device dictionary lists the commands under
``actions.deploy.methods.flasher.commands``; ``{KEY}`` in them is replaced
by the downloaded file of image ``key`` (upper-cased), relative to the
download directory the commands run in, as in LAVA. The simulated board
uses it: ``lava-dispatch sim flash --control DIR --ramdisk {RAMDISK}``.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

from lava_dispatcher import hostcmd
from lava_dispatcher.actions.deploy.download import DOWNLOADED, DownloaderAction
from lava_dispatcher.actions.deploy.overlay import OverlayAction, needs_overlay
from lava_dispatcher.actions.host import run_device_command
from lava_dispatcher.actions.strategy import Strategy
from lava_dispatcher.errors import InfrastructureError
from lava_dispatcher.pipeline import Action, RetryAction, RunContext
from lava_dispatcher.plugins import hookimpl


class FlasherRetryAction(RetryAction):
    name = "deploy-flasher-retry"
    description = "deploy flasher with retry"
    summary = "deploy custom flasher"
    section = "deploy"

    def populate(self, parameters: Mapping[str, Any]) -> None:
        self.new_pipeline(parameters).add_action(FlasherAction())


class FlasherAction(Action):
    name = "deploy-flasher"
    description = "deploy flasher"
    summary = "deploy custom flasher"
    timeout_exception = InfrastructureError

    def populate(self, parameters: Mapping[str, Any]) -> None:
        pipeline = self.new_pipeline(parameters)
        if needs_overlay(self.settings, str(parameters.get("namespace") or "common")):
            pipeline.add_action(OverlayAction())
        for key, image in (parameters.get("images") or {}).items():
            if image.get("download", True):
                pipeline.add_action(DownloaderAction(key, image))

    def commands(self) -> list[str]:
        method = (self.settings.device.get("actions") or {}).get("deploy", {}).get("methods", {})
        return hostcmd.command_list((method.get("flasher") or {}).get("commands"))

    def validate(self) -> None:
        if not self.commands():
            self.errors.append("the device has no actions.deploy.methods.flasher.commands")

    def run(self, ctx: RunContext) -> None:
        super().run(ctx)
        space = ctx.data(self.namespace)
        substitutions: dict[str, str] = {}
        for key, image in (self.parameters.get("images") or {}).items():
            if image.get("download", True):
                substitutions[f"{{{key.upper()}}}"] = str(space.get(DOWNLOADED, label=key))
            else:
                substitutions[f"{{{key.upper()}}}"] = str(image["url"])
        for command in self.commands():
            # substitute into each argument, never into a string re-split afterwards,
            # so that a value can never become several arguments
            argv = [_substitute(arg, substitutions) for arg in shlex.split(command)]
            run_device_command(ctx, argv, what="Unable to flash the device")
        self.results = {"images": sorted(substitutions)}


def _substitute(text: str, substitutions: Mapping[str, str]) -> str:
    for placeholder, value in substitutions.items():
        text = text.replace(placeholder, value)
    return text


class Flasher(Strategy):
    section = "deploy"
    name = "flasher"

    @classmethod
    def action(cls, parameters: Mapping[str, Any]) -> Action:
        return FlasherRetryAction()


@hookimpl
def lava_strategies() -> list[type[Strategy]]:
    return [Flasher]
