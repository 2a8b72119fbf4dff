"""The LAVA v2 job definition.

:func:`validate_job` checks a loaded job in two passes:

1. the schema: every key at every level is known (or refused with its path),
   and each action block is checked against the schema of its method
   (``deploy.to``, ``boot.method``, the kind of ``test``, ``command``);
2. the cross-checks LAVA makes on the whole job: no timeout longer than
   ``timeouts.job``, namespaces in every action or in none, MultiNode roles
   declared, used by every action and not mixed with top-level
   ``device_type``/``context``/``tags``/``environment``.

Schemas are compiled once at import; plugin methods (``method_schemas``)
are compiled on first use and cached.

Compatibility with LAVA's strict schema (``lava_common.schemas``): every job
it accepts is accepted here, with these deliberate exceptions, each of which
lava-run would fail on or silently ignore:

* artifact URLs need a scheme (``https://``, ``file:``, ``scp://``...): a bare
  ``image.img`` is refused now instead of by the downloader later;
* numbers are numbers: ``true`` is not a count or a priority, timeout units
  are positive integers (LAVA's ``Range`` also lets ``minutes: 1.5`` and
  ``repeat: true`` through), names and paths are non-empty;
* ``visibility: {}`` (a group mapping without ``group``) is refused;
* MultiNode: the roles an action names must be declared, and
  ``host_role``/``expect_role`` must name declared roles (LAVA's server
  checks the latter at submission).

Accepted beyond LAVA's strict schema, because LAVA's documentation shows them
or lava-run reads them: a descriptive ``name`` in test blocks;
``connection: ssh`` in ssh deploy/boot blocks and ``connection: serial`` in
qemu-iso; the secondary-media keys of u-boot/grub/grub-efi boots (``kernel``,
``ramdisk``, ``dtb``, ``root_uuid``, ``boot_part``, ``kernel_type``);
``failure_message`` in boot blocks; ``shallow`` and ``parameters`` in every
kind of test definition; ``parse.pattern`` in inline definitions; ``docker``
in nodebooter boots; ``version_args`` in fvp boots; ``overlay_path`` and a
plain artifact as ``qcomflash`` in qdl deploys; ``sparse`` in uuu images;
``request``/``expect_role``/``host_role`` on device roles; an action ``role``
given as a single string; a per-action protocol call given as one mapping
instead of a list; the MultiNode sub-job form (``target_group``, ``role``,
``group_size``, ``sub_id``, ``roles`` of job ids) that a LAVA server sends
to its workers, with ``connection``/``host_role`` at its top level.

An item of ``actions`` may hold several sections (lava-run runs them in
order); each is validated.

``context``: LAVA accepts only its CONTEXT_VARIABLES plus the lab's
EXTRA_CONTEXT_VARIABLES, which a worker cannot know; so any identifier is
accepted as a key, with a string, number or boolean value or a list of them
(as LAVA: no mappings, no nulls).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import voluptuous as vol
from voluptuous import Optional, Required

from lava_dispatcher.errors import InvalidJobError
from lava_dispatcher.schemas.boot import BOOT_COMMON, BOOT_METHODS
from lava_dispatcher.schemas.common import (
    ACTION_CHECKS,
    ACTION_COMMON,
    STRINGS,
    TIMEOUT,
    TIMEOUT_EXAMPLE,
    TIMEOUTS_BY_NAME,
    MethodSchema,
    timeout_seconds,
    timeout_text,
)
from lava_dispatcher.schemas.deploy import DEPLOY_COMMON, DEPLOY_METHODS
from lava_dispatcher.schemas.errors import format_value, make_error
from lava_dispatcher.schemas.notify import NOTIFY
from lava_dispatcher.schemas.test import TEST_KINDS
from lava_dispatcher.schemas.validators import (
    Anything,
    Bool,
    Conflict,
    Either,
    Int,
    Keyed,
    ListOf,
    Map,
    Mismatch,
    MissingKey,
    OneOf,
    Pattern,
    Scalar,
    Str,
    UnknownKey,
    Validator,
    quote_list,
    suggest,
)

#: Job ``context`` keys LAVA knows (its CONTEXT_VARIABLES).  Any other
#: identifier is accepted too: LAVA labs extend the list with
#: EXTRA_CONTEXT_VARIABLES, which we cannot know.
CONTEXT_VARIABLES = (
    # qemu
    "arch",
    "boot_console",
    "boot_root",
    "cpu",
    "extra_options",
    "guestfs_driveid",
    "guestfs_interface",
    "guestfs_size",
    "machine",
    "memory",
    "model",
    "monitor",
    "netdevice",
    "no_kvm",
    "no_network",
    "serial",
    "vga",
    # u-boot load addresses
    "booti_dtb_addr",
    "booti_kernel_addr",
    "booti_ramdisk_addr",
    "bootm_dtb_addr",
    "bootm_kernel_addr",
    "bootm_ramdisk_addr",
    "bootz_dtb_addr",
    "bootz_kernel_addr",
    "bootz_ramdisk_addr",
    # others
    "deploy_character_delay",
    "boot_character_delay",
    "boot_retry",
    "bootloader_prompt",
    "console_device",
    "custom_kernel_args",
    "extra_kernel_args",
    "extra_nfsroot_args",
    "failure_retry",
    "kernel_loglevel",
    "kernel_start_message",
    "lava_test_results_dir",
    "menu_interrupt_prompt",
    "mustang_menu_list",
    "test_character_delay",
    "tftp_mac_address",
    "uboot_extra_error_message",
    "uboot_needs_interrupt",
    "uboot_altbank",
)

SECTIONS = ("deploy", "boot", "test", "command")

_CONTEXT_SCALAR = Scalar(expected="a string, number or boolean")
CONTEXT = Keyed(
    Either(
        _CONTEXT_SCALAR,
        ListOf(_CONTEXT_SCALAR),
        expected="a string, number, boolean or a list of them",
    ),
    key=Pattern(r"[A-Za-z_][A-Za-z0-9_]*", "a variable name"),
    expected="a mapping of device template variables, such as {arch: amd64, memory: 1024}",
    key_expected="a context variable name (letters, digits and '_'), such as "
    + quote_list(CONTEXT_VARIABLES[:4], conj="or"),
)


class _Name200(Validator):
    expected = "a non-empty string of at most 200 characters"

    def __call__(self, value: Any) -> Any:
        if not isinstance(value, str) or not value or len(value) > 200:
            raise Mismatch(self.expected)
        return value


NAME_200 = _Name200()

JOB_TIMEOUTS = Map(
    {
        Required("job"): TIMEOUT,
        Optional("action"): TIMEOUT,
        Optional("actions"): TIMEOUTS_BY_NAME,
        Optional("connection"): TIMEOUT,
        Optional("connections"): TIMEOUTS_BY_NAME,
        Optional("queue"): TIMEOUT,
    },
    expected="a mapping such as {job: {minutes: 30}, action: {minutes: 5}}",
)

VISIBILITY = Either(
    OneOf("public", "personal"),
    Map({Required("group"): STRINGS}, expected="{group: [<group names>]}"),
    expected="'public', 'personal' or {group: [<group names>]}",
)

PRIORITY = Either(
    OneOf("high", "medium", "low"),
    Int(0, 100),
    expected="'high', 'medium', 'low' or an integer from 0 to 100",
)

ENVIRONMENT = Keyed(Anything(), key=Anything(), expected="a mapping of variable names to values")
TAGS = ListOf(Str(), expected="a list of tag names")

# ------------------------------------------------------------------ multinode

_ROLE_COMMON: dict[Any, Any] = {
    Required("count"): Int(0, expected="a number of devices (an integer >= 0)"),
    Optional("essential"): Bool(),
    Optional("timeout"): TIMEOUT,
    Optional("tags"): TAGS,
    Optional("context"): CONTEXT,
    Optional("request"): Str(expected="a protocol request such as 'lava-start'"),
    Optional("expect_role"): Str(expected="a role name"),
    Optional("host_role"): Str(expected="a role name"),
}


def _one_device(role: dict[Any, Any]) -> None:
    if "device" in role and role.get("count") != 1:
        raise Conflict(
            "a role pinned to one 'device' must have 'count: 1'",
            "count: 1 for a role with 'device'",
            ["count"],
        )


DEVICE_ROLE = Map(
    {
        **_ROLE_COMMON,
        Required("device_type"): NAME_200,
        Optional("device"): NAME_200,
        Optional("worker"): NAME_200,
        Optional("environment"): ENVIRONMENT,
    },
    expected="a role such as {device_type: qemu, count: 1}",
    checks=[_one_device],
)

CONNECTION_ROLE = Map(
    {
        **_ROLE_COMMON,
        Required("connection"): Str(expected="a connection type such as 'ssh'"),
        Required("expect_role"): Str(expected="the role to wait for"),
        Required("host_role"): Str(expected="the role that hosts this one"),
    },
    expected="a role such as {connection: ssh, count: 1, host_role: host, expect_role: host}",
)


class _Role(Validator):
    expected = "a role such as {device_type: qemu, count: 1} or {connection: ssh, count: 1, ...}"

    def __call__(self, value: Any) -> Any:
        if isinstance(value, dict) and "connection" in value:
            return CONNECTION_ROLE(value)
        return DEVICE_ROLE(value)


MULTINODE_SUBMISSION = Map(
    {
        Required("roles"): Keyed(
            _Role(),
            nonempty=True,
            expected="a mapping of role names to roles, such as {server: {device_type: qemu, count: 1}}",
            key_expected="a role name (a string)",
        ),
        Optional("timeout"): TIMEOUT,
    },
    expected="{roles: {<role>: {device_type: ..., count: ...}}, timeout: ...}",
)

MULTINODE_SPLIT = Map(
    {
        Required("target_group"): Str(nonempty=True, expected="the group identifier"),
        Required("role"): Str(nonempty=True, expected="the role of this job"),
        Required("group_size"): Int(1),
        Optional("sub_id"): Int(0),
        Optional("roles"): Keyed(
            Str(),
            key=Either(Str(), Int()),
            expected="a mapping of job ids to role names",
            key_expected="a job id",
        ),
        Optional("timeout"): TIMEOUT,
        Optional("essential"): Bool(),
        Optional("request"): Str(),
        Optional("expect_role"): Str(),
        Optional("host_role"): Str(),
        Optional("connection"): Str(),
        Optional("tags"): TAGS,
        Optional("environment"): ENVIRONMENT,
        Optional("device"): Str(),
        Optional("worker"): Str(),
        Optional("device_type"): Str(),
        Optional("context"): CONTEXT,
    },
    expected="a MultiNode sub-job protocol block {target_group, role, group_size, sub_id, ...}",
)


class _Multinode(Validator):
    """Submission form (``roles`` of role definitions) or sub-job form (``target_group``)."""

    expected = (
        "{roles: {<role>: {device_type: ..., count: ...}}} or a sub-job block with target_group"
    )

    def __call__(self, value: Any) -> Any:
        if isinstance(value, dict) and "target_group" in value:
            return MULTINODE_SPLIT(value)
        return MULTINODE_SUBMISSION(value)


PROTOCOLS = Map(
    {
        Optional("lava-multinode"): _Multinode(),
        Optional("lava-xnbd"): Map(
            {
                Required("port"): Either(
                    OneOf("auto"), Int(1, 65535), expected="'auto' or a port number"
                ),
                Optional("timeout"): TIMEOUT,
            },
            expected="{port: auto}",
        ),
    },
    expected="a mapping of protocols: 'lava-multinode' and/or 'lava-xnbd'",
)

# ------------------------------------------------------------------ actions


def _block(common: Mapping[Any, Any], selector: str | None, name: str, method: MethodSchema) -> Map:
    fields: dict[Any, Any] = {**ACTION_COMMON, **common}
    if selector is not None:
        fields[Required(selector)] = OneOf(name)
    for marker, value in method.fields.items():
        key = marker.schema if isinstance(marker, vol.Marker) else marker
        for old in [m for m in fields if (m.schema if isinstance(m, vol.Marker) else m) == key]:
            del fields[old]
        fields[marker] = value
    return Map(
        fields, expected="an action block (a mapping)", checks=(*ACTION_CHECKS, *method.checks)
    )


class _Section(Validator):
    """deploy or boot: the block's schema is chosen by ``to``/``method``."""

    def __init__(
        self,
        section: str,
        selector: str,
        common: Mapping[Any, Any],
        methods: Mapping[str, MethodSchema],
    ) -> None:
        self.section = section
        self.selector = selector
        self.blocks = {name: _block(common, selector, name, m) for name, m in methods.items()}
        self.names = sorted(self.blocks)
        self.choices = "one of " + quote_list(self.names)
        self.expected = f"a {section} block (a mapping with '{selector}')"

    def __call__(self, value: Any) -> Any:
        if not isinstance(value, dict):
            raise Mismatch(
                f"a {self.section} block: a mapping such as {{{self.selector}: {self.names[0]}, ...}}"
            )
        if self.selector not in value:
            raise MissingKey(self.choices, [self.selector])
        method = value[self.selector]
        block = self.blocks.get(method) if isinstance(method, str) else None
        if block is None:
            near = suggest(method, self.names)
            raise Mismatch(
                self.choices, [self.selector], hint=f"did you mean {near!r}?" if near else ""
            )
        return block(value)


class _TestSection(Validator):
    """test: the block's schema is chosen by which kind key it has."""

    expected = (
        "a test block (a mapping with 'definitions', 'interactive', 'monitors' or 'services')"
    )

    def __init__(self, kinds: Mapping[str, MethodSchema]) -> None:
        self.blocks = {name: _block({}, None, name, m) for name, m in kinds.items()}
        # 'docker' is a variant of 'definitions', not a kind of its own
        self.selectors = [k for k in kinds if k != "docker"]
        self.choices = quote_list(self.selectors)

    def __call__(self, value: Any) -> Any:
        if not isinstance(value, dict):
            raise Mismatch(f"a test block: a mapping with {self.choices}")
        present = [k for k in self.selectors if k in value]
        if not present:
            raise MissingKey(
                f"one of {self.choices} (the key chooses the kind of test)", [self.selectors[0]]
            )
        if len(present) > 1:
            raise Conflict(
                f"{present[1]!r} cannot be used together with {present[0]!r} in one test block",
                f"one of {self.choices} per test block",
                [present[1]],
            )
        kind = present[0]
        if kind == "definitions" and "docker" in value and "docker" in self.blocks:
            kind = "docker"
        return self.blocks[kind](value)


COMMAND = Map(
    {
        **ACTION_COMMON,
        Required("name"): Str(
            nonempty=True,
            expected="the name of a device command such as 'hard_reset' or of a user command",
        ),
    },
    expected="a command block such as {name: power_on}",
    checks=ACTION_CHECKS,
)


class _ActionItem(Validator):
    expected = "an action: a mapping with one of 'deploy', 'boot', 'test' or 'command'"

    def __init__(self, sections: Mapping[str, Any]) -> None:
        self.sections = dict(sections)

    def __call__(self, value: Any) -> Any:
        if not isinstance(value, dict) or not value:
            raise Mismatch(self.expected)
        errors: list[vol.Invalid] = []
        out = {}
        for key, block in value.items():
            check = self.sections.get(key) if isinstance(key, str) else None
            if check is None:
                near = suggest(key, SECTIONS)
                errors.append(
                    UnknownKey(
                        "one of 'deploy', 'boot', 'test' or 'command'",
                        [key],
                        hint=f"did you mean {near!r}?" if near else "",
                    )
                )
                continue
            try:
                out[key] = check(block)
            except vol.Invalid as exc:
                exc.prepend([key])
                errors.append(exc)
        if errors:
            raise vol.MultipleInvalid(
                [
                    e
                    for err in errors
                    for e in (err.errors if isinstance(err, vol.MultipleInvalid) else [err])
                ]
            )
        return out


def _job_fields(actions: Validator) -> dict[Any, Any]:
    return {
        Required("job_name"): NAME_200,
        Optional("device_type"): NAME_200,
        Optional("device"): NAME_200,
        Optional("worker"): NAME_200,
        Required("timeouts"): JOB_TIMEOUTS,
        Required("visibility"): VISIBILITY,
        Optional("context"): CONTEXT,
        Optional("metadata"): Keyed(
            Anything(),
            key=Either(Str(), Int()),
            expected="a mapping of names to values",
            key_expected="a metadata name (a string)",
        ),
        Optional("priority"): PRIORITY,
        Optional("tags"): TAGS,
        Optional("secrets"): Keyed(Str(), expected="a mapping of secret names to strings"),
        Optional("environment"): ENVIRONMENT,
        Optional("protocols"): PROTOCOLS,
        Optional("notify"): NOTIFY,
        Optional("reboot_to_fastboot"): Bool(),
        Required("actions"): actions,
        # copied to the top level of a MultiNode sub-job by the server
        Optional("connection"): Str(),
        Optional("host_role"): Str(),
    }


# ------------------------------------------------------------------ cross-checks


def _actions(data: dict[str, Any]) -> list[tuple[int, str, dict[str, Any]]]:
    out = []
    for index, item in enumerate(data.get("actions", [])):
        for key, block in item.items():
            out.append((index, key, block))
    return out


def _check_timeouts(data: dict[str, Any], errors: list[vol.Invalid]) -> None:
    timeouts = data["timeouts"]
    job = timeouts["job"]
    limit = timeout_seconds(job)
    expected = f"a timeout no longer than the job timeout (timeouts.job: {timeout_text(job)})"

    def check(path: list[Any], value: Any) -> None:
        if value is not None and timeout_seconds(value) > limit:
            errors.append(Mismatch(expected, path))

    check(["timeouts", "action"], timeouts.get("action"))
    check(["timeouts", "connection"], timeouts.get("connection"))
    for group in ("actions", "connections"):
        for name, value in timeouts.get(group, {}).items():
            check(["timeouts", group, name], value)
    for index, key, block in _actions(data):
        check(["actions", index, key, "timeout"], block.get("timeout"))


def _check_namespaces(data: dict[str, Any], errors: list[vol.Invalid]) -> None:
    actions = _actions(data)
    named = [(i, k, b["namespace"]) for i, k, b in actions if "namespace" in b]
    if not named or len(named) == len(actions):
        return
    first = named[0]
    example = f"actions[{first[0]}].{first[1]}.namespace is {first[2]!r}"
    for index, key, block in actions:
        if "namespace" not in block:
            errors.append(
                MissingKey(
                    f"a namespace, as in every other action when one action has one ({example})",
                    ["actions", index, key, "namespace"],
                )
            )


def _action_roles(block: dict[str, Any]) -> list[str]:
    role = block.get("role")
    if role is None:
        return []
    return [role] if isinstance(role, str) else list(role)


def _check_multinode(data: dict[str, Any], errors: list[vol.Invalid]) -> None:
    multinode = data.get("protocols", {}).get("lava-multinode")
    split = multinode is not None and "target_group" in multinode
    if not split:
        for key in ("connection", "host_role"):
            if key in data:
                errors.append(
                    Conflict(
                        f"{key!r} is only set on MultiNode sub-jobs",
                        f"{key!r} inside protocols.lava-multinode.roles.<role>",
                        [key],
                    )
                )
    if multinode is None:
        if "device_type" not in data:
            errors.append(
                MissingKey(
                    "a device type name such as 'qemu' (or MultiNode roles in protocols.lava-multinode)",
                    ["device_type"],
                )
            )
        return

    if split:
        roles = {multinode["role"], *(str(r) for r in multinode.get("roles", {}).values())}
    else:
        roles = set(multinode["roles"])
        for key in ("device_type", "context", "tags", "environment"):
            if data.get(key):
                errors.append(
                    Conflict(
                        "a MultiNode job sets it for each role",
                        f"{key!r} under protocols.lava-multinode.roles.<role>",
                        [key],
                    )
                )
        for name, role in multinode["roles"].items():
            for key in ("host_role", "expect_role"):
                if key in role and role[key] not in roles:
                    near = suggest(role[key], roles)
                    errors.append(
                        Mismatch(
                            "one of the declared roles " + quote_list(sorted(roles)),
                            ["protocols", "lava-multinode", "roles", name, key],
                            hint=f"did you mean {near!r}?" if near else "",
                        )
                    )
    known = quote_list(sorted(roles))
    for index, key, block in _actions(data):
        if "role" not in block:
            errors.append(
                MissingKey(
                    f"the roles this action runs for, from {known} (every action of a MultiNode job needs one)",
                    ["actions", index, key, "role"],
                )
            )
            continue
        role = block["role"]
        for position, name in enumerate(_action_roles(block)):
            if name not in roles:
                near = suggest(name, roles)
                path: list[Any] = ["actions", index, key, "role"]
                if not isinstance(role, str):
                    path.append(position)
                errors.append(
                    Mismatch(
                        f"a role declared in protocols.lava-multinode: {known}",
                        path,
                        hint=f"did you mean {near!r}?" if near else "",
                    )
                )


def _cross_checks(data: dict[str, Any]) -> None:
    errors: list[vol.Invalid] = []
    _check_multinode(data, errors)
    _check_namespaces(data, errors)
    _check_timeouts(data, errors)
    if errors:
        raise vol.MultipleInvalid(errors)


# ------------------------------------------------------------------ building


class JobSchema:
    """A compiled job schema for one set of methods."""

    def __init__(
        self, method_schemas: Mapping[tuple[str, str], Mapping[Any, Any]] | None = None
    ) -> None:
        deploy = dict(DEPLOY_METHODS)
        boot = dict(BOOT_METHODS)
        test = dict(TEST_KINDS)
        tables = {"deploy": deploy, "boot": boot, "test": test}
        for (section, name), fields in (method_schemas or {}).items():
            if section not in tables:
                raise ValueError(
                    f"method_schemas: unknown section {section!r} (expected 'deploy', 'boot' or 'test')"
                )
            table = tables[section]
            if section == "test" and name not in table:
                fields = {Required(name): object, **fields}
            if name in table:
                base = table[name]
                table[name] = MethodSchema({**base.fields, **fields}, *base.checks)
            else:
                table[name] = MethodSchema(dict(fields))
        self.sections = {
            "deploy": _Section("deploy", "to", DEPLOY_COMMON, deploy),
            "boot": _Section("boot", "method", BOOT_COMMON, boot),
            "test": _TestSection(test),
            "command": COMMAND,
        }
        self.actions = ListOf(
            _ActionItem(self.sections),
            expected="a list of actions such as [{deploy: {...}}, {boot: {...}}, {test: {...}}]",
        )
        self.job = Map(
            _job_fields(self.actions),
            expected="a job definition: a mapping with job_name, timeouts, visibility and actions",
        )
        self._schema = vol.Schema(self.job)

    def validate(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise InvalidJobError(
                f"job definition: got {_kind(data)}; expected a mapping with job_name, timeouts, visibility and actions",
                path="",
                value=data,
                expected="a mapping",
            )
        try:
            out: dict[str, Any] = self._schema(data)
            _cross_checks(out)
        except vol.Invalid as exc:
            raise make_error(exc, data, InvalidJobError, "job definition") from None
        return out


def _kind(data: Any) -> str:
    if data is None:
        return "an empty document"
    if isinstance(data, list):
        return "a list"
    if isinstance(data, str):
        return f"the text {format_value(data, 40)}"
    return format_value(data, 60)


DEFAULT_SCHEMA = JobSchema()
_CACHE: dict[str, tuple[Any, JobSchema]] = {}
_LOCK = threading.Lock()


def job_schema(method_schemas: Mapping[tuple[str, str], Mapping[Any, Any]] | None) -> JobSchema:
    """The compiled schema for ``method_schemas`` (built once per distinct mapping)."""
    if not method_schemas:
        return DEFAULT_SCHEMA
    # Plugins usually build their dicts afresh on every hook call, so the cache
    # is keyed by what the schemas say (their repr), not by object identity.
    # Cached entries keep their dicts alive: an object repr that embeds an
    # address (a lambda) cannot then be reused by a different object.
    key = repr(sorted(method_schemas.items(), key=lambda item: repr(item[0])))
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            return hit[1]
        schema = JobSchema(method_schemas)
        if len(_CACHE) > 32:
            _CACHE.clear()
        _CACHE[key] = (dict(method_schemas), schema)
        return schema


def validate_job(
    data: Any, *, method_schemas: Mapping[tuple[str, str], Mapping[Any, Any]] | None = None
) -> dict[str, Any]:
    """Validate a loaded job definition; return it, or raise one InvalidJobError."""
    return job_schema(method_schemas).validate(data)


__all__ = ["CONTEXT_VARIABLES", "TIMEOUT_EXAMPLE", "JobSchema", "job_schema", "validate_job"]
