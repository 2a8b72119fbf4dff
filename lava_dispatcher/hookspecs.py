"""Every hook a plugin can implement, in one place.

Plugins are pluggy plugins of the project ``lava_dispatcher``. Third-party
packages register a module (or an object) through the entry-point group
``lava_dispatcher`` in their packaging metadata::

    [options.entry_points]
    lava_dispatcher =
        myboard = myboard_plugin

and implement any of the hooks below with ``@hookimpl`` from
:mod:`lava_dispatcher.plugins`. The dispatcher's own strategies, device
types and result writers register through these same hooks, so a plugin
can do anything a built-in can.

Hooks returning collections are called on every plugin and their results
concatenated; lifecycle hooks are notifications, their return value is
ignored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from lava_dispatcher.actions.strategy import Strategy
    from lava_dispatcher.job import Job
    from lava_dispatcher.pipeline import Action
    from lava_dispatcher.protocols import Protocol

hookspec = pluggy.HookspecMarker("lava_dispatcher")


# --- what a job can use -------------------------------------------------------


@hookspec
def lava_strategies() -> Sequence[type[Strategy]]:
    """Return deploy, boot, test and command strategies (Strategy subclasses).

    For each action block of a job, every strategy of the block's section is
    asked whether it accepts the block for the device (``accepts`` returns
    ``(True, "")`` or ``(False, reason)``); among those that accept, the one
    with the highest ``priority`` builds the block's action. When none
    accepts, the job is refused with every strategy's reason.
    """


@hookspec
def lava_device_type_dirs() -> Sequence[Path]:
    """Return directories holding device-type YAML files (``<type>.yaml``).

    A device file that says ``extends: <type>`` is deep-merged over the
    first ``<type>.yaml`` found; ``lava-dispatch devices`` lists them all.
    """


@hookspec
def lava_method_schemas() -> Mapping[tuple[str, str], Mapping[Any, Any]]:
    """Return voluptuous schema keys for new deploy/boot methods.

    Keys are ``(section, method)``, e.g. ``("boot", "my-loader")``; values
    are a mapping of voluptuous keys for the method's own parameters, added
    to the keys every action block has. Without it a job naming the method
    is refused by validation as an unknown method.
    """


@hookspec
def lava_protocols() -> Sequence[type[Protocol]]:
    """Return Protocol subclasses (job-wide services such as MultiNode).

    A protocol is used by a job whose ``protocols`` block it ``accepts``.
    """


@hookspec
def lava_overlay_scripts() -> Sequence[Path]:
    """Return extra DUT-side helper scripts to install in the overlay's ``bin/``."""


# --- observing a job ----------------------------------------------------------


@hookspec
def lava_job_started(job: Job) -> None:
    """The job's pipeline is built and validated and is about to run."""


@hookspec
def lava_action_finished(job: Job, action: Action, result: Mapping[str, Any]) -> None:
    """An action ended (``result`` is its result record, pass or fail)."""


@hookspec
def lava_result_recorded(job: Job, result: Mapping[str, Any]) -> None:
    """A result record was logged (test cases, action results, the job result)."""


@hookspec
def lava_job_finished(job: Job, outcome: Mapping[str, Any]) -> None:
    """The job ended; ``outcome`` is what result.yaml holds. Writers write here."""
