"""From a submitted job definition to the store's columns, and MultiNode splitting.

The schema check itself is the dispatcher's (the validator child); this
module only reads what scheduling needs: device type, tags, priority,
visibility, name, and, for a MultiNode submission, the sub-jobs of
:func:`lava_dispatcher.multinode_group.split_group`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from lava_dispatcher.worker.errors import InvalidJob
from lava_dispatcher.worker.store import SUBMITTED, now

#: LAVA's named priorities
PRIORITIES = {"high": 100, "medium": 50, "low": 0}


def parse_definition(text: str) -> dict[str, Any]:
    """The submitted YAML as a mapping; InvalidJob with the line and column when it is not."""
    from lava_dispatcher.schemas.loader import load_yaml

    if not isinstance(text, str) or not text.strip():
        raise InvalidJob("Problem with submitted job data: the definition is empty")
    data = load_yaml(text, "definition", error=InvalidJob, allow_duplicates=True)
    if not isinstance(data, dict):
        raise InvalidJob(
            f"Problem with submitted job data: expected a job (a mapping), got {type(data).__name__}"
        )
    return data


def priority(data: Mapping[str, Any]) -> int:
    value = data.get("priority", "medium")
    if isinstance(value, str) and value.lower() in PRIORITIES:
        return PRIORITIES[value.lower()]
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 100:
        return value
    raise InvalidJob(f"priority: expected high, medium, low or 0 to 100, not {value!r}")


def visibility(data: Mapping[str, Any]) -> str:
    value = data.get("visibility", "public")
    if value in ("public", "personal"):
        return str(value)
    if isinstance(value, Mapping) and isinstance(value.get("group"), list):
        return "group:" + ",".join(str(g) for g in value["group"])
    raise InvalidJob(f"visibility: expected public, personal or {{group: [...]}}, not {value!r}")


def tags(data: Mapping[str, Any]) -> list[str]:
    value = data.get("tags") or []
    if not isinstance(value, list) or not all(isinstance(t, (str, int)) for t in value):
        raise InvalidJob(f"tags: expected a list of tag names, not {value!r}")
    return [str(t) for t in value]


def job_columns(text: str, submitter: str, data: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The columns of a new Submitted job (without ``id``)."""
    data = parse_definition(text) if data is None else data
    return {
        "description": str(data.get("job_name") or ""),
        "requested_device_type": data.get("device_type"),
        "tags": tags(data),
        "priority": priority(data),
        "visibility": visibility(data),
        "submitter": submitter,
        "state": SUBMITTED,
        "submit_time": now(),
        "definition": text,
        "original_definition": text,
    }


@dataclass(frozen=True)
class SubJob:
    """One job to insert: its definition and where it must run."""

    definition: dict[str, Any]
    text: str
    device_type: str
    tags: list[str]
    role: str | None = None
    sub_id: int | None = None
    essential: bool = False


def split(text: str, data: Mapping[str, Any], base_id: int, target_group: str | None = None) -> list[SubJob]:
    """The jobs of a submission: itself, or one per MultiNode role instance (ids ``base_id + n``)."""
    from lava_dispatcher.multinode_group import GroupError, is_multinode, split_group

    if not is_multinode(data):
        device_type = data.get("device_type")
        if not isinstance(device_type, str) or not device_type:
            raise InvalidJob("Invalid job definition: 'device_type' is missing")
        return [SubJob(dict(data), text, device_type, tags(data))]
    try:
        subjobs = split_group(data, str(base_id), target_group or str(uuid.uuid4()))
    except GroupError as exc:
        raise InvalidJob(f"Invalid job definition: {exc}") from None
    out = []
    for sub in subjobs:
        protocol = sub.definition["protocols"]["lava-multinode"]
        device_type = sub.definition.get("device_type")
        if not isinstance(device_type, str) or not device_type:
            raise InvalidJob(f"Invalid job definition: role {sub.role!r} has no device_type")
        out.append(SubJob(
            sub.definition,
            yaml.safe_dump(sub.definition, sort_keys=False),
            device_type,
            tags({"tags": protocol.get("tags")}) or tags(data),
            sub.role,
            sub.sub_id,
            bool(protocol.get("essential", False)),
        ))  # fmt: skip
    return out
