"""LAVA's custom query conditions, reduced to what our store can answer: the job's own fields.

A ``dependency_query`` (and a ``compare: query: {entity: testjob,
conditions: ...}``) is LAVA's text form ``field__value`` or
``field__operator__value`` (or ``testjob__field__operator__value``), several
joined by commas; operators ``exact`` (default), ``iexact``, ``ne``,
``icontains``, ``gt``, ``lt``. The fields are LAVA's TestJob condition
fields. Conditions on test suites, test cases or job attributes (other
tables in LAVA) cannot be evaluated against our store and are refused with
a clear error instead of matching something else.

Conditions compile to a parameterised SQL ``WHERE`` over the store's
``jobs`` table: the column names come from the fixed list below, every value
is a parameter, so a job-supplied condition never becomes SQL text.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lava_dispatcher.worker.store import JOB_HEALTHS, JOB_STATES

SEPARATOR = ","
DIVIDER = "__"
OPERATORS = ("exact", "iexact", "ne", "icontains", "gt", "lt")
TEXT_FIELDS = ("submitter", "actual_device", "requested_device_type", "description")
FIELDS = (*TEXT_FIELDS, "start_time", "end_time", "state", "health", "health_check", "priority")
PRIORITIES = {"high": 100, "medium": 50, "low": 0}


class ConditionError(ValueError):
    """A condition this worker cannot evaluate; the message says which and why."""


@dataclass(frozen=True)
class Condition:
    field: str
    operator: str
    value: str

    def sql(self) -> tuple[str, list[Any]]:
        """``(clause, params)`` for this condition over the ``jobs`` table."""
        value = self._value()
        column = self.field
        if self.operator == "icontains":
            escaped = str(value).lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            return f"lower(COALESCE({column}, '')) LIKE ? ESCAPE '\\'", [f"%{escaped}%"]
        if self.operator == "iexact":
            return f"lower({column}) = lower(?)", [value]
        symbol = {"exact": "IS", "ne": "IS NOT", "gt": ">", "lt": "<"}[self.operator]
        return f"{column} {symbol} ?", [value]

    def _value(self) -> Any:
        """The value in the column's own terms (display names, 0/1, epoch seconds)."""
        text = self.value
        if self.field in ("state", "health") and self.operator in ("gt", "lt"):
            raise ConditionError(f"{self.field}: {self.operator} means nothing for a {self.field}")
        if self.field in ("state", "health") and self.operator in ("exact", "ne"):
            choices = JOB_STATES if self.field == "state" else JOB_HEALTHS
            if text not in choices:
                raise ConditionError(
                    f"{self.field}: {text!r} is not one of {', '.join(choices)}"
                )
            return text
        if self.field == "health_check":
            return 0 if text == "False" else 1
        if self.field == "priority":
            if text.lower() in PRIORITIES:
                return PRIORITIES[text.lower()]
            try:
                return int(text)
            except ValueError:
                raise ConditionError(f"priority: expected High, Medium, Low or a number, not {text!r}") from None
        if self.field in ("start_time", "end_time"):
            return _epoch(self.field, text)
        return text


def _epoch(field: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ConditionError(
            f"{field}: expected a date and time such as 2026-08-21T10:00:00 or epoch seconds, not {text!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


def parse_condition(text: str) -> Condition:
    parts = text.strip().split(DIVIDER)
    if len(parts) == 4:
        if parts[0].lower() != "testjob":
            raise ConditionError(
                f"{text!r}: only conditions on the job itself (testjob) can be evaluated here, "
                f"not on {parts[0]!r}"
            )
        parts = parts[1:]
    if len(parts) == 2:
        field, operator, value = parts[0], "exact", parts[1]
    elif len(parts) == 3:
        field, operator, value = parts
    else:
        raise ConditionError(
            f"{text!r}: expected field__value or field__operator__value "
            f"(such as description__icontains__nightly)"
        )
    if field not in FIELDS:
        raise ConditionError(f"{text!r}: unknown job field {field!r}; the fields are: {', '.join(FIELDS)}")
    if operator not in OPERATORS:
        raise ConditionError(f"{text!r}: unknown operator {operator!r}; the operators are: {', '.join(OPERATORS)}")
    condition = Condition(field, operator, value)
    condition.sql()  # refuse a bad value now, not when the query runs
    return condition


def parse_conditions(text: str) -> list[Condition]:
    """LAVA's text form, conditions joined by commas (empty text: no condition)."""
    return [parse_condition(part) for part in str(text).split(SEPARATOR) if part.strip()]


def conditions_from_mapping(conditions: Mapping[str, Any]) -> list[Condition]:
    """The ``conditions:`` of a compare query: ``{field or field__operator: value}``."""
    return [parse_condition(f"{key}{DIVIDER}{value}") for key, value in conditions.items()]


def where(conditions: Sequence[Condition]) -> tuple[str, list[Any]]:
    """All conditions together (``1`` when there is none)."""
    clauses: list[str] = []
    params: list[Any] = []
    for condition in conditions:
        clause, values = condition.sql()
        clauses.append(clause)
        params += values
    return (" AND ".join(clauses) or "1"), params
