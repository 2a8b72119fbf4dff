"""Behaviour of validate_job beyond the corpus: error fields, cross-checks, plugins."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from voluptuous import Optional, Required

from lava_dispatcher.errors import InvalidJobError, JobError
from lava_dispatcher.schemas import KNOWN_METHODS, validate_job
from lava_dispatcher.schemas.job import job_schema


def job(*actions: dict[str, Any], **top: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "job_name": "unit",
        "device_type": "qemu",
        "timeouts": {"job": {"minutes": 30}},
        "visibility": "public",
        "actions": list(actions) or [{"boot": {"method": "minimal"}}],
    }
    data.update(top)
    return data


def error_of(data: Any, **kwargs: Any) -> InvalidJobError:
    with pytest.raises(InvalidJobError) as info:
        validate_job(data, **kwargs)
    return info.value


TMPFS = {"deploy": {"to": "tmpfs", "images": {"rootfs": {"url": "https://example.org/r.img"}}}}
QEMU = {"boot": {"method": "qemu", "media": "tmpfs", "prompts": ["# "]}}
SMOKE = {
    "test": {
        "definitions": [
            {
                "from": "git",
                "repository": "https://example.org/t.git",
                "path": "a.yaml",
                "name": "a",
            }
        ]
    }
}


def test_error_fields() -> None:
    error = error_of(job(TMPFS, {"boot": {"method": "qemux"}}))
    assert isinstance(error, JobError)  # the job outcome is a Job error
    assert error.path == "actions[1].boot.method"
    assert error.value == "qemux"
    assert "'qemu'" in error.expected and "'u-boot'" in error.expected
    assert str(error).startswith("actions[1].boot.method: got 'qemux'; expected one of 'avh',")
    assert str(error).endswith("(did you mean 'qemu'?)")


def test_missing_key_error_fields() -> None:
    data = job()
    del data["timeouts"]["job"]
    error = error_of(data)
    assert (
        str(error) == "timeouts.job: required key missing; expected a timeout such as {minutes: 10}"
    )
    assert error.path == "timeouts.job"
    assert error.value is None


def test_unknown_key_names_the_allowed_keys_and_a_suggestion() -> None:
    error = error_of(job({"deploy": {"to": "tmpfs", "imagse": {}}}))
    assert error.path == "actions[0].deploy.imagse"
    assert error.value == "imagse"
    assert "'images'" in error.expected
    assert "(did you mean 'images'?)" in str(error)


def test_first_problem_in_document_order_and_count_of_others() -> None:
    data = job({"boot": {"method": "minimal", "timeout": {"minutes": 0}}}, visibility="nobody")
    error = error_of(data)
    # 'visibility' comes before 'actions' in the file
    assert error.path == "visibility"
    assert str(error).endswith("(and 1 more problem)")


def test_the_root_must_be_a_mapping() -> None:
    values: list[Any] = [None, [], "text", 42]
    for value in values:
        error = error_of(value)
        assert str(error).startswith("job definition: got ")
        assert error.path == ""


def test_valid_job_is_returned_unchanged() -> None:
    data = job(TMPFS, QEMU, SMOKE)
    before = copy.deepcopy(data)
    assert validate_job(data) == before
    assert data == before


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (["job_name"], "", "a non-empty string of at most 200 characters"),
        (["job_name"], "x" * 201, "a non-empty string of at most 200 characters"),
        (["priority"], 101, "'high', 'medium', 'low' or an integer from 0 to 100"),
        (["priority"], True, "'high', 'medium', 'low' or an integer from 0 to 100"),
        (["visibility"], {"group": "qa"}, "a list of strings"),
        (["tags"], "x86", "a list of tag names"),
        (["secrets"], {"TOKEN": 42}, "a string"),
        (["timeouts", "job"], {"minutes": 1.5}, "a positive integer"),
        (
            ["timeouts", "job"],
            {"skip": True},
            "a timeout with one of 'days', 'hours', 'minutes' or 'seconds'",
        ),
        (["reboot_to_fastboot"], "yes", "true or false"),
        (["protocols", "lava-xnbd"], {"port": "any"}, "'auto' or a port number"),
    ],
)
def test_top_level_values(path: list[str], value: Any, expected: str) -> None:
    data = job()
    node = data
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    error = error_of(data)
    assert expected in str(error)


def test_context_accepts_lava_and_lab_variables() -> None:
    validate_job(
        job(context={"arch": "arm64", "no_kvm": True, "extra_options": ["-smp 2"], "lab_pdu": 3})
    )


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"arch": None}, "context.arch: got null"),
        (
            {"my-var": 1},
            "context.my-var: got unknown key 'my-var'; expected a context variable name",
        ),
        ({"arch": [{"a": 1}]}, "context.arch[0]: got {a: 1}"),
    ],
)
def test_context_refuses(context: dict[str, Any], message: str) -> None:
    assert str(error_of(job(context=context))).startswith(message)


def test_device_type_required_without_multinode() -> None:
    data = job()
    del data["device_type"]
    error = error_of(data)
    assert error.path == "device_type"
    assert "required key missing" in str(error)


def test_every_timeout_is_checked_against_the_job() -> None:
    data = job(
        {"boot": {"method": "minimal", "timeout": {"hours": 1}}},
        timeouts={"job": {"minutes": 30}, "connection": {"minutes": 31}},
    )
    error = error_of(data)
    assert error.path == "timeouts.connection"
    assert "(timeouts.job: {minutes: 30})" in str(error)
    assert str(error).endswith("(and 1 more problem)")
    # equal is fine
    validate_job(job({"boot": {"method": "minimal", "timeout": {"seconds": 1800}}}))


def test_namespaces_all_or_none() -> None:
    validate_job(
        job(
            {"deploy": {"namespace": "a", "to": "overlay"}},
            {"boot": {"namespace": "a", "method": "minimal"}},
        )
    )
    error = error_of(
        job({"deploy": {"to": "overlay"}}, {"boot": {"namespace": "a", "method": "minimal"}})
    )
    assert error.path == "actions[0].deploy.namespace"
    assert "actions[1].boot.namespace is 'a'" in str(error)


@pytest.mark.parametrize("namespace", ["common", "docker-test-shell"])
def test_reserved_namespaces(namespace: str) -> None:
    error = error_of(job({"boot": {"namespace": namespace, "method": "minimal"}}))
    assert error.path == "actions[0].boot.namespace"
    assert error.value == namespace


def test_action_item_must_name_a_section() -> None:
    error = error_of(job({"boot": {"method": "minimal"}}, {"deplyo": {"to": "overlay"}}))
    assert str(error).startswith("actions[1].deplyo: got unknown key 'deplyo'")
    assert "(did you mean 'deploy'?)" in str(error)
    assert error_of(job(["boot"])).path == "actions[0]"  # type: ignore[arg-type]
    assert error_of(job({})).path == "actions[0]"


def test_several_sections_in_one_item_are_each_validated() -> None:
    # lava-run runs every key of an item in order; so do we, and we check them all
    validate_job(job({"deploy": {"to": "overlay"}, "boot": {"method": "minimal"}}))
    error = error_of(job({"deploy": {"to": "overlay"}, "boot": {"method": "minimall"}}))
    assert error.path == "actions[0].boot.method"


def test_test_block_needs_a_kind() -> None:
    error = error_of(job({"test": {"timeout": {"minutes": 1}}}))
    assert error.path == "actions[0].test.definitions"
    assert "'definitions', 'interactive', 'monitors' or 'services'" in str(error)


def test_definition_needs_from() -> None:
    error = error_of(
        job({"test": {"definitions": [{"repository": "x", "path": "p", "name": "n"}]}})
    )
    assert error.path == "actions[0].test.definitions[0].from"


def test_definitions_docker_variant() -> None:
    block: dict[str, Any] = copy.deepcopy(SMOKE)
    block["test"]["docker"] = {"image": "debian:bookworm"}
    validate_job(job(block))
    block["test"]["docker"] = {"image": "Not A Valid Image"}
    error = error_of(job(block))
    assert error.path == "actions[0].test.docker.image"


def test_tftp_nfsrootfs_and_persistent_nfs_exclude_each_other() -> None:
    deploy = {
        "to": "tftp",
        "nfsrootfs": {"url": "https://example.org/r.tar.gz"},
        "persistent_nfs": {"address": "nfs:/srv/root"},
    }
    error = error_of(job({"deploy": deploy}))
    assert error.path == "actions[0].deploy.persistent_nfs"
    assert "cannot be used together with 'nfsrootfs'" in str(error)


def test_overlays_need_a_format() -> None:
    image = {
        "url": "https://example.org/r.ext4",
        "overlays": {"extra": {"url": "https://example.org/x.tar", "format": "tar", "path": "/"}},
    }
    error = error_of(job({"deploy": {"to": "download", "images": {"rootfs": image}}}))
    assert error.path == "actions[0].deploy.images.rootfs.format"
    image["format"] = "ext4"
    validate_job(job({"deploy": {"to": "download", "images": {"rootfs": image}}}))


def test_url_forms() -> None:
    for url in (
        "https://h/x",
        "file:///x",
        "file:/x",
        "scp://h/x",
        "downloads://x",
        "rclone://r/x",
    ):
        validate_job(job({"deploy": {"to": "download", "images": {"a": {"url": url}}}}))
    bad: list[Any] = ["", "image.img", "://x", 3]
    for url in bad:
        error = error_of(job({"deploy": {"to": "download", "images": {"a": {"url": url}}}}))
        assert error.path == "actions[0].deploy.images.a.url"


def test_images_must_not_be_empty() -> None:
    error = error_of(job({"deploy": {"to": "tmpfs", "images": {}}}))
    assert error.path == "actions[0].deploy.images"
    assert "non-empty mapping" in str(error)


def test_notify_rules() -> None:
    notify: dict[str, Any] = {
        "criteria": {"status": "all", "type": "regression"},
    }
    assert error_of(job(notify=notify)).path == "notify.criteria.type"
    notify = {
        "criteria": {"status": "finished"},
        "callback": {"url": "https://x"},
        "callbacks": [{"url": "https://y"}],
    }
    assert error_of(job(notify=notify)).path == "notify.callbacks"
    notify = {"criteria": {"status": "complete"}, "compare": {"query": {"username": "me"}}}
    assert error_of(job(notify=notify)).path == "notify.compare.query.name"
    notify = {
        "criteria": {"status": "complete"},
        "compare": {"query": {"entity": "testjob", "conditions": {"a": "b"}}},
    }
    validate_job(job(notify=notify))


# ---------------------------------------------------------------- multinode

ROLES = {
    "server": {"device_type": "qemu", "count": 1},
    "client": {"device_type": "qemu", "count": 2},
}


def multinode(
    *actions: dict[str, Any], roles: dict[str, Any] | None = None, **top: Any
) -> dict[str, Any]:
    data = job(*actions, protocols={"lava-multinode": {"roles": roles or copy.deepcopy(ROLES)}})
    del data["device_type"]
    data.update(top)
    return data


def test_multinode_submission() -> None:
    validate_job(multinode({"boot": {"role": ["server", "client"], "method": "minimal"}}))


@pytest.mark.parametrize("key", ["device_type", "context", "tags", "environment"])
def test_multinode_moves_keys_into_roles(key: str) -> None:
    value: Any = {
        "device_type": "qemu",
        "context": {"arch": "amd64"},
        "tags": ["x"],
        "environment": {"A": 1},
    }[key]
    error = error_of(multinode({"boot": {"role": ["server"], "method": "minimal"}}, **{key: value}))
    assert error.path == key
    assert f"'{key}' under protocols.lava-multinode.roles.<role>" in str(error)


def test_multinode_role_references() -> None:
    roles = copy.deepcopy(ROLES)
    roles["guest"] = {
        "connection": "ssh",
        "count": 1,
        "host_role": "sever",
        "expect_role": "server",
    }
    error = error_of(multinode({"boot": {"role": ["guest"], "method": "minimal"}}, roles=roles))
    assert error.path == "protocols.lava-multinode.roles.guest.host_role"
    assert "(did you mean 'server'?)" in str(error)


def test_multinode_role_needs_a_device_type_or_a_connection() -> None:
    error = error_of(
        multinode({"boot": {"role": ["a"], "method": "minimal"}}, roles={"a": {"count": 1}})
    )
    assert error.path == "protocols.lava-multinode.roles.a.device_type"


def test_multinode_pinned_device_needs_count_one() -> None:
    roles = {"a": {"device_type": "qemu", "device": "qemu-01", "count": 2}}
    error = error_of(multinode({"boot": {"role": ["a"], "method": "minimal"}}, roles=roles))
    assert error.path == "protocols.lava-multinode.roles.a.count"


def test_multinode_subjob_form() -> None:
    data = job(
        {"boot": {"role": "client", "method": "minimal"}},
        protocols={
            "lava-multinode": {
                "target_group": "c3a9",
                "role": "client",
                "group_size": 2,
                "sub_id": 0,
                "roles": {"101": "server", 102: "client"},
            }
        },
    )
    validate_job(data)  # device_type stays at the top level of a sub-job
    data["actions"][0]["boot"]["role"] = "observer"
    assert error_of(data).path == "actions[0].boot.role"
    del data["actions"][0]["boot"]["role"]
    assert error_of(data).path == "actions[0].boot.role"


def test_subjob_keys_only_in_subjobs() -> None:
    error = error_of(job(host_role="host"))
    assert error.path == "host_role"
    assert "only set on MultiNode sub-jobs" in str(error)
    error = error_of(
        multinode({"boot": {"role": ["server"], "method": "minimal"}}, connection="ssh")
    )
    assert error.path == "connection"


def test_per_action_protocol_calls() -> None:
    call = {"action": "execute-qemu", "request": "lava-wait", "messageID": "ready", "timeout": 120}
    data = multinode(
        {"boot": {"role": ["server"], "method": "minimal", "protocols": {"lava-multinode": [call]}}}
    )
    validate_job(data)
    # a single call instead of a list (as LAVA's documentation shows it)
    data["actions"][0]["boot"]["protocols"]["lava-multinode"] = call
    validate_job(data)
    del call["messageID"]
    assert error_of(data).path == "actions[0].boot.protocols.lava-multinode.messageID"


# ---------------------------------------------------------------- plugins


def test_plugin_adds_a_boot_method() -> None:
    schemas = {("boot", "my-method"): {Required("firmware"): str, Optional("speed"): int}}
    data = job({"boot": {"method": "my-method", "firmware": "fw.bin", "timeout": {"minutes": 2}}})
    validate_job(data, method_schemas=schemas)
    # unknown without the plugin
    assert error_of(data).path == "actions[0].boot.method"
    # the plugin's keys are checked, with our messages
    data["actions"][0]["boot"]["speed"] = "fast"
    error = error_of(data, method_schemas=schemas)
    assert error.path == "actions[0].boot.speed"
    assert error.expected == "an integer"
    del data["actions"][0]["boot"]["speed"]
    del data["actions"][0]["boot"]["firmware"]
    error = error_of(data, method_schemas=schemas)
    assert str(error) == "actions[0].boot.firmware: required key missing; expected a string"
    # the new method is listed when a method is unknown
    data["actions"][0]["boot"]["method"] = "nope"
    assert "'my-method'" in str(error_of(data, method_schemas=schemas))


def test_plugin_extends_a_builtin_method_and_adds_a_test_kind() -> None:
    schemas: dict[tuple[str, str], dict[Any, Any]] = {
        ("deploy", "tmpfs"): {Optional("firmware"): str},
        ("test", "robot"): {Required("robot"): [str]},
    }
    deploy = copy.deepcopy(TMPFS)
    deploy["deploy"]["firmware"] = "fw.bin"
    validate_job(job(deploy, {"test": {"robot": ["a.robot"]}}), method_schemas=schemas)
    error = error_of(job({"test": {"robot": "a.robot"}}), method_schemas=schemas)
    assert error.path == "actions[0].test.robot"


def test_plugin_schemas_are_compiled_once() -> None:
    def hook() -> dict[tuple[str, str], dict[Any, Any]]:
        # like a plugin hook: fresh dicts on every call
        return {("boot", "my-method"): {Required("firmware"): str, Optional("modes"): [str]}}

    assert job_schema(hook()) is job_schema(hook())
    assert job_schema(None) is job_schema({})
    other = {("boot", "my-method"): {Required("firmware"): int}}
    assert job_schema(other) is not job_schema(hook())


def test_plugin_section_must_exist() -> None:
    with pytest.raises(ValueError, match="unknown section 'reboot'"):
        validate_job(job(), method_schemas={("reboot", "x"): {}})


def test_known_methods() -> None:
    assert "qemu" in KNOWN_METHODS["boot"] and "u-boot" in KNOWN_METHODS["boot"]
    assert "tmpfs" in KNOWN_METHODS["deploy"] and "tftp" in KNOWN_METHODS["deploy"]
    assert KNOWN_METHODS["test"] == ("definitions", "interactive", "monitors", "services")


def test_huge_values_are_reported() -> None:
    huge = int("1" * 200, 2) ** 80  # more digits than Python prints
    error = error_of(job(job_name=huge))
    assert str(error).startswith("job_name: got <an integer of ")
    error = error_of(job(timeouts={"job": {"days": huge}}))
    assert error.path == "timeouts.job.days"
    assert "shorter than 999999999 days" in str(error)
    assert str(error_of(huge)).startswith("job definition: got <an integer of ")
