"""The ``notify`` block: when to notify, whom (email, IRC) and which URLs to call."""

from __future__ import annotations

from typing import Any

from voluptuous import Optional, Required

from lava_dispatcher.schemas.common import STRINGS
from lava_dispatcher.schemas.validators import (
    Conflict,
    Keyed,
    ListOf,
    Map,
    MissingKey,
    OneOf,
    Str,
    exclusive,
)

STATUSES = ("all", "finished", "running", "complete", "canceled", "incomplete")


def _criteria_rules(data: dict[Any, Any]) -> None:
    status = data.get("status")
    if status == "all":
        for key in ("dependency_query", "type"):
            if key in data:
                raise Conflict(
                    f"{key!r} cannot be used with 'status: all'",
                    f"no {key!r}, or a status other than 'all'",
                    [key],
                )
    if "type" in data:
        if status not in ("complete", "incomplete"):
            raise Conflict(
                f"'type' needs 'status: complete' or 'status: incomplete', not {status!r}",
                "'status: complete' or 'status: incomplete' with 'type'",
                ["type"],
            )
        if "dependency_query" in data:
            raise Conflict(
                "'dependency_query' cannot be used together with 'type'",
                "only one of 'type' or 'dependency_query'",
                ["dependency_query"],
            )


CRITERIA = Map(
    {
        Required("status"): OneOf(*STATUSES),
        Optional("dependency_query"): Str(),
        Optional("type"): OneOf("regression", "progression"),
    },
    expected="criteria such as {status: finished}",
    checks=[_criteria_rules],
)

CALLBACK = Map(
    {
        Required("url"): Str(nonempty=True, expected="the URL to call"),
        Optional("method"): OneOf("GET", "POST"),
        Optional("token"): Str(),
        Optional("header"): Str(),
        Optional("dataset"): OneOf("minimal", "logs", "results", "all"),
        Optional("content-type"): OneOf("json", "urlencoded"),
    },
    expected="a callback such as {url: https://ci.example.com/hook, method: POST}",
)

RECIPIENT = Map(
    {
        Required("to"): Map(
            {
                Required("method"): OneOf("email", "irc"),
                Optional("user"): Str(),
                Optional("email"): Str(),
                Optional("handle"): Str(),
                Optional("server"): Str(),
            },
            expected="a recipient such as {method: email, email: someone@example.com}",
        )
    },
    expected="a recipient such as {to: {method: email, email: someone@example.com}}",
)


def _query_rules(data: dict[Any, Any]) -> None:
    if "entity" in data:
        for key in ("username", "name"):
            if key in data:
                raise Conflict(
                    f"{key!r} cannot be used together with 'entity'",
                    "either {username, name} or {entity, conditions}",
                    [key],
                )
        return
    if "conditions" in data:
        raise MissingKey("'entity' with 'conditions'", ["entity"])
    for key in ("username", "name"):
        if key not in data:
            raise MissingKey(
                "the owner and name of a stored query (username and name), or an entity",
                [key],
            )


COMPARE = Map(
    {
        Optional("blacklist"): STRINGS,
        Optional("query"): Map(
            {
                Optional("username"): Str(),
                Optional("name"): Str(),
                Optional("entity"): Str(),
                Optional("conditions"): Keyed(Str()),
            },
            expected="a query such as {username: me, name: my-query} or {entity: testjob, conditions: {...}}",
            checks=[_query_rules],
        ),
    },
    expected="a mapping such as {query: {username: me, name: my-query}}",
)


NOTIFY = Map(
    {
        Required("criteria"): CRITERIA,
        Optional("verbosity"): OneOf("verbose", "quiet", "status-only"),
        Optional("recipients"): ListOf(RECIPIENT, expected="a list of recipients"),
        Optional("callback"): CALLBACK,
        Optional("callbacks"): ListOf(CALLBACK, expected="a list of callbacks"),
        Optional("compare"): COMPARE,
    },
    expected="a notify mapping such as {criteria: {status: finished}, recipients: [...]}",
    checks=[exclusive("callback", "callbacks")],
)

__all__ = ["NOTIFY"]
