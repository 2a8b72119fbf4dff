"""Placeholder: the depthcharge strategies are being written (issue 5)."""

from __future__ import annotations

from lava_dispatcher.actions.strategy import Strategy
from lava_dispatcher.plugins import hookimpl


@hookimpl
def lava_strategies() -> list[type[Strategy]]:
    return []
