"""Placeholder: the lava-multinode protocol is being written (issue 6)."""

from __future__ import annotations

from lava_dispatcher.plugins import hookimpl
from lava_dispatcher.protocols import Protocol


@hookimpl
def lava_protocols() -> list[type[Protocol]]:
    return []
