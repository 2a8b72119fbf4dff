"""From job YAML and a device to a validated :class:`~lava_dispatcher.job.Job`.

Unlike LAVA's lava-run, the job is checked against the same strict schema
the server side uses before any pipeline is built, and the job's dict is
never mutated: each block gets its own parameter mapping with the defaults
the actions rely on (``namespace``, the test ``stage``, the job-wide
protocol settings).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pluggy

from lava_dispatcher import plugins
from lava_dispatcher.actions.power import FinalizeAction
from lava_dispatcher.actions.strategy import SELECTOR, Strategy, describe_refusals
from lava_dispatcher.builtin_plugins import get_manager
from lava_dispatcher.devices import Device
from lava_dispatcher.errors import InvalidJobError, JobError
from lava_dispatcher.job import Job
from lava_dispatcher.pipeline import DEFAULT_NAMESPACE, JobSettings, Pipeline
from lava_dispatcher.schemas import load_yaml, validate_job
from lava_dispatcher.timing import parse_timeout

SECTIONS = ("deploy", "boot", "test", "command")


def load_job_definition(
    text: str,
    source: str = "job",
    manager: pluggy.PluginManager | None = None,
    warnings: list[str] | None = None,
) -> dict[str, Any]:
    """Parse and validate job YAML; InvalidJobError names what is wrong.

    A key repeated with another value is accepted (the last one wins, as in
    LAVA, so existing jobs keep working) and described in ``warnings``.
    """
    duplicates: list[str] = []
    data = load_yaml(text, source, allow_duplicates=True, duplicates=duplicates)
    if warnings is not None:
        warnings.extend(f"{source}: {d}" for d in duplicates)
    return validate_job(data, method_schemas=plugins.method_schemas(manager or get_manager()))


def select_strategy(
    strategies: Sequence[type[Strategy]],
    section: str,
    device: Device,
    parameters: Mapping[str, Any],
) -> type[Strategy]:
    refusals: list[tuple[str, str]] = []
    accepted: list[type[Strategy]] = []
    for strategy in strategies:
        if strategy.section != section:
            continue
        ok, why = strategy.accepts(device, parameters)
        if ok:
            accepted.append(strategy)
        else:
            refusals.append((strategy.name or strategy.__name__, why))
    if not accepted:
        method = parameters.get(SELECTOR[section]) if section in SELECTOR else None
        raise JobError(describe_refusals(section, method, refusals))
    return max(accepted, key=lambda s: s.priority)


def block_parameters(
    section: str, block: Mapping[str, Any], job: Mapping[str, Any], stage: int
) -> dict[str, Any]:
    params = dict(block)
    params.setdefault("namespace", DEFAULT_NAMESPACE)
    if section == "test":
        params["stage"] = stage
    # job-wide protocol settings are visible to every block, as in LAVA
    for name, settings in (job.get("protocols") or {}).items():
        params.setdefault(name, settings)
    return params


def build_job(
    definition: Mapping[str, Any],
    device: Device,
    job_id: str,
    *,
    dispatcher: Mapping[str, Any] | None = None,
    output_dir: Path | None = None,
    manager: pluggy.PluginManager | None = None,
) -> Job:
    """Select a strategy for every block and build the pipeline (nothing runs)."""
    manager = manager or get_manager()
    settings = JobSettings(
        job_id=str(job_id),
        parameters=definition,
        device=device,
        dispatcher=dict(dispatcher or {}),
        timeout=parse_timeout((definition.get("timeouts") or {}).get("job")),
    )
    strategies = plugins.strategies(manager)

    blocks = []
    stages: dict[str, int] = {}
    # an item may hold several sections; LAVA runs each of them, in order
    items = [
        (index, section, block)
        for index, item in enumerate(definition["actions"])
        for section, block in item.items()
    ]
    for index, section, block in items:
        if section not in SECTIONS:
            raise InvalidJobError(
                f"actions[{index}]: unknown action {section!r}; expected one of {', '.join(SECTIONS)}",
                path=f"actions[{index}]",
                value=section,
                expected=", ".join(SECTIONS),
            )
        namespace = str((block or {}).get("namespace") or DEFAULT_NAMESPACE)
        params = block_parameters(section, block or {}, definition, stages.get(namespace, 0))
        try:
            strategy = select_strategy(strategies, section, device, params)
        except JobError as exc:
            raise JobError(f"actions[{index}].{section}: {exc}") from exc
        except NotImplementedError as exc:
            raise JobError(f"actions[{index}].{section}: {exc}") from exc
        if section == "test":
            settings.test_info.setdefault(namespace, []).append((strategy, params))
            connection_namespace = str(params.get("connection-namespace") or namespace)
            if connection_namespace != namespace:
                settings.test_info.setdefault(connection_namespace, []).append((strategy, params))
            if strategy.needs_overlay(params):
                stages[namespace] = stages.get(namespace, 0) + 1
        blocks.append((section, strategy, params))

    pipeline = Pipeline(settings)
    for section, strategy, params in blocks:
        action = strategy.action(params)
        action.section = action.section or section
        pipeline.add_action(action, params)
    pipeline.add_action(FinalizeAction(), {"namespace": DEFAULT_NAMESPACE})

    protocols = [
        cls(definition, settings.job_id)
        for cls in sorted(plugins.protocols(manager), key=lambda c: c.level)
        if cls.accepts(definition)
    ]
    return Job(settings, pipeline, protocols=protocols, manager=manager, output_dir=output_dir)


def parse_job(
    text: str,
    device: Device,
    job_id: str,
    *,
    source: str = "job",
    dispatcher: Mapping[str, Any] | None = None,
    output_dir: Path | None = None,
    manager: pluggy.PluginManager | None = None,
) -> Job:
    warnings: list[str] = []
    definition = load_job_definition(text, source, manager, warnings)
    job = build_job(
        definition,
        device,
        job_id,
        dispatcher=dispatcher,
        output_dir=output_dir,
        manager=manager,
    )
    job.warnings = warnings
    return job
