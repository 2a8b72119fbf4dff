"""Strategies: which action handles an action block of a job.

Each deploy/boot/test/command strategy is a small class registered through
the ``lava_strategies`` hook. For a block, the parser asks every strategy of
the block's section whether it ``accepts`` the block for the device; the
accepting strategy with the highest ``priority`` builds the block's
top-level action. A strategy that refuses says why, and the reasons are
shown only when no strategy accepts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from lava_dispatcher.devices import Device
from lava_dispatcher.pipeline import Action

#: the key of a block that names its method, per section
SELECTOR = {"deploy": "to", "boot": "method"}


class Strategy:
    """Base of every strategy. Subclasses set ``section``, ``name`` and ``action``."""

    section: ClassVar[str] = ""
    #: the method (boot), target (deploy), kind (test) or "command"
    name: ClassVar[str] = ""
    priority: ClassVar[int] = 0
    #: whether the method must be listed in the device's ``actions.<section>.methods``
    needs_device_method: ClassVar[bool] = True

    @classmethod
    def accepts(cls, device: Device, parameters: Mapping[str, Any]) -> tuple[bool, str]:
        selector = SELECTOR.get(cls.section)
        if selector is None:
            return False, f"{cls.__name__} does not say how it selects blocks"
        value = parameters.get(selector)
        if value != cls.name:
            return False, f"{selector} is {value!r}, not {cls.name!r}"
        if cls.needs_device_method and not device.has_method(cls.section, cls.name):
            return False, (
                f"device {device.hostname!r} has no {cls.section} method {cls.name!r} "
                f"in actions.{cls.section}.methods"
            )
        return True, ""

    @classmethod
    def action(cls, parameters: Mapping[str, Any]) -> Action:
        """The block's top-level action (populated by the pipeline)."""
        raise NotImplementedError

    # What test blocks tell deploy and boot (the test-shell issue uses these).
    @classmethod
    def needs_overlay(cls, parameters: Mapping[str, Any]) -> bool:
        return False

    @classmethod
    def has_shell(cls, parameters: Mapping[str, Any]) -> bool:
        return False


def describe_refusals(section: str, method: object, refusals: list[tuple[str, str]]) -> str:
    """Why a block found no strategy: each refusal, or that none is installed."""
    what = f"{section} {SELECTOR.get(section, 'kind')} {method!r}" if method else section
    if not refusals:
        return f"no {section} strategy is installed, so {what} cannot run here"
    reasons = "; ".join(f"{name}: {why}" for name, why in refusals)
    return f"no {section} strategy accepts {what} ({reasons})"
