"""Splitting a MultiNode submission into sub-jobs, as LAVA's server does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lava_dispatcher.multinode_group import (
    GroupError,
    SubJob,
    assign_devices,
    is_multinode,
    parse_device_args,
    split_group,
)


def submission() -> dict[str, Any]:
    return {
        "job_name": "client-server",
        "visibility": "public",
        "priority": "medium",
        "timeouts": {"job": {"minutes": 10}},
        "metadata": {"owner": "ci"},
        "protocols": {
            "lava-multinode": {
                "roles": {
                    "server": {"device_type": "qemu", "count": 1, "context": {"arch": "amd64"}},
                    "client": {"device_type": "qemu", "count": 2, "essential": False,
                               "request": "lava-start", "expect_role": "server", "timeout": {"minutes": 5}},
                },
                "timeout": {"minutes": 6},
            }
        },
        "actions": [
            {"deploy": {"role": ["server", "client"], "to": "tmpfs", "images": {}}},
            {"boot": {"role": ["server"], "method": "qemu"}},
            {"boot": {"role": ["client"], "method": "minimal"}},
            {"test": {"role": ["server", "client"], "definitions": []}},
        ],
    }  # fmt: skip


def test_one_sub_job_per_role_instance_with_the_group_settings() -> None:
    jobs = split_group(submission(), "7", target_group="g-1")
    # as on LAVA's server: shown as <id>.<n>, each with a whole-number job id of its own
    assert [(j.role, j.sub_id, j.name, j.job_id) for j in jobs] == [
        ("server", 0, "7.0", "7"), ("client", 1, "7.1", "8"), ("client", 2, "7.2", "9"),
    ]  # fmt: skip
    roles = {"7": "server", "8": "client", "9": "client"}
    server, client, _ = (j.definition for j in jobs)
    assert server["protocols"]["lava-multinode"] == {
        "target_group": "g-1", "role": "server", "group_size": 3, "sub_id": 0,
        "timeout": {"minutes": 6}, "roles": roles,
    }  # fmt: skip
    params = client["protocols"]["lava-multinode"]
    assert params["essential"] is False and params["request"] == "lava-start"
    assert params["expect_role"] == "server" and params["sub_id"] == 1
    # the protocol's own keys win over the role's (LAVA adds them last)
    assert params["timeout"] == {"minutes": 6}
    # scheduling keys go to the top level, copies are kept, count is gone
    assert server["device_type"] == "qemu" and server["context"] == {"arch": "amd64"}
    assert server["job_name"] == "client-server" and server["metadata"] == {"owner": "ci"}
    assert "count" not in server and "count" not in params
    # each keeps its role's actions, in order, with the role as one string
    assert [next(iter(a)) for a in server["actions"]] == ["deploy", "boot", "test"]
    assert server["actions"][1]["boot"] == {"role": "server", "method": "qemu"}
    assert client["actions"][1]["boot"]["method"] == "minimal"
    assert all(next(iter(a.values()))["role"] == "client" for a in client["actions"])
    assert is_multinode(submission()) and not is_multinode(server)


def test_every_sub_job_gets_a_fresh_group_id_by_default() -> None:
    first = split_group(submission(), "1")[0].definition["protocols"]["lava-multinode"]
    second = split_group(submission(), "1")[0].definition["protocols"]["lava-multinode"]
    assert first["target_group"] != second["target_group"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["actions"][1]["boot"].pop("role"), r"actions\[1\]\.boot\.role: missing"),
        (lambda d: d["actions"][2]["boot"].update(role=["printer"]), r"'printer' is not a role"),
        (lambda d: d["protocols"]["lava-multinode"]["roles"]["client"].update(count=0),
         r"roles\.client\.count: got 0; expected a positive integer"),
        (lambda d: d["protocols"]["lava-multinode"]["roles"]["server"].pop("count"),
         r"roles\.server\.count: got None"),
        (lambda d: d["protocols"]["lava-multinode"].pop("roles"), r"roles: missing"),
        (lambda d: d.update(actions=[]), r"actions: expected a list"),
    ],
)  # fmt: skip
def test_bad_submissions_are_refused_naming_the_key(change: Any, message: str) -> None:
    definition = submission()
    change(definition)
    with pytest.raises(GroupError, match=message):
        split_group(definition, "1")


def test_devices_per_instance_or_shared(tmp_path: Path) -> None:
    files = {name: tmp_path / f"{name}.yaml" for name in ("s", "c1", "c2")}
    for path in files.values():
        path.write_text("hostname: x\n")
    jobs = split_group(submission(), "1")
    assign_devices(jobs, parse_device_args([f"server={files['s']}", f"client={files['c1']}",
                                            f"client={files['c2']}"]))  # fmt: skip
    assert [j.device for j in jobs] == [files["s"], files["c1"], files["c2"]]
    jobs = split_group(submission(), "1")
    assign_devices(jobs, parse_device_args([f"server={files['s']}", f"client={files['c1']}"]))
    assert [j.device for j in jobs] == [files["s"], files["c1"], files["c1"]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["server"], r"ROLE=DEVICE_FILE"),
        (["server=S"], r"role 'client' has no device"),
        (["server=S", "client=C", "printer=C"], r"no role 'printer'"),
        (["server=S", "client=C", "client=C", "client=C"], r"count 2 but 3 device files"),
        (["server=missing.yaml", "client=C"], r"no such file"),
    ],
)
def test_bad_device_lists_are_refused(tmp_path: Path, args: list[str], message: str) -> None:
    for name in ("S", "C"):
        (tmp_path / name).write_text("hostname: x\n")
    resolved = [a.replace("=S", f"={tmp_path / 'S'}").replace("=C", f"={tmp_path / 'C'}")
                if "missing" not in a else a for a in args]  # fmt: skip
    with pytest.raises(GroupError, match=message):
        assign_devices(split_group(submission(), "1"), parse_device_args(resolved))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 5) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)


@given(
    st.dictionaries(st.sampled_from(["protocols", "actions", "job_name"]), json_values, max_size=3)
)
def test_any_input_splits_or_is_refused_clearly(definition: dict[str, Any]) -> None:
    try:
        jobs = split_group(definition, "1")
    except GroupError as exc:
        assert str(exc)
    else:
        assert all(isinstance(job, SubJob) for job in jobs)


shaped = st.fixed_dictionaries(
    {
        "protocols": st.fixed_dictionaries(
            {"lava-multinode": st.fixed_dictionaries(
                {"roles": st.dictionaries(st.sampled_from(["a", "b", ""]), json_values | st.fixed_dictionaries(
                    {"count": st.integers(-1, 3) | json_values}), max_size=3)})}
        ),
        "actions": st.lists(
            st.dictionaries(st.sampled_from(["deploy", "boot", "test"]),
                            json_values | st.fixed_dictionaries({"role": json_values | st.lists(st.sampled_from(["a", "b", "c"]))}),
                            max_size=2),
            max_size=4,
        ),
    }
)  # fmt: skip


@given(shaped)
def test_near_valid_input_splits_or_is_refused_clearly(definition: dict[str, Any]) -> None:
    try:
        jobs = split_group(definition, "1")
    except GroupError as exc:
        assert str(exc)
    else:
        sizes = {j.definition["protocols"]["lava-multinode"]["group_size"] for j in jobs}
        assert sizes == {len(jobs)}


@pytest.mark.parametrize("base", ["1.2", "abc", "", "-3", "٣"])
def test_a_submission_id_that_is_not_a_whole_number_is_refused(base: str) -> None:
    with pytest.raises(GroupError, match=r"--job-id .*whole number"):
        split_group(submission(), base)
