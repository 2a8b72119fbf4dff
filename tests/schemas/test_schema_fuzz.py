"""Property tests: whatever comes in, the validators either accept it or raise
their own error with a well-formed message; they never crash with another
exception.
"""

from __future__ import annotations

import copy
import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lava_dispatcher.errors import InvalidDeviceError, InvalidJobError
from lava_dispatcher.schemas import load_yaml, validate_device, validate_job, validate_testdef

HERE = Path(__file__).resolve().parent
CORPUS = [
    load_yaml(path.read_text(), path.name)
    for path in sorted((HERE / "jobs" / "valid").glob("*.yaml"))
]
DEVICES = [
    load_yaml(path.read_text(), path.name)
    for path in sorted((HERE / "devices" / "valid").glob("*.yaml"))
]

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# the words a job is made of, so that random structures reach deep into the schema
WORDS = [
    "job_name",
    "device_type",
    "timeouts",
    "job",
    "minutes",
    "seconds",
    "visibility",
    "public",
    "actions",
    "deploy",
    "boot",
    "test",
    "command",
    "to",
    "method",
    "tmpfs",
    "tftp",
    "qemu",
    "u-boot",
    "images",
    "url",
    "definitions",
    "from",
    "git",
    "inline",
    "repository",
    "path",
    "name",
    "protocols",
    "lava-multinode",
    "roles",
    "role",
    "namespace",
    "context",
    "notify",
    "criteria",
    "status",
    "commands",
    "connections",
    "constants",
    "parameters",
    "metadata",
    "format",
    "run",
    "steps",
    "install",
    "parse",
    "pattern",
    "fixupdict",
    "interactive",
    "monitors",
    "services",
    "timeout",
    "prompts",
    "auto_login",
    "overlays",
    "docker",
    "image",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(WORDS),
    st.text(max_size=20),
    st.dates(),
    st.datetimes(),
)
keys = st.one_of(
    st.sampled_from(WORDS),
    st.text(max_size=12),
    st.integers(-5, 5),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False),
)
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(keys, inner, max_size=6),
    ),
    max_leaves=40,
)


def _check_message(error: Exception) -> None:
    message = str(error)
    assert message and "\n" not in message
    assert "expected" in message
    path = getattr(error, "path", "")
    if path:
        assert message.startswith(f"{path}: ")


@SETTINGS
@given(documents)
def test_random_documents_as_jobs(data: Any) -> None:
    try:
        validate_job(data)
    except InvalidJobError as error:
        _check_message(error)


@SETTINGS
@given(documents)
def test_random_documents_as_devices(data: Any) -> None:
    try:
        validate_device(data)
    except InvalidDeviceError as error:
        _check_message(error)


@SETTINGS
@given(documents)
def test_random_documents_as_testdefs(data: Any) -> None:
    try:
        validate_testdef(data)
    except InvalidJobError as error:
        _check_message(error)


@settings(SETTINGS, max_examples=60)
@given(st.dictionaries(st.sampled_from(WORDS), documents, max_size=8))
def test_random_mappings_in_every_action(block: dict[str, Any]) -> None:
    for section in ("deploy", "boot", "test", "command"):
        data = copy.deepcopy(CORPUS[0])
        data["actions"].append({section: block})
        try:
            validate_job(data)
        except InvalidJobError as error:
            _check_message(error)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out.extend(_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out.extend(_paths(value, (*prefix, index)))
    return out


def _parent(node: Any, path: tuple[Any, ...]) -> Any:
    for part in path[:-1]:
        node = node[part]
    return node


@st.composite
def mutated_jobs(draw: st.DrawFn, corpus: list[Any]) -> Any:
    """A corpus document with a few keys dropped, values retyped or junk keys added."""
    data = copy.deepcopy(draw(st.sampled_from(corpus)))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(data) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _parent(data, path)
        action = draw(st.sampled_from(["drop", "retype", "junk"]))
        if action == "drop":
            del parent[path[-1]]
        elif action == "retype":
            parent[path[-1]] = draw(documents)
        else:
            target = parent[path[-1]]
            if isinstance(target, dict):
                target[draw(keys)] = draw(documents)
            elif isinstance(target, list):
                target.append(draw(documents))
            else:
                parent[path[-1]] = {draw(keys): target}
    return data


@SETTINGS
@given(mutated_jobs(CORPUS))
def test_mutated_corpus_jobs(data: Any) -> None:
    try:
        validate_job(data)
    except InvalidJobError as error:
        _check_message(error)


@SETTINGS
@given(mutated_jobs(DEVICES))
def test_mutated_devices(data: Any) -> None:
    try:
        validate_device(data)
    except InvalidDeviceError as error:
        _check_message(error)


YAML_BITS = st.sampled_from(
    [
        ": ",
        ":",
        "- ",
        "\n",
        "  ",
        "    ",
        "{",
        "}",
        "[",
        "]",
        ",",
        "&a ",
        "*a",
        "<<: ",
        "!!str ",
        "!!python/object ",
        "? ",
        "'",
        '"',
        "|",
        ">",
        "#",
        "---\n",
        "...\n",
        "%YAML 1.1\n",
        "\t",
        "\x00",
        "\x85",
        "\ufeff",
        "job",
        "timeouts",
        "minutes: 1",
        "actions",
        "- boot:",
        "method: qemu",
    ]
)


@SETTINGS
@given(st.one_of(st.text(max_size=200), st.lists(YAML_BITS, max_size=60).map("".join)))
def test_random_text_to_load_yaml(text: str) -> None:
    try:
        data = load_yaml(text, "fuzz.yaml")
    except InvalidJobError as error:
        assert str(error).startswith("fuzz.yaml")
        assert "\n" not in str(error)
        return
    try:
        validate_job(data)
    except InvalidJobError as error:
        _check_message(error)


@SETTINGS
@given(st.binary(max_size=100))
def test_random_bytes_to_load_yaml(blob: bytes) -> None:
    try:
        load_yaml(blob, "fuzz.yaml")
    except InvalidJobError as error:
        assert str(error).startswith("fuzz.yaml")


def test_dates_are_reported_not_crashed() -> None:
    data = copy.deepcopy(CORPUS[0])
    data["job_name"] = datetime.date(2024, 1, 2)
    try:
        validate_job(data)
    except InvalidJobError as error:
        assert "job_name: got datetime.date(2024, 1, 2)" in str(error)


def test_key_with_trailing_newline_is_escaped_in_message() -> None:
    """Found by hypothesis in CI: ``$`` matched before a trailing newline."""
    data = copy.deepcopy(CORPUS[0])
    data["actions"] = [{"deploy": [{"0\n": None}]}]
    with pytest.raises(InvalidJobError) as info:
        validate_job(data)
    _check_message(info.value)
    assert "'0\\n'" in str(info.value)
