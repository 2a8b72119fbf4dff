"""``deploy: to: ssh``: build the overlay for a machine reached over ssh.

LAVA's ``scp-overlay``: the overlay (``lava-overlay``) is built and packed
here, on the worker only; ``boot: method: ssh`` copies it to the machine
(``scp-deploy``) and unpacks it there once logged in. The machine is
already installed: ``firmware``, ``kernel``, ``rootfs`` and ``modules``,
which LAVA's schema accepts and LAVA downloads without using them, are
noted in the log and not downloaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lava_dispatcher.actions.deploy.overlay import OverlayAction
from lava_dispatcher.actions.overlay_data import OVERLAY_FILE
from lava_dispatcher.actions.strategy import Strategy
from lava_dispatcher.pipeline import Action, RunContext
from lava_dispatcher.plugins import hookimpl

#: artifacts a ssh deploy may name that nothing uses
UNUSED_ARTIFACTS = ("firmware", "kernel", "rootfs", "modules")


class ScpOverlay(Action):
    name = "scp-overlay"
    description = "prepare overlay and scp to device"
    summary = "copy overlay to device"
    section = "deploy"

    def populate(self, parameters: Mapping[str, Any]) -> None:
        pipeline = self.new_pipeline(parameters)
        pipeline.add_action(OverlayAction())
        pipeline.add_action(PrepareOverlayScp())


class PrepareOverlayScp(Action):
    """Name the tarball the ssh boot will copy (a test-less job copies nothing)."""

    name = "prepare-scp-overlay"
    description = "copy the overlay over an existing ssh connection"
    summary = "scp the overlay to the remote device"

    def run(self, ctx: RunContext) -> None:
        unused = [item for item in UNUSED_ARTIFACTS if item in self.parameters]
        if unused:
            ctx.logger.warning(
                f"deploy to ssh: {', '.join(unused)} not downloaded: only the overlay "
                "goes to the machine"
            )
        tarball = ctx.data(self.namespace).get(OVERLAY_FILE, default=None)
        if tarball is None:
            ctx.logger.info("no overlay to copy: no test shell runs on this machine")
            return
        ctx.logger.info(f"Preparing to copy: {tarball.name}")
        self.results = {"file": tarball.name}


class Ssh(Strategy):
    section = "deploy"
    name = "ssh"

    @classmethod
    def action(cls, parameters: Mapping[str, Any]) -> Action:
        return ScpOverlay()


@hookimpl
def lava_strategies() -> list[type[Strategy]]:
    return [Ssh]
