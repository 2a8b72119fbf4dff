"""The notifier: what the worker calls on every job state change.

:meth:`Notifier.job_changed` returns at once. On the loop, in order per job,
a task reads the job's ``notify`` block, evaluates the criteria for this
state change and, when they match, builds every delivery (the callbacks'
requests, the emails, the IRC lines) and hands them to the
:class:`DeliveryQueue`. Each delivery is made once per matching state
change: callbacks as in LAVA, and emails and IRC messages too (LAVA sends
those only at the first match).

A block with neither recipients nor callbacks mails the submitter, as LAVA
does. ``user:`` recipients, the submitter's email address and callback
token secrets come from the :class:`Lookup` (the admin's notify settings).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gzip
import json
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp

from lava_dispatcher.worker.notify import callback, irc, mail
from lava_dispatcher.worker.notify.compare import compare
from lava_dispatcher.worker.notify.conditions import ConditionError
from lava_dispatcher.worker.notify.criteria import TRIGGERS, Decision, evaluate
from lava_dispatcher.worker.notify.jobinfo import definition_data
from lava_dispatcher.worker.notify.lookup import Lookup, StoreLookup
from lava_dispatcher.worker.notify.messages import MessageContext, email_body, irc_line, subject
from lava_dispatcher.worker.notify.payload import encode, job_data, wants
from lava_dispatcher.worker.notify.queue import Delivery, DeliveryQueue
from lava_dispatcher.worker.notify.records import FAILED, DeliveryRecord, Records, SqliteRecords
from lava_dispatcher.worker.notify.settings import Contact, NotifySettings
from lava_dispatcher.worker.notify.urls import substitute
from lava_dispatcher.worker.store import FINISHED, JobRecord, Store

LOG = logging.getLogger("lava-worker.notify")
DEVICE_OWNER = "{LAVA_DEVICE_OWNER}"
#: what one attempt may take beyond its sender's own timeout before it is given up
MARGIN = 5.0


def read_log(path: Path | None, whole_lines: bool) -> str:
    """The job's log text ('' when there is none); only complete lines while it runs."""
    if path is None:
        return ""
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    if whole_lines:
        data = data[: data.rfind(b"\n") + 1]
    return data.decode("utf-8", "replace")


def write_job_data(directory: Path | None, data: Mapping[str, Any]) -> None:
    """LAVA's ``job_data.gz``: the first POST payload of a job, kept beside its output."""
    if directory is None or not directory.is_dir():
        return
    path = directory / "job_data.gz"
    with contextlib.suppress(FileExistsError), gzip.open(path, "xt", encoding="utf-8") as stream:
        json.dump(data, stream, default=str)


class Notifier:
    """One per worker; it owns the records, the thread pool and the HTTP session."""

    def __init__(self, settings: NotifySettings, records: Records, lookup: Lookup) -> None:
        self.settings = settings
        self.records = records
        self.lookup = lookup
        self.queue = DeliveryQueue(records, settings.retry, settings.concurrency)
        self._threads = ThreadPoolExecutor(max_workers=min(8, settings.concurrency), thread_name_prefix="notify")
        self._session: aiohttp.ClientSession | None = None
        #: the last evaluation of each job: the next one waits for it
        self._evaluations: dict[int, asyncio.Task[None]] = {}
        self._closed = False

    @classmethod
    def for_worker(cls, settings: NotifySettings, store: Store, state_dir: Path) -> Notifier:
        """Records in ``<state-dir>/notifications.sqlite``, jobs from the store and ``<state-dir>/jobs``."""
        records = SqliteRecords(Path(state_dir) / "notifications.sqlite")
        lookup = StoreLookup(store, Path(state_dir) / "jobs", settings.users, settings.device_owners)
        return cls(settings, records, lookup)

    # -- the API ----------------------------------------------------------------------

    def job_changed(self, before: JobRecord | None, after: JobRecord) -> None:
        """A job's state changed (call on the loop, after the change is stored); returns at once."""
        if self._closed:
            return
        if after.state not in TRIGGERS or (before is not None and before.state == after.state):
            return
        previous = self._evaluations.get(after.id)
        task = asyncio.get_running_loop().create_task(self._evaluate(after, previous))
        self._evaluations[after.id] = task
        task.add_done_callback(lambda done: self._evaluated(after.id, done))

    def deliveries(self, job_id: int) -> list[DeliveryRecord]:
        """Every delivery of a job with its attempts, in the order they were made."""
        return self.records.for_job(job_id)

    async def idle(self) -> None:
        """Wait until nothing is being evaluated or delivered (tests, tools)."""
        while True:
            if self._evaluations:
                await asyncio.wait(set(self._evaluations.values()))
            await self.queue.idle()
            if not self._evaluations:
                return

    async def close(self, grace: float = 0.0) -> None:
        """Stop: deliveries under way get ``grace`` seconds, the rest are recorded as abandoned."""
        self._closed = True
        if grace > 0 and self._evaluations:
            await asyncio.wait(set(self._evaluations.values()), timeout=grace)
        for task in list(self._evaluations.values()):
            task.cancel()
        if self._evaluations:
            await asyncio.wait(set(self._evaluations.values()))
        await self.queue.close(grace)
        if self._session is not None:
            await self._session.close()
        self._threads.shutdown(wait=False, cancel_futures=True)
        self.records.close()

    # -- evaluation -------------------------------------------------------------------------

    def _evaluated(self, job_id: int, task: asyncio.Task[None]) -> None:
        if self._evaluations.get(job_id) is task:
            del self._evaluations[job_id]

    async def _evaluate(self, job: JobRecord, previous: asyncio.Task[None] | None) -> None:
        if previous is not None and not previous.done():
            await asyncio.wait({previous})
        try:
            await self._notify(job)
        except Exception:
            LOG.exception("[%d] notifications for %s failed", job.id, job.state)

    async def _notify(self, job: JobRecord) -> None:
        if not job.definition:  # a light record: the definition is in the store
            stored = self.lookup.job(job.id)
            job = replace(job, definition=stored.definition if stored else "")
        if "notify" not in job.definition:  # most jobs: no need to parse anything
            return
        definition = definition_data(job)
        notify = definition.get("notify")
        if not isinstance(notify, Mapping):
            return
        try:
            decision = evaluate(notify, job, self.lookup)
        except ConditionError as exc:
            self._refused(job, "criteria", "dependency_query", f"the dependency query cannot be evaluated: {exc}")
            return
        if not decision.fire:
            LOG.debug("[%d] no notification at %s: %s", job.id, job.state, decision.reason)
            return
        LOG.info("[%d] notifying at %s: %s", job.id, job.state, decision.reason)
        callbacks = notify.get("callbacks") or ([notify["callback"]] if notify.get("callback") else [])
        recipients = notify.get("recipients") or []
        if not recipients and not callbacks:
            recipients = [{"to": {"method": "email", "user": job.submitter}}]
        for delivery in await self._callbacks(job, definition, callbacks):
            self.queue.submit(delivery)
        if recipients:
            context = self._context(job, definition, notify, decision)
            for index, recipient in enumerate(recipients):
                message = self._recipient(context, index, recipient.get("to") or {})
                if message is not None:
                    self.queue.submit(message)

    def _refused(self, job: JobRecord, kind: str, target: str, why: str) -> None:
        """Keep, as a failed delivery, what could not even be attempted."""
        record = self.records.add(job.id, job.state, kind, target, f"{job.id}:{job.state}:{kind}:{target}")
        if record is not None:
            self.records.finish(record.id, FAILED, why)
            LOG.warning("[%d] %s %s: %s", job.id, kind, target, why)

    def _contact(self, user: str | None) -> Contact | None:
        return self.lookup.contact(user) if user else None

    # -- callbacks -----------------------------------------------------------------------------

    def _token(self, job: JobRecord, token: str) -> str:
        """The secret the submitter's token description names, else the value itself (LAVA)."""
        contact = self._contact(job.submitter)
        return (contact.tokens.get(token) if contact else None) or token

    async def _payload(self, job: JobRecord, definition: Mapping[str, Any], dataset: str) -> dict[str, Any]:
        with_log, with_results = wants(dataset)
        log = None
        if with_log:
            path = self.lookup.log_path(job.id)
            loop = asyncio.get_running_loop()
            log = await loop.run_in_executor(self._threads, read_log, path, job.state != FINISHED)
        contact = self._contact(job.submitter)
        return job_data(
            job,
            definition,
            submitter_email=(contact.email if contact else None) or "",
            log=log,
            results=self.lookup.results(job.id) if with_results else None,
        )

    async def _callbacks(
        self, job: JobRecord, definition: Mapping[str, Any], blocks: list[Mapping[str, Any]]
    ) -> list[Delivery]:
        deliveries = []
        payloads: dict[str, dict[str, Any]] = {}
        for index, block in enumerate(blocks):
            method = str(block.get("method", "GET")).upper()
            headers: dict[str, str] = {}
            if block.get("token"):
                headers[str(block.get("header") or "Authorization")] = self._token(job, str(block["token"]))
            body = None
            if method == "POST":
                dataset = str(block.get("dataset", "minimal"))
                if dataset not in payloads:
                    payloads[dataset] = await self._payload(job, definition, dataset)
                    if len(payloads) == 1:
                        await asyncio.get_running_loop().run_in_executor(
                            self._threads, write_job_data, self.lookup.job_dir(job.id), payloads[dataset]
                        )
                body, content_type = encode(payloads[dataset], str(block.get("content-type", "urlencoded")))
                headers["Content-Type"] = content_type
            request = callback.CallbackRequest(substitute(str(block["url"]), job), method, headers, body)
            deliveries.append(Delivery(
                job.id, job.state, "callback", request.target, f"{job.id}:{job.state}:callback:{index}",
                functools.partial(self._call, request),
                self.settings.callbacks.timeout + MARGIN, f"{job.id}:callback:{index}",
            ))  # fmt: skip
        return deliveries

    async def _call(self, request: callback.CallbackRequest) -> str:
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self.settings.concurrency))
        settings = self.settings.callbacks
        return await callback.call(self._session, request, settings.timeout, settings.allowed_hosts)

    # -- email and IRC -------------------------------------------------------------------------

    def _context(
        self, job: JobRecord, definition: Mapping[str, Any], notify: Mapping[str, Any], decision: Decision
    ) -> MessageContext:
        verbosity = str(notify.get("verbosity", "quiet"))
        compare_block = notify.get("compare") or {}
        verbose = verbosity == "verbose" and job.state == FINISHED
        comparison = decision.comparison
        if verbose and comparison is None:
            comparison = compare(job, compare_block, self.lookup)
        return MessageContext(
            job,
            self.settings.url.rstrip("/"),
            self.settings.worker,
            verbosity,
            definition,
            self.lookup.device(job.actual_device) if job.actual_device else None,
            self.lookup.results(job.id) if verbose else (),
            tuple(str(n) for n in compare_block.get("blacklist") or ()),
            comparison,
        )

    def _recipient(self, ctx: MessageContext, index: int, to: Mapping[str, Any]) -> Delivery | None:
        job = ctx.job
        method = str(to.get("method", "email"))
        user = to.get("user")
        if user == DEVICE_OWNER:
            user = self.lookup.device_owner(job.actual_device) if job.actual_device else None
            if user is None:
                self._refused(job, method, f"recipient {index}", f"device {job.actual_device} has no owner set")
                return None
        contact = self._contact(str(user) if user else None)
        key = f"{job.id}:{job.state}:{method}:{index}"
        order = f"{job.id}:{method}:{index}"
        if method == "irc":
            handle = to.get("handle") or (contact.irc_handle if contact else None)
            server = to.get("server") or (contact.irc_server if contact else None) or self.settings.irc.server
            if not handle or not server:
                self._refused(job, "irc", f"recipient {index}", f"no IRC handle and server for {user or 'this recipient'}"
                              " (in the recipient, or in the notify settings' users)")  # fmt: skip
                return None
            line = irc_line(ctx)
            return Delivery(job.id, job.state, "irc", f"{handle}@{server}", key,
                            lambda: self._irc(str(handle), str(server), line),
                            self.settings.irc.timeout + MARGIN, order)  # fmt: skip
        address = to.get("email") or (contact.email if contact else None)
        if not address:
            self._refused(job, "email", f"recipient {index}", f"no email address for {user or 'this recipient'}"
                          " (in the recipient, or in the notify settings' users)")  # fmt: skip
            return None
        body = email_body(ctx, contact)
        return Delivery(job.id, job.state, "email", str(address), key,
                        lambda: self._mail(str(address), subject(job), body),
                        4 * self.settings.smtp.timeout + MARGIN, order)  # fmt: skip

    async def _mail(self, address: str, title: str, body: str) -> str:
        msg = mail.message(self.settings.smtp, address, title, body)
        return await asyncio.get_running_loop().run_in_executor(self._threads, mail.send, self.settings.smtp, msg)

    async def _irc(self, handle: str, server: str, line: str) -> str:
        settings = self.settings.irc
        where = irc.target(handle, server, settings.port)
        return await irc.send(where, [line], nick=settings.nick, tls=settings.tls, timeout=settings.timeout)
