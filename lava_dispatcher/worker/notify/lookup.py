"""What notifications need to know beyond the job record, behind one small interface.

:class:`Lookup` is what the notifier asks: other jobs (dependency queries,
the previous job to compare with), the device, a job's results and log, and
the contact details and callback secrets of users. :class:`StoreLookup`
answers from the worker's store and job directories, with the contacts the
admin gave in the notify settings (our store has no user profiles).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from lava_dispatcher.worker.notify.conditions import Condition, where
from lava_dispatcher.worker.notify.settings import Contact
from lava_dispatcher.worker.store import FINISHED, DeviceRecord, JobRecord, ResultRecord, Store


@dataclass(frozen=True)
class JobQuery:
    """Jobs matching every condition; ``before``: ids below it; ``finished``: Finished ones;
    ``healths``: with one of these healths; at most ``limit``."""

    conditions: Sequence[Condition] = ()
    before: int | None = None
    finished: bool = False
    healths: Sequence[str] = ()
    limit: int | None = None


class Lookup(Protocol):
    """Read-only questions, called on the worker's event loop (they must be quick)."""

    def job(self, job_id: int) -> JobRecord | None: ...

    def jobs(self, query: JobQuery) -> list[JobRecord]:
        """Jobs matching the query, newest first."""
        ...

    def device(self, hostname: str) -> DeviceRecord | None: ...

    def results(self, job_id: int) -> list[ResultRecord]: ...

    def log_path(self, job_id: int) -> Path | None:
        """The job's ``logs.yaml`` (read in a thread by the caller), None when it has none."""
        ...

    def job_dir(self, job_id: int) -> Path | None:
        """Where ``job_data.gz`` goes (None: nowhere)."""
        ...

    def contact(self, name: str) -> Contact | None: ...

    def device_owner(self, hostname: str) -> str | None: ...


class StoreLookup:
    """The worker's store and ``<state-dir>/jobs``, plus the admin-given contacts."""

    def __init__(
        self,
        store: Store,
        jobs_dir: Path,
        contacts: Mapping[str, Contact] | None = None,
        device_owners: Mapping[str, str] | None = None,
    ) -> None:
        self.store = store
        self.jobs_dir = Path(jobs_dir)
        self.contacts = dict(contacts or {})
        self.device_owners = dict(device_owners or {})

    def job(self, job_id: int) -> JobRecord | None:
        try:
            return self.store.job(job_id)
        except KeyError:
            return None

    def jobs(self, query: JobQuery) -> list[JobRecord]:
        clause, params = where(query.conditions)
        if query.before is not None:
            clause, params = f"({clause}) AND id < ?", [*params, query.before]
        if query.finished:
            clause, params = f"({clause}) AND state = ?", [*params, FINISHED]
        if query.healths:
            marks = ", ".join("?" for _ in query.healths)
            clause, params = f"({clause}) AND health IN ({marks})", [*params, *query.healths]
        order = "id DESC" + ("" if query.limit is None else f" LIMIT {int(query.limit)}")
        return self.store.jobs(clause, params, order, light=True)

    def device(self, hostname: str) -> DeviceRecord | None:
        return self.store.device(hostname)

    def results(self, job_id: int) -> list[ResultRecord]:
        return self.store.results(job_id)

    def log_path(self, job_id: int) -> Path | None:
        return self.jobs_dir / str(job_id) / "output" / "logs.yaml"

    def job_dir(self, job_id: int) -> Path | None:
        return self.jobs_dir / str(job_id)

    def contact(self, name: str) -> Contact | None:
        return self.contacts.get(name)

    def device_owner(self, hostname: str) -> str | None:
        return self.device_owners.get(hostname)
