"""Group members in this process: a MultinodeProtocol with its own run context each."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lava_dispatcher.log import JobLogger
from lava_dispatcher.pipeline import JobSettings, RunContext
from lava_dispatcher.protocols.multinode import MultinodeProtocol


@dataclass
class Member:
    protocol: MultinodeProtocol
    ctx: RunContext
    records: list[tuple[str, Any]] = field(default_factory=list)

    def messages(self, level: str | None = None) -> list[str]:
        return [str(msg) for lvl, msg in self.records if level is None or lvl == level]


def member(
    address: str,
    job_id: str,
    role: str,
    group: str,
    size: int,
    *,
    roles: dict[str, str] | None = None,
    timeout: float = 20,
    dispatcher: dict[str, Any] | None = None,
    **protocol: Any,
) -> Member:
    block: dict[str, Any] = {"target_group": group, "role": role, "group_size": size,
                             "sub_id": 0, "timeout": {"seconds": timeout}, **protocol}  # fmt: skip
    if roles is not None:
        block["roles"] = roles
    parameters = {"protocols": {"lava-multinode": block}}
    logger = JobLogger()
    records: list[tuple[str, Any]] = []
    logger.add_observer(lambda level, msg, dt: records.append((level, msg)))
    settings = JobSettings(job_id, parameters, {}, {"coordinator": address, **(dispatcher or {})})
    ctx = RunContext(settings, logger)
    proto = MultinodeProtocol(parameters, job_id)
    ctx.hooks.append(proto)
    return Member(proto, ctx, records)


def in_threads(*calls: Callable[[], Any], timeout: float = 60) -> list[Any]:
    """Run the calls at once; their results (or the exceptions they raised), in order."""
    results: list[Any] = [None] * len(calls)

    def run(index: int, call: Callable[[], Any]) -> None:
        try:
            results[index] = call()
        except BaseException as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i, c), daemon=True) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
        assert not thread.is_alive(), "a group member is still blocked"
    return results
