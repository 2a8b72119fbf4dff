"""Protocols: job-wide services that act at the start of named actions (MultiNode...).

A protocol is selected when the job's ``protocols`` block names it and its
``accepts`` agrees. It sets up before the first action, makes the requests
a block lists under ``protocols: {<name>: [{action: <action-name>, ...}]}``
when the action of that name starts (the pipeline calls ``before_action``
for every action: that is the one place where this happens), and is
finalised when the job ends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from lava_dispatcher.pipeline import Action, RunContext


class Protocol:
    name: ClassVar[str] = ""
    #: set-up order among the job's protocols (lower first)
    level: ClassVar[int] = 0

    def __init__(self, parameters: Mapping[str, Any], job_id: str) -> None:
        self.parameters = parameters
        self.job_id = job_id

    @classmethod
    def accepts(cls, parameters: Mapping[str, Any]) -> bool:
        return cls.name in (parameters.get("protocols") or {})

    def set_up(self, ctx: RunContext) -> None:
        """Before the first action (MultiNode forms its group here)."""

    def requests_for(self, action: Action) -> Sequence[Mapping[str, Any]]:
        """The requests the action's block names for this action."""
        calls = (action.parameters.get("protocols") or {}).get(self.name) or []
        return [call for call in calls if isinstance(call, Mapping) and call.get("action") == action.name]

    def before_action(self, action: Action, ctx: RunContext) -> None:
        for request in self.requests_for(action):
            self.run_request(request, action, ctx)

    def after_action(self, action: Action, ctx: RunContext, record: dict[str, Any]) -> None:
        """Protocols rarely care; observers do."""

    def run_request(self, request: Mapping[str, Any], action: Action, ctx: RunContext) -> None:
        raise NotImplementedError(f"protocol {self.name} cannot run {request!r}")

    def finalise(self, ctx: RunContext) -> None:
        """At the end of the job, even a failed one."""
