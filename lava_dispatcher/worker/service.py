"""The worker's service API: what XML-RPC, REST and the tests call.

Every method is a coroutine taking the caller (a :class:`UserRecord`, or
None for anonymous) where permissions matter, and raises only the classes of
:mod:`lava_dispatcher.worker.errors`, which the protocol layers map to
LAVA's fault codes and HTTP statuses:

* :class:`NotFound`: no such job, device, device type or user (404);
* :class:`NotAllowed`: the caller may not see or do this (403; 401 with
  ``anonymous`` set when nobody is logged in);
* :class:`InvalidJob`: a submission that cannot be accepted (400);
* :class:`BadRequest`: a bad argument, such as an unknown state name (400).

Job ids are strings as LAVA shows them: ``"12"``, or ``"12.1"`` for the
second sub-job of MultiNode submission 12 (its own whole-number id is 13,
which is accepted too). Records are the store's dataclasses; times are UTC
epoch seconds, for the protocol layer to render (XML-RPC dateTime, ISO
strings for REST). Permissions: anonymous callers read public jobs only;
a user submits, reads public jobs and their own, and cancels their own;
an admin does everything, including changing a device's health.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lava_dispatcher import __version__
from lava_dispatcher.worker import auth
from lava_dispatcher.worker.definitions import SubJob, job_columns, parse_definition, split
from lava_dispatcher.worker.errors import BadRequest, InvalidJob, NotAllowed, NotFound
from lava_dispatcher.worker.store import (
    DEVICE_HEALTHS,
    FINISHED,
    JOB_HEALTHS,
    JOB_STATES,
    MAINTENANCE,
    RETIRED,
    SUBMITTED,
    DeviceRecord,
    JobRecord,
    ResultRecord,
    Store,
    UserRecord,
    now,
)

if TYPE_CHECKING:
    from lava_dispatcher.worker.config import WorkerConfig
    from lava_dispatcher.worker.runner import Runner
    from lava_dispatcher.worker.scheduler import Scheduler
    from lava_dispatcher.worker.validator import ValidatorClient

#: what ``system.version`` answers: LAVA's calendar form, the feature level we follow
LAVA_VERSION = "2026.07"
#: most jobs one list call returns (LAVA's clamp)
MAX_LIMIT = 100
AUTH_REQUIRED = "Authentication with user and token required for this API."


@dataclass(frozen=True)
class LogSlice:
    """Lines ``[start, start + count)`` of a job's log, as LAVA-format text (``- {...}`` lines).

    ``finished`` is decided before the lines are read: when it is True,
    nothing can follow these lines (lavacli stops following then).
    """

    finished: bool
    start: int
    count: int
    text: str


@dataclass(frozen=True)
class DeviceTypeInfo:
    name: str
    devices: int
    idle: int
    busy: int
    offline: int
    health_check: bool


@dataclass(frozen=True)
class WorkerInfo:
    hostname: str
    state: str
    health: str
    devices: list[str]
    last_ping: float
    version: str
    job_limit: int


def _choice(value: str, choices: tuple[str, ...], what: str) -> str:
    for choice in choices:
        if choice.lower() == str(value).lower():
            return choice
    raise BadRequest(f"Invalid {what} '{value}'; expected one of {', '.join(choices)}")


class Service:
    """One per daemon; see the module docstring for the conventions."""

    def __init__(
        self,
        config: WorkerConfig,
        store: Store,
        validator: ValidatorClient,
        scheduler: Scheduler,
        runner: Runner,
    ) -> None:
        self.config = config
        self.store = store
        self.validator = validator
        self.scheduler = scheduler
        self.runner = runner
        #: the ZeroMQ PUB address as LAVA shows it, if known better than the config says
        self.event_socket: str | None = None

    # -- who asks -------------------------------------------------------------

    def authenticate(self, header: str | None) -> UserRecord | None:
        """The user behind an ``Authorization`` header (None: anonymous).

        AuthFailed for wrong credentials (HTTP 401 ``Invalid token``),
        BadRequest for a malformed header (HTTP 400).
        """
        return auth.authenticate_header(self.store, header)

    async def whoami(self, user: UserRecord | None) -> str | None:
        return None if user is None else user.name

    async def version(self) -> str:
        """LAVA's calendar version (lavacli gates features on it), then ours."""
        return f"{LAVA_VERSION}+lava-dispatcher-{__version__}"

    # -- permissions ----------------------------------------------------------

    @staticmethod
    def can_view(job: JobRecord, user: UserRecord | None) -> bool:
        return job.is_public or (user is not None and (user.is_admin or user.name == job.submitter))

    @staticmethod
    def _need_user(user: UserRecord | None) -> UserRecord:
        if user is None:
            raise NotAllowed(AUTH_REQUIRED, anonymous=True)
        return user

    @staticmethod
    def _need_admin(user: UserRecord | None, what: str) -> UserRecord:
        user = Service._need_user(user)
        if not user.is_admin:
            raise NotAllowed(f"User '{user.name}' may not {what}: an admin may.")
        return user

    def _job(self, job_id: str | int, user: UserRecord | None, current: bool = False) -> JobRecord:
        """The job if the caller may see it. ``current``: first index what a running job's
        log has that its index lacks (the indexer wakes on the child's stdout, which can
        come before the log file is flushed: a quiet job's last lines would wait)."""
        try:
            job = self.store.find_job(str(job_id))
        except OverflowError:  # more digits than SQLite's integers hold: no such job
            job = None
        if job is None:
            raise NotFound(f"Job '{job_id}' was not found.")
        if not self.can_view(job, user):
            who = "anonymous" if user is None else user.name
            raise NotAllowed(f"Job '{job_id}' not available to user '{who}'.", anonymous=user is None)
        running = self.runner.running.get(job.id) if current else None
        if running is not None:
            running.log.ingest()
        return job

    def _device(self, hostname: str) -> DeviceRecord:
        device = self.store.device(hostname)
        if device is None:
            raise NotFound(f"Device '{hostname}' was not found.")
        return device

    # -- submitting -------------------------------------------------------------

    def _device_for(self, sub: SubJob, pinned: str | None) -> DeviceRecord:
        """A device the job could run on, to validate it against; NotFound/InvalidJob if none."""
        devices = [d for d in self.store.devices(present_only=True) if d.health != RETIRED]
        if pinned is not None:
            device = next((d for d in devices if d.hostname == pinned), None)
            if device is None:
                raise NotFound(f"Device '{pinned}' was not found.")
            if device.device_type != sub.device_type:
                raise InvalidJob(
                    f"device {pinned} is a {device.device_type}; the job asks for a {sub.device_type}"
                )
            return device
        of_type = [d for d in devices if d.device_type == sub.device_type]
        if not of_type:
            types = ", ".join(sorted({d.device_type for d in devices})) or "none"
            raise NotFound(
                f"Device type '{sub.device_type}' has no device on this worker "
                f"(device types here: {types})."
            )
        tagged = [d for d in of_type if set(sub.tags) <= set(d.tags)]
        if not tagged:
            raise InvalidJob(
                f"No device of type '{sub.device_type}' has the tags {', '.join(sub.tags)}."
            )
        return next((d for d in tagged if d.health == "Good"), tagged[0])

    async def _check(self, text: str, pinned: str | None = None) -> tuple[dict, list[SubJob], list[str]]:
        data = parse_definition(text)
        subjobs = split(text, data, 1)
        if pinned is not None and len(subjobs) > 1:
            raise InvalidJob("a MultiNode job cannot be pinned to one device: its sub-jobs need one each")
        wanted: dict[str, int] = {}
        for sub in subjobs:
            wanted[sub.device_type] = wanted.get(sub.device_type, 0) + 1
        for device_type, count in wanted.items():
            have = sum(1 for d in self.store.devices(present_only=True)
                       if d.device_type == device_type and d.health != RETIRED)  # fmt: skip
            if count > 1 and have < count:
                raise InvalidJob(
                    f"Devices unavailable: the group needs {count} devices of type "
                    f"'{device_type}' at once; this worker has {have}."
                )
        warnings: list[str] = []
        for sub in subjobs:
            device = self._device_for(sub, pinned)
            warnings += await self.validator.job(sub.text, Path(device.path))
        return data, subjobs, warnings

    async def validate(self, definition: str) -> list[str]:
        """Check a job as :meth:`submit` would, keep nothing; its warnings, or InvalidJob."""
        _data, _subjobs, warnings = await self._check(definition)
        return warnings

    async def submit(
        self, definition: str, user: UserRecord | None, *, device: str | None = None
    ) -> list[str]:
        """Queue a job: its id, or its sub-jobs' ids (``"12.0"``...) for a MultiNode job.

        The job is checked first as ``lava-dispatch validate --device`` does,
        against a device it could run on; a device type with no device is
        refused (NotFound). ``device`` pins the job to one device. The job
        is on disk when this returns; it starts at once if a device is idle.
        """
        user = self._need_user(user)
        if device is not None and not user.is_admin:
            raise NotAllowed(f"User '{user.name}' may not pin a job to a device: an admin may.")
        data, _subjobs, _warnings = await self._check(definition, device)
        group = str(uuid.uuid4())
        with self.store.transaction():
            base = self.store.next_job_id()
            subjobs = split(definition, data, base, group)
            rows = []
            for n, sub in enumerate(subjobs):
                columns = job_columns(sub.text, user.name, sub.definition)
                columns.update(id=base + n, requested_device_type=sub.device_type, tags=sub.tags,
                               original_definition=definition, pinned_device=device)  # fmt: skip
                if sub.sub_id is not None:
                    columns.update(sub_id=f"{base}.{sub.sub_id}", target_group=group,
                                   multinode_definition=definition, essential=int(sub.essential))  # fmt: skip
                rows.append(columns)
            jobs = self.store.insert_jobs(rows)
        self.scheduler.wake()
        return [job.display_id for job in jobs]

    async def resubmit(self, job_id: str, user: UserRecord | None) -> list[str]:
        """Submit a job's original definition again (a whole MultiNode group for a sub-job)."""
        job = self._job(job_id, user)
        return await self.submit(job.multinode_definition or job.original_definition, user)

    async def cancel(self, job_id: str, user: UserRecord | None) -> None:
        """Cancel a job (and the rest of its MultiNode group); a finished job is left as it is."""
        user = self._need_user(user)
        job = self._job(job_id, user)
        if not (user.is_admin or user.name == job.submitter):
            raise NotAllowed(f"User '{user.name}' may not cancel job '{job_id}': it is not theirs.")
        if job.state == FINISHED:
            return
        reason = f"canceled by {user.name}"
        members = self.store.group(job.target_group) if job.target_group else [job]
        for member in members:
            if member.state != FINISHED:
                self.scheduler.cancel(member, reason)

    # -- reading jobs -------------------------------------------------------------

    async def job(self, job_id: str, user: UserRecord | None) -> JobRecord:
        """One job (NotFound, or NotAllowed when it is not visible to the caller)."""
        return self._job(job_id, user)

    async def job_definition(self, job_id: str, user: UserRecord | None) -> str:
        """The definition as submitted (the whole MultiNode definition for a sub-job)."""
        job = self._job(job_id, user)
        return job.multinode_definition or job.original_definition

    def _job_filter(
        self,
        user: UserRecord | None,
        state: str | None,
        health: str | None,
        since: float | None,
        device_type: str | None,
        duration_at_least: float | None,
    ) -> tuple[str, list[Any]]:
        where: list[str] = ["1"]
        params: list[Any] = []
        if state:
            where.append("state = ?")
            params.append(_choice(state, JOB_STATES, "state"))
        if health:
            where.append("health = ?")
            params.append(_choice(health, JOB_HEALTHS, "health"))
        if device_type:
            where.append("requested_device_type = ?")
            params.append(device_type)
        if since:
            where.append("end_time >= ?")
            params.append(now() - float(since) * 60)
        if duration_at_least:
            where.append("start_time IS NOT NULL AND COALESCE(end_time, ?) - start_time >= ?")
            params += [now(), float(duration_at_least) * 60]
        if user is None:
            where.append("visibility = 'public'")
        elif not user.is_admin:
            where.append("(visibility = 'public' OR submitter = ?)")
            params.append(user.name)
        return " AND ".join(where), params

    async def jobs(
        self,
        user: UserRecord | None,
        *,
        state: str | None = None,
        health: str | None = None,
        start: int = 0,
        limit: int = 25,
        since: float | None = None,
        device_type: str | None = None,
        duration_at_least: float | None = None,
    ) -> list[JobRecord]:
        """Jobs the caller may see, newest first (LAVA's ``jobs.list``).

        ``state``/``health`` in any case; ``since``: finished in the last
        so many minutes; ``duration_at_least``: running or ran that many
        minutes or more; ``limit`` is clamped to 100.
        """
        where, params = self._job_filter(user, state, health, since, device_type, duration_at_least)
        limit = max(0, min(int(limit), MAX_LIMIT))
        order = f"id DESC LIMIT {limit} OFFSET {max(0, int(start))}"
        return self.store.jobs(where, params, order)

    async def jobs_count(
        self,
        user: UserRecord | None,
        *,
        state: str | None = None,
        health: str | None = None,
        since: float | None = None,
        device_type: str | None = None,
        duration_at_least: float | None = None,
    ) -> int:
        """How many jobs :meth:`jobs` would list without ``start``/``limit``."""
        where, params = self._job_filter(user, state, health, since, device_type, duration_at_least)
        return int(self.store.db.execute(f"SELECT COUNT(*) FROM jobs WHERE {where}", params).fetchone()[0])

    async def queue(
        self, user: UserRecord | None, device_types: list[str] | None = None, start: int = 0, limit: int = 25
    ) -> list[JobRecord]:
        """Waiting jobs the caller may see, in the order they will be considered."""
        wanted = [j for j in self.store.queue() if self.can_view(j, user)
                  and (not device_types or j.requested_device_type in device_types)]  # fmt: skip
        return wanted[max(0, start) : max(0, start) + max(0, min(limit, MAX_LIMIT))]

    async def job_log(
        self, job_id: str, user: UserRecord | None, start: int = 0, end: int | None = None
    ) -> LogSlice:
        """Lines ``[start, end)`` of the job's log (0-based, complete lines only)."""
        job = self._job(job_id, user, current=True)
        finished = job.state == FINISHED
        count, text = self.runner.log(job.id).read(int(start or 0), None if end is None else int(end))
        return LogSlice(finished, int(start or 0), count, text)

    async def job_results(
        self,
        job_id: str,
        user: UserRecord | None,
        suite: str | None = None,
        case: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[ResultRecord]:
        """The job's result records, in log order; by suite (LAVA's ``0_name``) and case."""
        job = self._job(job_id, user, current=True)
        if suite is not None and suite not in self.store.suites(job.id):
            raise NotFound("Specified test suite not found.")
        return self.store.results(job.id, suite, case, limit, offset)

    async def job_suites(self, job_id: str, user: UserRecord | None) -> list[str]:
        """The job's test suites (result ``definition`` names), ``lava`` included."""
        return self.store.suites(self._job(job_id, user, current=True).id)

    # -- devices ---------------------------------------------------------------------

    async def devices(self, show_all: bool = False) -> list[DeviceRecord]:
        """Devices by hostname; retired ones (and removed files) only with ``show_all``."""
        return [d for d in self.store.devices() if show_all or (d.present and d.health != RETIRED)]

    async def device(self, hostname: str) -> DeviceRecord:
        return self._device(hostname)

    async def device_dictionary(self, hostname: str) -> str:
        """The device file as it is now."""
        device = self._device(hostname)
        try:
            return Path(device.path).read_text(encoding="utf-8")
        except OSError as exc:
            raise NotFound(f"Device '{hostname}': its file {device.path} cannot be read: {exc.strerror}") from None

    @staticmethod
    def _new_health(device: DeviceRecord, health: str) -> str:
        """LAVA's name of a health a device may be given (BadRequest otherwise)."""
        health = _choice(health, DEVICE_HEALTHS, "health")
        if not device.present and health != RETIRED:
            raise BadRequest(f"Device '{device.hostname}' has no device file any more: it stays Retired.")
        return health

    async def set_device_health(
        self, hostname: str, health: str, user: UserRecord | None, reason: str | None = None
    ) -> DeviceRecord:
        """Set a device's health (admin). Unknown queues a health check; Maintenance and
        Retired take the device out of scheduling once its current job ends."""
        admin = self._need_admin(user, "change a device's health")
        health = self._new_health(self._device(hostname), health)
        why = f"set by {admin.name}" + (f": {reason}" if reason else "")
        if health in (MAINTENANCE, RETIRED):
            for job in self.store.jobs("health_check = 1 AND state = ? AND pinned_device = ?",
                                       (SUBMITTED, hostname)):  # fmt: skip
                self.scheduler.cancel(job, f"device {hostname} put into {health}")
        self.scheduler.set_health(hostname, health, why)
        return self._device(hostname)

    async def update_device(
        self,
        hostname: str,
        user: UserRecord | None,
        *,
        health: str | None = None,
        description: str | None = None,
        device_type: str | None = None,
        reason: str | None = None,
    ) -> DeviceRecord:
        """Change a device's health and description (admin); every value is checked
        before anything changes, so a bad one changes nothing. Its type is its file's:
        ``device_type`` may only name it."""
        self._need_admin(user, "change a device")
        device = self._device(hostname)
        if device_type is not None and device_type != device.device_type:
            raise BadRequest(
                f"Device '{hostname}' is a {device.device_type}: its type is set by its device file, "
                f"not to '{device_type}' here."
            )
        if health is not None:
            health = self._new_health(device, health)
        if description is not None:
            self.store.update_device(hostname, description=str(description))
        if health is not None:
            return await self.set_device_health(hostname, health, user, reason)
        return self._device(hostname)

    async def device_tags(self, hostname: str) -> list[str]:
        return list(self._device(hostname).tags)

    async def add_device_tag(self, hostname: str, tag: str, user: UserRecord | None) -> None:
        self._need_admin(user, "tag a device")
        device = self._device(hostname)
        self.store.update_device(hostname, tags=[*device.tags, str(tag)])
        self.scheduler.wake()

    async def delete_device_tag(self, hostname: str, tag: str, user: UserRecord | None) -> None:
        self._need_admin(user, "untag a device")
        device = self._device(hostname)
        self.store.update_device(hostname, tags=[t for t in device.tags if t != tag])

    async def device_types(self) -> list[DeviceTypeInfo]:
        """The device types of this worker's devices, with how many are idle, busy, offline."""
        infos: dict[str, list[DeviceRecord]] = {}
        for device in self.store.devices(present_only=True):
            infos.setdefault(device.device_type, []).append(device)
        return [
            DeviceTypeInfo(
                name,
                len(devices),
                sum(1 for d in devices if d.health == "Good" and d.state == "Idle"),
                sum(1 for d in devices if d.state != "Idle"),
                sum(1 for d in devices if d.health not in ("Good", "Unknown")),
                name in self.scheduler.health_checks,
            )
            for name, devices in sorted(infos.items())
        ]

    async def device_type(self, name: str) -> DeviceTypeInfo:
        for info in await self.device_types():
            if info.name == name:
                return info
        raise NotFound(f"Device-type '{name}' was not found.")

    async def health_check(self, device_type: str) -> str:
        """The health-check job of a device type (NotFound when it has none)."""
        definition = self.scheduler.health_checks.get(device_type)
        if definition is None:
            raise NotFound(f"Device-type '{device_type}' has no health check.")
        return definition

    async def publisher_event_socket(self) -> str:
        """Where LAVA's ZeroMQ event clients connect, as LAVA's EVENT_SOCKET: ``tcp://*:5500``
        when bound to every address (clients put the server's host for ``*``), else the
        address itself. NotFound when events are off. :attr:`event_socket`, when set (by
        whoever bound the socket), wins: it knows the port that port 0 picked."""
        if self.event_socket is not None:
            return self.event_socket
        if self.config.event_topic is None:
            raise NotFound("This worker publishes no events over ZeroMQ: events are off (no event-topic).")
        host = self.config.event_host
        host = "*" if host in ("0.0.0.0", "::", "*") else f"[{host}]" if ":" in host else host
        return f"tcp://{host}:{self.config.event_port}"

    # -- workers ------------------------------------------------------------------------

    async def workers(self) -> list[str]:
        """This daemon is the one worker."""
        return [self.config.name]

    async def worker(self, hostname: str | None = None) -> WorkerInfo:
        if hostname is not None and hostname != self.config.name:
            raise NotFound(f"Worker '{hostname}' was not found.")
        devices = [d.hostname for d in self.store.devices(present_only=True)]
        return WorkerInfo(self.config.name, "Online", "Active", devices, now(), __version__, 0)
