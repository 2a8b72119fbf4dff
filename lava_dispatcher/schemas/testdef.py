"""Test definition files ("Lava-Test Test Definition 1.0").

Strictness follows what a mistake would cost: ``install``, ``parse`` and
``run`` drive what runs on the DUT, so an unknown key there (``step:`` for
``steps:``) is refused; ``metadata`` is descriptive and real definitions carry
extra fields in it (``version``, ``link``...), so any key is accepted there;
at the top level LAVA accepts any key, and so do we unless it looks like a
misspelling of a known one (``paramters``).
"""

from __future__ import annotations

import re
import warnings
from typing import Any

from voluptuous import Optional, Required

from lava_dispatcher.schemas.common import STRINGS
from lava_dispatcher.schemas.validators import (
    Anything,
    Either,
    Keyed,
    ListOf,
    Map,
    Mismatch,
    OneOf,
    Pattern,
    Str,
    Validator,
)

TESTDEF_FORMAT = "Lava-Test Test Definition 1.0"
RESULTS = ("pass", "fail", "skip", "unknown")
SKIP_INSTALL = ("keys", "sources", "deps", "steps", "git-repos", "all")


class Step(Validator):
    """One shell command line."""

    expected = "a shell command (a string)"

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str):
            return value
        if isinstance(value, dict):
            raise Mismatch(
                self.expected,
                hint="YAML read this line as a mapping because of ': ' in it; quote the whole line",
            )
        raise Mismatch(self.expected)


class Regex(Validator):
    """A Python regular expression (the result parser of a definition)."""

    expected = "a valid regular expression"

    def __call__(self, value: Any) -> Any:
        if not isinstance(value, str):
            raise Mismatch(self.expected)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                re.compile(value, re.M)
        except (re.error, RecursionError, OverflowError) as exc:
            raise Mismatch(self.expected, hint=f"the regular expression does not compile: {exc}")
        return value


STEPS = ListOf(Step(), expected="a list of shell commands")
PARAMS = Keyed(
    Anything(),
    key=Anything(),
    expected="a mapping of parameter names to values, such as {TESTS: all}",
)
FIXUPDICT = Keyed(
    OneOf(*RESULTS, sort=False),
    key=Anything(),
    expected="a mapping of words found by the pattern to 'pass', 'fail', 'skip' or 'unknown'",
)

_GIT_REPO = Either(
    Str(),
    Map(
        {Required("url"): Str(), Optional("branch"): Str(), Optional("destination"): Str()},
        expected="a repository such as {url: https://..., branch: main}",
    ),
    expected="a repository URL or {url, branch, destination}",
)

METADATA = Map(
    {
        Required("format"): OneOf(TESTDEF_FORMAT),
        Required("name"): Str(nonempty=True, expected="the name of the test definition"),
        Optional("description"): Str(),
        Optional("environment"): STRINGS,
        Optional("devices"): STRINGS,
        Optional("maintainer"): STRINGS,
        Optional("scope"): STRINGS,
        Optional("os"): STRINGS,
    },
    expected=f"a mapping such as {{format: {TESTDEF_FORMAT}, name: smoke-tests}}",
    extra=Anything(),
)

INSTALL = Map(
    {
        Optional("deps"): STRINGS,
        Optional(Pattern(r"deps-.+", "'deps-<distro>'")): STRINGS,
        Optional("git-repos"): ListOf(_GIT_REPO, expected="a list of repositories"),
        Optional("keys"): STRINGS,
        Optional("sources"): STRINGS,
        Optional("steps"): STEPS,
        Optional("skip_install"): ListOf(OneOf(*SKIP_INSTALL, sort=False)),
    },
    expected="a mapping such as {deps: [curl], steps: [...]}",
)

PARSE = Map(
    {Optional("pattern"): Regex(), Optional("fixupdict"): FIXUPDICT},
    expected="a mapping such as {pattern: '(?P<test_case_id>\\S+): (?P<result>\\w+)'}",
)

RUN = Map({Required("steps"): STEPS}, expected="a mapping such as {steps: [./run.sh]}")

TESTDEF_FIELDS: dict[Any, Any] = {
    Required("metadata"): METADATA,
    Optional("install"): INSTALL,
    Optional("params"): PARAMS,
    Optional("parameters"): PARAMS,
    Optional("parse"): PARSE,
    Optional("run"): RUN,
    Optional("expected"): STRINGS,
}

TESTDEF = Map(
    TESTDEF_FIELDS,
    expected="a test definition mapping with 'metadata' and 'run'",
    typo_guard=True,
)

__all__ = ["TESTDEF", "TESTDEF_FIELDS", "TESTDEF_FORMAT"]
