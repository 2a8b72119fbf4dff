"""Whole MultiNode groups on one machine: split a submission, run its sub-jobs.

LAVA's server splits a MultiNode submission into one sub-job per role
instance, gives each its protocol settings (target_group, role, group_size,
sub_id and the role's and protocol's other keys) and, once all are
scheduled, the group's ``roles`` map (job id -> role). :func:`split_group`
does the same (facts from LAVA's ``split_multinode_yaml``). As on LAVA's
server, sub-job ``n`` of submission ``<id>`` is shown as ``<id>.<n>`` and has
a whole-number job id of its own, ``<id> + n``: the job id is the node's name
on the coordinator and in the replies typed to the DUT, whose helpers split
items at `` <digits>:``, so it cannot hold a dot. :func:`run_group` then runs
the sub-jobs as parallel ``lava-dispatch run`` processes against a
coordinator of ours on a free loopback port (or the one given), prefixes
their progress lines with ``<id>.<n> role``, writes each sub-job's outputs
under ``DIR/<id>.<n>/`` and exits 0 only when every sub-job is Complete.
"""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

#: top-level keys every sub-job keeps (LAVA's list)
COPIED = ("job_name", "timeouts", "priority", "visibility", "notify", "metadata",
          "reboot_to_fastboot", "secrets")  # fmt: skip
#: role keys that go to the top level of the sub-job, not to the protocol
SCHEDULING = ("device_type", "connection", "host_role", "context")
#: how long the coordinator may take to listen (seconds)
COORDINATOR_START = 30.0
#: exit codes of `lava-dispatch run`, worst last
OUTCOMES = {0: "Complete", 1: "Incomplete", 3: "Canceled", 2: "Invalid"}


class GroupError(ValueError):
    """A MultiNode submission or device list that cannot be run: says which key and why."""


@dataclass
class SubJob:
    role: str
    sub_id: int
    definition: dict[str, Any]
    #: the job's own id (a whole number): its name in the group
    job_id: str = ""
    #: ``<submission id>.<sub_id>``, what LAVA's server shows, and the output directory
    name: str = ""
    device: Path | None = None
    process: subprocess.Popen[str] | None = field(default=None, repr=False)
    code: int | None = None

    @property
    def label(self) -> str:
        return f"{self.name} {self.role}"


def _protocol(definition: Mapping[str, Any]) -> Any:
    protocols = definition.get("protocols")
    return protocols.get("lava-multinode") if isinstance(protocols, Mapping) else None


def is_multinode(definition: Mapping[str, Any]) -> bool:
    """Whether a job is a MultiNode submission still to be split."""
    protocol = _protocol(definition)
    return isinstance(protocol, Mapping) and "roles" in protocol and "target_group" not in protocol


def split_group(
    definition: Mapping[str, Any], base_id: str, target_group: str | None = None
) -> list[SubJob]:
    """One sub-job per role instance, in role order, with job ids ``base_id +
    sub_id``, names ``<base_id>.<sub_id>`` and the group's roles map in place."""
    if not base_id.isascii() or not base_id.isdigit():
        raise GroupError(
            f"--job-id {base_id!r}: a MultiNode submission needs a whole number: its sub-jobs "
            "are numbered from it, and the DUTs read job ids as digits"
        )
    protocol = _protocol(definition)
    if not isinstance(protocol, Mapping) or not isinstance(protocol.get("roles"), Mapping):
        raise GroupError(
            "protocols.lava-multinode.roles: missing; expected a mapping of role names to "
            "{device_type: ..., count: N}"
        )
    roles: Mapping[str, Any] = protocol["roles"]
    if not roles:
        raise GroupError("protocols.lava-multinode.roles: empty; expected at least one role")
    for name, settings in roles.items():
        if not isinstance(name, str) or not name:
            raise GroupError(f"protocols.lava-multinode.roles: role name {name!r} is not a string")
        if not isinstance(settings, Mapping):
            raise GroupError(
                f"protocols.lava-multinode.roles.{name}: expected a mapping, got {settings!r}"
            )
        count = settings.get("count")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise GroupError(
                f"protocols.lava-multinode.roles.{name}.count: got {count!r}; expected a positive integer"
            )
    actions = definition.get("actions")
    if not isinstance(actions, list) or not actions:
        raise GroupError("actions: expected a list of deploy/boot/test/command blocks")
    for index, action in enumerate(actions):
        if not isinstance(action, Mapping) or len(action) != 1:
            raise GroupError(f"actions[{index}]: expected one block such as {{deploy: ...}}")
        ((kind, block),) = action.items()
        wanted = block.get("role") if isinstance(block, Mapping) else None
        if not wanted:
            raise GroupError(
                f"actions[{index}].{kind}.role: missing; every action of a MultiNode job names "
                f"the roles it is for (one of {', '.join(map(str, roles))})"
            )
        if not isinstance(wanted, (str, list)):
            raise GroupError(
                f"actions[{index}].{kind}.role: got {wanted!r}; expected a list of role names"
            )
        listed = [wanted] if isinstance(wanted, str) else list(wanted)
        unknown = [r for r in listed if not isinstance(r, str) or r not in roles]
        if unknown:
            raise GroupError(
                f"actions[{index}].{kind}.role: {unknown[0]!r} is not a role of this group "
                f"(roles: {', '.join(map(str, roles))})"
            )

    group = target_group or str(uuid.uuid4())
    group_size = sum(int(settings["count"]) for settings in roles.values())
    shared = {k: v for k, v in protocol.items() if k not in ("roles", "role")}
    subjobs: list[SubJob] = []
    sub_id = 0
    for name, settings in roles.items():
        mine = [
            {kind: {**copy.deepcopy(block), "role": name}}
            for action in actions
            for kind, block in action.items()
            if name in ([block["role"]] if isinstance(block["role"], str) else block["role"])
        ]
        for _ in range(int(settings["count"])):
            sub = {key: copy.deepcopy(definition[key]) for key in COPIED if key in definition}
            for key in SCHEDULING:
                if key in settings:
                    sub[key] = copy.deepcopy(settings[key])
            params: dict[str, Any] = {
                "target_group": group,
                "role": name,
                "group_size": group_size,
                "sub_id": sub_id,
            }
            params.update({k: copy.deepcopy(v) for k, v in settings.items()
                           if k != "count" and k not in SCHEDULING})  # fmt: skip
            params.update(copy.deepcopy(shared))
            sub["protocols"] = {"lava-multinode": params}
            sub["actions"] = copy.deepcopy(mine)
            subjobs.append(SubJob(name, sub_id, sub, job_id=str(int(base_id) + sub_id),
                                  name=f"{base_id}.{sub_id}"))  # fmt: skip
            sub_id += 1
    role_map = {job.job_id: job.role for job in subjobs}
    for job in subjobs:
        job.definition["protocols"]["lava-multinode"]["roles"] = dict(role_map)
    return subjobs


def parse_device_args(values: Sequence[str]) -> list[tuple[str, Path]]:
    """``ROLE=DEVICE`` arguments, in order."""
    pairs = []
    for value in values:
        role, sep, path = value.partition("=")
        if not sep or not role or not path:
            raise GroupError(
                f"--device {value!r}: a MultiNode job needs ROLE=DEVICE_FILE for each role instance"
            )
        pairs.append((role, Path(path)))
    return pairs


def assign_devices(subjobs: Sequence[SubJob], devices: Sequence[tuple[str, Path]]) -> None:
    """Give each sub-job its device file: one per role instance in order, or
    one file for every instance of a role (virtual devices such as QEMU)."""
    by_role: dict[str, list[Path]] = {}
    for role, path in devices:
        by_role.setdefault(role, []).append(path)
    roles = {job.role for job in subjobs}
    unknown = sorted(set(by_role) - roles)
    if unknown:
        raise GroupError(
            f"--device {unknown[0]}=...: no role {unknown[0]!r} in this job "
            f"(roles: {', '.join(sorted(roles))})"
        )
    for role in sorted(roles):
        instances = [job for job in subjobs if job.role == role]
        files = by_role.get(role)
        if not files:
            raise GroupError(f"role {role!r} has no device: give --device {role}=DEVICE_FILE")
        if len(files) not in (1, len(instances)):
            raise GroupError(
                f"role {role!r} has count {len(instances)} but {len(files)} device files were "
                f"given; expected 1 (shared) or {len(instances)} (one per instance)"
            )
        for index, job in enumerate(instances):
            job.device = files[index if len(files) > 1 else 0]
            if not job.device.is_file():
                raise GroupError(f"--device {role}={job.device}: no such file")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int, deadline: float, process: subprocess.Popen[Any]) -> bool:
    while time.monotonic() < deadline and process.poll() is None:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return True
        threading.Event().wait(0.02)  # the coordinator is starting: retry its port
    return False


class GroupRun:
    """The processes of one group run: the coordinator and the sub-jobs."""

    def __init__(self, subjobs: list[SubJob], output_dir: Path, out: TextIO) -> None:
        self.subjobs = subjobs
        self.output_dir = output_dir
        self.out = out
        self.coordinator: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def say(self, text: str) -> None:
        with self._lock:
            self.out.write(text + "\n")
            self.out.flush()

    def start_coordinator(self, env: Mapping[str, str]) -> str:
        port = free_port()
        log = open(self.output_dir / "coordinator.log", "wb")  # noqa: SIM115 - closed in stop()
        self.coordinator = subprocess.Popen(
            [sys.executable, "-m", "lava_dispatcher", "coordinator", "--listen",
             f"127.0.0.1:{port}", "--state", str(self.output_dir / "coordinator-state")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=dict(env),
        )  # fmt: skip
        log.close()
        if not _listening(port, time.monotonic() + COORDINATOR_START, self.coordinator):
            tail = (self.output_dir / "coordinator.log").read_text(errors="replace")[-500:]
            raise GroupError(f"the coordinator did not start on 127.0.0.1:{port}: {tail.strip()}")
        return f"127.0.0.1:{port}"

    def start(self, job: SubJob, argv: list[str], env: Mapping[str, str]) -> None:
        job.process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, errors="replace", env=dict(env),
        )  # fmt: skip
        thread = threading.Thread(target=self._relay, args=(job,), daemon=True)
        thread.start()
        self._threads.append(thread)

    def _relay(self, job: SubJob) -> None:
        assert job.process is not None and job.process.stdout is not None
        for line in job.process.stdout:
            self.say(f"{job.label:<16} | {line.rstrip()}")

    def wait(self) -> None:
        for job in self.subjobs:
            if job.process is not None:
                job.code = job.process.wait()
        for thread in self._threads:
            thread.join(10)

    def signal_all(self, signum: int) -> None:
        for job in self.subjobs:
            if job.process is not None and job.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    job.process.send_signal(signum)

    def stop(self) -> None:
        """End whatever still runs, ours only, by PID: sub-jobs, then the coordinator."""
        self.signal_all(signal.SIGTERM)
        for job in self.subjobs:
            if job.process is not None:
                try:
                    job.code = job.process.wait(30)
                except subprocess.TimeoutExpired:
                    job.process.kill()
                    job.code = job.process.wait()
        if self.coordinator is not None and self.coordinator.poll() is None:
            self.coordinator.terminate()
            try:
                self.coordinator.wait(10)
            except subprocess.TimeoutExpired:
                self.coordinator.kill()
                self.coordinator.wait()


def run_group(
    job_path: Path,
    devices: Sequence[str],
    *,
    output_dir: Path,
    base_id: str,
    dispatcher_path: Path | None,
    overrides: Mapping[str, Any] | None = None,
    console: bool = False,
    out: TextIO = sys.stdout,
    child_env: Callable[[], dict[str, str]] | None = None,
) -> int:
    """Split the submission at `job_path` and run its sub-jobs in parallel, and
    return 0 only when every one is Complete.

    The coordinator is the dispatcher setting ``coordinator`` when the
    dispatcher file or `overrides` (the command line) give one, for example
    a lab's shared coordinator or LAVA's own; otherwise one of ours is started
    on a free loopback port for this group and stopped at its end.

    Each sub-job's progress (actions, results, warnings) is shown under its
    name; with ``console`` its board's console lines too (every line of every
    board: for a few boards, when debugging)."""
    from lava_dispatcher.results import atomic_write
    from lava_dispatcher.schemas.loader import load_yaml

    definition = load_yaml(job_path.read_text(encoding="utf-8"), str(job_path))
    if not isinstance(definition, Mapping) or not is_multinode(definition):
        raise GroupError(f"{job_path}: not a MultiNode job (no protocols.lava-multinode.roles)")
    subjobs = split_group(definition, base_id)
    assign_devices(subjobs, parse_device_args(devices))
    output_dir = output_dir.resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    env = child_env() if child_env is not None else dict(os.environ)
    dispatcher: dict[str, Any] = {}
    if dispatcher_path is not None:
        loaded = load_yaml(dispatcher_path.read_text(encoding="utf-8"), str(dispatcher_path))
        dispatcher = dict(loaded or {})
    dispatcher.update(overrides or {})
    run = GroupRun(subjobs, output_dir, out)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def forward(signum: int, frame: Any) -> None:
        run.say(f"group: {signal.Signals(signum).name}: cancelling every sub-job")
        run.signal_all(signum)

    try:
        for sig in previous:
            signal.signal(sig, forward)
        if dispatcher.get("coordinator"):
            address = str(dispatcher["coordinator"])
        else:
            address = dispatcher["coordinator"] = run.start_coordinator(env)
        run.say(f"group {subjobs[0].definition['protocols']['lava-multinode']['target_group']}: "
                f"{len(subjobs)} sub-jobs, coordinator {address}")  # fmt: skip
        for job in subjobs:
            directory = output_dir / job.name
            directory.mkdir(parents=True, exist_ok=True)
            job_file = directory / "job.yaml"
            atomic_write(job_file, yaml.safe_dump(job.definition, sort_keys=False))
            config = directory / "dispatcher.yaml"
            atomic_write(config, yaml.safe_dump(dispatcher, sort_keys=False))
            assert job.device is not None
            argv = [sys.executable, "-m", "lava_dispatcher", "run", str(job_file),
                    "--device", str(job.device), "--job-id", job.job_id,
                    "--output-dir", str(directory), "--dispatcher", str(config), "--live",
                    "--console" if console else "--no-console"]  # fmt: skip
            run.say(f"{job.label:<16} | device {job.device}")
            run.start(job, argv, env)
        run.wait()
    finally:
        run.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    worst = 0
    for job in subjobs:
        code = job.code if job.code is not None else 1
        run.say(f"{job.label:<16} | {OUTCOMES.get(code, f'exit {code}')}")
        if code != 0 and (worst == 0 or list(OUTCOMES).index(code if code in OUTCOMES else 1)
                          > list(OUTCOMES).index(worst)):  # fmt: skip
            worst = code if code in OUTCOMES else 1
    return worst
