"""What people read: the email (subject and body by verbosity) and the IRC line.

The subject is LAVA's (``LAVA notification for Test Job <id> <description>``)
because people filter mail on it; the bodies are our own text carrying what
LAVA's carry: ``status-only`` says the state, health, submitter and link;
``quiet`` (the default) adds, once the job is finished, the error, the
device and the job's details; ``verbose`` adds the metadata, every test case
(minus the ``compare`` blacklist) and the comparison with the previous job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from lava_dispatcher.worker.notify.compare import Comparison
from lava_dispatcher.worker.notify.jobinfo import duration, human_time, metadata, priority_display
from lava_dispatcher.worker.notify.settings import Contact
from lava_dispatcher.worker.store import FINISHED, INCOMPLETE, DeviceRecord, JobRecord, ResultRecord

#: the longest IRC line we send (the protocol allows 512 bytes with the command and CRLF)
IRC_LINE = 400


@dataclass(frozen=True)
class MessageContext:
    """Everything a message says about one job at one state change."""

    job: JobRecord
    #: the worker's web address, without a trailing slash
    base_url: str
    worker: str = ""
    verbosity: str = "quiet"
    definition: Mapping[str, Any] = field(default_factory=dict)
    device: DeviceRecord | None = None
    results: Sequence[ResultRecord] = ()
    blacklist: Sequence[str] = ()
    comparison: Comparison | None = None

    @property
    def job_url(self) -> str:
        return f"{self.base_url}/scheduler/job/{self.job.display_id}"


def one_line(text: str) -> str:
    """Job-supplied text made safe for a header or an IRC line: no line breaks or controls."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def subject(job: JobRecord) -> str:
    return one_line(f"LAVA notification for Test Job {job.id} {job.description[:200]}")


def irc_line(ctx: MessageContext) -> str:
    job = ctx.job
    ended = f" on {human_time(job.end_time)}" if job.end_time is not None else ""
    line = one_line(
        f"Job {job.display_id} ({job.description}) is {job.state}, health {job.health}{ended}. "
        f"Submitted by {job.submitter}."
    )
    link = f" Details and log: {ctx.job_url}"
    budget = IRC_LINE - len(link.encode("utf-8"))
    if len(line.encode("utf-8")) > budget:
        line = line.encode("utf-8")[: budget - 3].decode("utf-8", "ignore") + "..."
    return line + link


def email_body(ctx: MessageContext, contact: Contact | None = None) -> str:
    job = ctx.job
    name = " ".join(p for p in (contact.first_name, contact.last_name) if p) if contact else ""
    lines = [f"Dear {name}," if name else "Hello,", ""]
    lines.append(f"Job {job.display_id} ({job.description}) is now {job.state}, health {job.health}.")
    lines.append(f"It was submitted by {job.submitter}.")
    lines.append(f"Details and log: {ctx.job_url}")
    if job.state == FINISHED and ctx.verbosity != "status-only":
        lines += _finished(ctx)
        if ctx.verbosity == "verbose":
            lines += _verbose(ctx)
    lines += ["", "-- ", f"lava-dispatcher{' on ' + ctx.worker if ctx.worker else ''}"]
    return "\n".join(lines) + "\n"


def _finished(ctx: MessageContext) -> list[str]:
    job = ctx.job
    lines: list[str] = []
    if job.health == INCOMPLETE and (job.error_type or job.error_msg):
        lines += ["", f"{job.error_type or 'Unknown'} error: {job.error_msg or ''}".rstrip()]
    if job.failure_comment:
        lines += [f"Failure comment: {job.failure_comment}"]
    if job.actual_device:
        device_type = ctx.device.device_type if ctx.device else job.requested_device_type
        lines += ["", "Device:", f"  Hostname: {job.actual_device}", f"  Type: {device_type}"]
        if ctx.worker:
            lines.append(f"  Worker: {ctx.worker}")
    lines += [
        "",
        "Job:",
        f"  Priority: {priority_display(job.priority)}",
        f"  Description: {job.description}",
        f"  Submitted: {human_time(job.submit_time)}",
        f"  Started: {human_time(job.start_time)}",
        f"  Finished: {human_time(job.end_time)}",
        f"  Duration: {duration(job)}",
    ]
    return lines


def _verbose(ctx: MessageContext) -> list[str]:
    lines = ["", "Metadata:"]
    lines += [f"  {k}: {v}" for item in metadata(ctx.definition) for k, v in item.items()] or ["  none"]
    lines += ["", "Results:"]
    if ctx.blacklist:
        lines.append(f"  Left out (blacklist): {' '.join(ctx.blacklist)}")
    suite = None
    for result in ctx.results:
        if result.suite in ctx.blacklist or result.name in ctx.blacklist:
            continue
        if result.suite != suite:
            suite = result.suite
            lines.append(f"  Suite {suite}: {ctx.base_url}/results/{ctx.job.id}/{quote(suite)}")
        measured = ""
        if result.measurement not in (None, "None"):
            measured = f" ({result.measurement}{' ' + result.units if result.units else ''})"
        lines.append(f"    {result.name}: {result.result}{measured}")
    if suite is None:
        lines.append("  none")
    return lines + _comparison(ctx)


def _comparison(ctx: MessageContext) -> list[str]:
    c = ctx.comparison
    if c is None:
        return []
    lines = ["", f"Comparison with {c.how}:"]
    if c.note:
        lines.append(f"  Note: {c.note}")
    if c.recent:
        lines.append(f"  Last {len(c.recent)} jobs:")
        lines += [f"    {ctx.base_url}/scheduler/job/{j.display_id} {j.state} {j.health}" for j in c.recent]
    if c.previous is None:
        return [*lines, "  No finished job to compare with."]
    lines.append(f"  Compared with job {c.previous.display_id} ({c.previous.health}): "
                 f"{ctx.base_url}/scheduler/job/{c.previous.display_id}")  # fmt: skip
    verdict = [w for w, on in (("regression", c.regression), ("progression", c.progression)) if on]
    lines.append(f"  Verdict: {' and '.join(verdict) or 'no change'}")
    lines += _listed("Test suites added", c.suites_added)
    lines += _listed("Test suites removed", c.suites_removed)
    lines += _listed("Test cases added", [f"{s}/{n}" for s, n in c.cases_added])
    lines += _listed("Test cases removed", [f"{s}/{n}" for s, n in c.cases_removed])
    counts = [f"{suite}: {old[0]}/{old[1]}/{old[2]} -> {new[0]}/{new[1]}/{new[2]} (pass/fail/skip)"
              for suite, (old, new) in c.counts.items()]  # fmt: skip
    lines += _listed("Result counts changed", counts)
    lines += _listed("Results changed", [f"{x.suite}/{x.name}: {x.before} -> {x.after}" for x in c.changed])
    return lines


def _listed(title: str, items: Sequence[str]) -> list[str]:
    if not items:
        return [f"  {title}: none"]
    return [f"  {title}:", *(f"    {item}" for item in items)]
