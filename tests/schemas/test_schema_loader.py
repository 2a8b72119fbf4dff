"""load_yaml: safe, refuses conflicting duplicate keys, locates every problem."""

from __future__ import annotations

import pytest

from lava_dispatcher.errors import InvalidDeviceError, InvalidJobError
from lava_dispatcher.schemas import load_yaml


def test_plain_document() -> None:
    assert load_yaml("a: 1\nb: [x, y]\n", "job.yaml") == {"a": 1, "b": ["x", "y"]}
    assert load_yaml(b"a: 1\n", "job.yaml") == {"a": 1}
    assert load_yaml("", "job.yaml") is None


def test_syntax_error_is_located() -> None:
    with pytest.raises(InvalidJobError) as info:
        load_yaml("job_name: x\ntimeouts:\n  job: {minutes: 1\nvisibility: public\n", "job.yaml")
    message = str(info.value)
    assert message.startswith("job.yaml:4:")
    assert "\n" not in message


def test_mapping_values_not_allowed() -> None:
    # libyaml says "... in this context", PyYAML's own parser "... here"
    with pytest.raises(InvalidJobError, match=r"^job.yaml:2:\d+: mapping values are not allowed"):
        load_yaml("a: 1\nb: c: d\n", "job.yaml")


def test_bad_indentation() -> None:
    with pytest.raises(InvalidJobError, match=r"^job.yaml:3:"):
        load_yaml("actions:\n  - deploy:\n   to: tmpfs\n    os: debian\n", "job.yaml")


def test_duplicate_keys() -> None:
    text = "actions:\n- boot:\n    timeout: {minutes: 1}\n    method: minimal\n    timeout: {minutes: 2}\n"
    with pytest.raises(InvalidJobError) as info:
        load_yaml(text, "job.yaml")
    assert str(info.value) == (
        "job.yaml:5:5: duplicate key 'timeout' (first defined at line 3 with another value)"
    )
    # the same key with the same value is harmless (LAVA's templates produce it)
    assert load_yaml("a: null\nb: 1\na:\n", "d.yaml") == {"a": None, "b": 1}
    # as in LAVA, the last value wins when duplicates are allowed
    assert load_yaml("a: 1\na: 2\n", "d.yaml", allow_duplicates=True) == {"a": 2}


def test_merge_keys_may_be_overridden() -> None:
    text = "base: &base {a: 1, b: 2}\nitem:\n  <<: *base\n  b: 3\n"
    assert load_yaml(text, "job.yaml")["item"] == {"a": 1, "b": 3}


def test_error_class() -> None:
    with pytest.raises(InvalidDeviceError, match=r"^device.yaml:\d+:\d+: "):
        load_yaml("[a, b", "device.yaml", error=InvalidDeviceError)

    class Plain(Exception):
        pass

    with pytest.raises(Plain, match=r"^x.yaml:\d+:\d+: "):
        load_yaml("[a, b", "x.yaml", error=Plain)


@pytest.mark.parametrize(
    "text",
    [
        "!!python/object/apply:os.system ['true']\n",
        "a: !!python/name:os.system\n",
        "? [a, b]\n: c\n",
        "a: 1\n---\nb: 2\n",
        "a: \x00\n",
        "a: *undefined\n",
        "a: !custom 1\n",
    ],
)
def test_unsafe_or_broken_documents(text: str) -> None:
    with pytest.raises(InvalidJobError) as info:
        load_yaml(text, "job.yaml")
    assert str(info.value).startswith("job.yaml")


def test_control_character_location() -> None:
    with pytest.raises(InvalidJobError, match=r"^job.yaml:2:4: "):
        load_yaml("a: 1\nb: \x07\n", "job.yaml")


def test_deeply_nested() -> None:
    text = "[" * 5000 + "]" * 5000
    try:
        data = load_yaml(text, "job.yaml")
    except InvalidJobError as exc:
        assert str(exc).startswith("job.yaml")
    else:
        assert isinstance(data, list)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (
            "job_name: nightly\ndate: 2020-13-45\n",
            "job.yaml:2:7: cannot read '2020-13-45' as timestamp",
        ),
        ("a: !!int 12x\n", "job.yaml:1:4: cannot read '12x' as int"),
        ("a: !!float abc\n", "job.yaml:1:4: cannot read 'abc' as float"),
        (
            "a: " + "1" * 5000 + "\n",
            "job.yaml:1:4: cannot read '1111111111111111111111111111111111111...' as int",
        ),
    ],
)
def test_values_python_cannot_build(text: str, where: str) -> None:
    with pytest.raises(InvalidJobError) as info:
        load_yaml(text, "job.yaml")
    assert str(info.value).startswith(where)
