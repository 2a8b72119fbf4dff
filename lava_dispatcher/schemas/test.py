"""Test blocks: definitions (shell tests), interactive, monitors, docker, services.

The kind of a test block is chosen by the key it carries, in LAVA's order:
``definitions`` (with ``docker`` it runs in a container), ``interactive``,
``monitors``, ``services``.  Each entry of :data:`TEST_KINDS` lists the
keys of one kind besides those every action has.
"""

from __future__ import annotations

from typing import Any

from voluptuous import Optional, Required

from lava_dispatcher.schemas.common import (
    NAME,
    NONEMPTY_STRINGS,
    STRINGS,
    MethodSchema,
    docker,
)
from lava_dispatcher.schemas.testdef import FIXUPDICT, PARAMS, SKIP_INSTALL, TESTDEF, Regex
from lava_dispatcher.schemas.validators import (
    Bool,
    Int,
    ListOf,
    Map,
    Mismatch,
    MissingKey,
    Nullable,
    OneOf,
    Str,
    Validator,
)

_DEFINITION_COMMON: dict[Any, Any] = {
    Required("name"): NAME,
    Required("path"): Str(
        nonempty=True, expected="the path of the definition file in the repository"
    ),
    Optional("skip_install"): ListOf(
        OneOf(*SKIP_INSTALL, sort=False),
        expected="a list of install steps to skip: 'keys', 'sources', 'deps', 'steps', 'git-repos' or 'all'",
    ),
    Optional("lava-signal"): OneOf("kmsg", "stdout"),
    Optional("expected"): STRINGS,
    Optional("parameters"): PARAMS,
    Optional("params"): PARAMS,
}

_FROM_GIT = Map(
    {
        **_DEFINITION_COMMON,
        Required("from"): OneOf("git"),
        Required("repository"): Str(nonempty=True, expected="a git repository URL"),
        Optional("branch"): Str(),
        Optional("history"): Bool(),
        Optional("revision"): Str(),
        Optional("recursive"): Bool(),
        Optional("shallow"): Bool(),
    },
    expected="a definition such as {from: git, repository: https://..., path: smoke.yaml, name: smoke}",
)

_FROM_URL = Map(
    {
        **_DEFINITION_COMMON,
        Required("from"): OneOf("url"),
        Required("repository"): Str(
            nonempty=True, expected="the URL of a tarball of test definitions"
        ),
        Optional("compression"): Str(),
        Optional("strip-components"): Int(0),
        Optional("headers"): Map({}, extra=object),
    },
    expected="a definition such as {from: url, repository: https://.../tests.tar.gz, path: smoke.yaml, name: smoke}",
)

_FROM_INLINE = Map(
    {
        **_DEFINITION_COMMON,
        Required("from"): OneOf("inline"),
        Required("repository"): TESTDEF,
    },
    expected="a definition such as {from: inline, name: smoke, path: inline/smoke.yaml, repository: {metadata: ..., run: ...}}",
)

_SOURCES = {"git": _FROM_GIT, "url": _FROM_URL, "inline": _FROM_INLINE}


class Definition(Validator):
    """One entry of ``definitions``: its keys depend on ``from``."""

    expected = (
        "a definition such as {from: git, repository: https://..., path: smoke.yaml, name: smoke}"
    )

    def __init__(self, sources: dict[str, Map], what: str = "definition") -> None:
        self.sources = sources
        self.choice = OneOf(*sources)
        self.what = what

    def __call__(self, value: Any) -> Any:
        if not isinstance(value, dict):
            raise Mismatch(self.expected)
        if "from" not in value:
            raise MissingKey(
                f"where the {self.what} comes from: {self.choice.expected[7:]}", ["from"]
            )
        try:
            self.choice(value["from"])
        except Mismatch as exc:
            exc.prepend(["from"])
            raise
        return self.sources[value["from"]](value)


DEFINITIONS = ListOf(
    Definition(_SOURCES),
    expected="a list of test definitions such as [{from: git, repository: ..., path: ..., name: ...}]",
)

_SERVICE_COMMON: dict[Any, Any] = {
    Required("name"): NAME,
    Required("repository"): Str(nonempty=True),
    Required("path"): Str(nonempty=True, expected="the path of the docker-compose file"),
    Optional("service"): Str(),
}

SERVICES = ListOf(
    Definition(
        {
            "git": Map(
                {
                    **_SERVICE_COMMON,
                    Required("from"): OneOf("git"),
                    Optional("branch"): Str(),
                    Optional("history"): Bool(),
                    Optional("revision"): Str(),
                    Optional("recursive"): Bool(),
                }
            ),
            "url": Map(
                {
                    **_SERVICE_COMMON,
                    Required("from"): OneOf("url"),
                    Optional("compression"): Str(),
                    Optional("headers"): Map({}, extra=object),
                }
            ),
        },
        what="service",
    ),
    expected="a list of services such as [{from: git, repository: ..., path: docker-compose.yaml, name: db}]",
)

_STEP = Map(
    {
        Optional("command"): Nullable(Str(), expected="a command (a string) or nothing"),
        Optional("name"): NAME,
        Optional("delay"): Int(0, expected="a delay in seconds (an integer >= 0)"),
        Optional("wait_for_prompt"): Bool(),
        Optional("lava-send"): Str(),
        Optional("lava-sync"): Str(),
        Optional("lava-wait"): Str(),
        Optional("lava-wait-all"): Str(),
        Optional("successes"): ListOf(
            Map({Required("message"): Str(nonempty=True)}, expected="{message: <text to expect>}"),
        ),
        Optional("failures"): ListOf(
            Map(
                {
                    Required("message"): Str(nonempty=True),
                    Optional("exception"): OneOf("InfrastructureError", "JobError", "TestError"),
                    Optional("error"): Str(nonempty=True),
                },
                expected="{message: <text>, exception: TestError, error: <what to report>}",
            )
        ),
    },
    expected="a step such as {command: 'uname -a', name: uname, successes: [{message: Linux}]}",
)


INTERACTIVE = ListOf(
    Map(
        {
            Required("name"): NAME,
            Required("prompts"): NONEMPTY_STRINGS,
            Optional("echo"): OneOf("discard"),
            Optional("expected"): NONEMPTY_STRINGS,
            Required("script"): ListOf(
                _STEP,
                expected="a list of steps such as [{command: 'uname -a', name: uname}]",
            ),
        },
        expected="an interactive script such as {name: shell, prompts: ['# '], script: [...]}",
    ),
    expected="a list of interactive scripts",
)

MONITORS = ListOf(
    Map(
        {
            Required("name"): NAME,
            Required("start"): Str(expected="the text that starts the test output"),
            Required("end"): Str(expected="the text that ends the test output"),
            Required("pattern"): Regex(),
            Optional("fixupdict"): FIXUPDICT,
            Optional("expected"): STRINGS,
        },
        expected="a monitor such as {name: tests, start: BOOTING, end: PROJECT EXECUTION, pattern: ...}",
    ),
    expected="a list of monitors",
)

# LAVA's documentation shows a descriptive ``name`` in test blocks; nothing reads it
_LABEL: dict[Any, Any] = {Optional("name"): Str()}

#: kind name -> (own keys).  The kind is chosen by the first of these keys present.
TEST_KINDS: dict[str, MethodSchema] = {
    "definitions": MethodSchema({Required("definitions"): DEFINITIONS, **_LABEL}),
    "docker": MethodSchema(
        {
            **_LABEL,
            Required("definitions"): DEFINITIONS,
            Required("docker"): docker(),
            Optional("downloads-namespace"): Str(),
            Optional("disconnect_connection"): Bool(),
        }
    ),
    "interactive": MethodSchema({Required("interactive"): INTERACTIVE}),
    "monitors": MethodSchema({Required("monitors"): MONITORS}),
    "services": MethodSchema({Required("services"): SERVICES}),
}

__all__ = ["TEST_KINDS"]
