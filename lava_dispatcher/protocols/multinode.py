"""The ``lava-multinode`` protocol: one job of a MultiNode group, talking to the coordinator.

A LAVA server splits a MultiNode submission into one sub-job per role
instance and gives each ``protocols: {lava-multinode: {target_group, role,
group_size, sub_id, roles, timeout, ...}}``; this protocol is used by such
sub-jobs. Before the first action it forms the group (``group_data``, within
the 90 s system timeout as in LAVA) and, for a delayed start (``request:
lava-start`` with ``expect_role``), waits for that role's ``lava_start``.
Then it serves:

* the MultiNode API calls of the test shell (lava-send, lava-wait,
  lava-wait-all, lava-sync on the DUT: ``actions/test/multinode.py``);
* requests at the start of named actions (a block's ``protocols:
  {lava-multinode: [{action: NAME, request: ..., messageID: ...}]}``), whose
  ``$key`` values are filled from the reply and kept in the namespace data
  key :data:`MULTINODE_DATA` for later actions;
* at the end, ``clear_group``.

Beyond LAVA: waits are answered without polling by our coordinator
(``multinode_client``), timeouts are wall-clock, and a failed job of an
``essential`` role ends the other jobs of the group at once (see
:data:`ABORT_ID`; ``docs/multinode.md``).
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from lava_dispatcher.data import Key
from lava_dispatcher.errors import (
    ConfigurationError,
    InfrastructureError,
    JobError,
    LAVAError,
    MultinodeProtocolTimeoutError,
    error_type_of,
)
from lava_dispatcher.log import JobLogger
from lava_dispatcher.pipeline import Action, RunContext
from lava_dispatcher.plugins import hookimpl
from lava_dispatcher.protocols import Protocol
from lava_dispatcher.protocols.multinode_client import (
    CoordinatorClient,
    CoordinatorSettings,
    CoordinatorTimeout,
    resolve_settings,
)
from lava_dispatcher.timing import Interrupter, format_duration, parse_timeout

NAME = "lava-multinode"
#: LAVA_MULTINODE_SYSTEM_TIMEOUT: how long group formation may take (seconds)
SYSTEM_TIMEOUT = 90.0
#: a call's timeout when neither the call nor the protocol block sets one (LAVA's)
DEFAULT_CALL_TIMEOUT = 30.0
#: the messageID an essential job sends when it fails: the group's other jobs end
ABORT_ID = "lava_group_abort"
#: messageIDs the jobs may not use themselves
RESERVED_IDS = frozenset({ABORT_ID})
#: how long the end-of-job requests (abort, clear_group) may take (seconds)
FINAL_TIMEOUT = 10.0
#: the same when the coordinator could not be reached last time
FINAL_TIMEOUT_UNREACHABLE = 1.0
#: how long the job's end waits for requests left behind to be answered (seconds)
SETTLE_TIMEOUT = 2.0
#: request names of the API, as jobs and the DUT name them
API = {"lava_send", "lava_wait", "lava_wait_all", "lava_sync"}

#: data received by protocol requests in a namespace: messageID -> {key: value}
MULTINODE_DATA: Key[dict] = Key(
    NAME, dict, "messageID -> {key: value} received by lava-multinode requests ($key values)"
)


class MultinodeGroupAborted(LAVAError):
    """A job of an essential role failed: the rest of the group ends too.

    Not a JobError on purpose: a RetryAction must not retry it.
    """

    error_type = JobError.error_type
    error_help = "MultinodeGroupAborted: an essential job of the MultiNode group failed."


class _StopWatching(Exception):
    """Ends the abort watcher's wait."""


def multinode_protocol(ctx: RunContext) -> MultinodeProtocol | None:
    """The job's lava-multinode protocol, if it has one (actions reach it through here)."""
    for hook in ctx.hooks:
        if isinstance(hook, MultinodeProtocol):
            return hook
    return None


def received(ctx: RunContext, namespace: str, message_id: str) -> dict[str, Any]:
    """What protocol requests of ``namespace`` received for ``message_id`` ({} if nothing)."""
    data: dict[str, Any] | None = ctx.data(namespace).get(MULTINODE_DATA, default=None)
    return dict((data or {}).get(message_id) or {})


def call_timeout(value: Any, default: float) -> float:
    """A call's ``timeout``: a LAVA timeout mapping or a number of seconds."""
    if value is None or value == {}:
        return default
    if isinstance(value, bool):
        raise JobError(f"invalid MultiNode timeout {value!r}")
    if isinstance(value, int | float):
        if value <= 0:
            raise JobError(f"invalid MultiNode timeout {value!r}: expected a positive duration")
        return float(value)
    if isinstance(value, Mapping):
        return parse_timeout(value, default)
    raise JobError(f"invalid MultiNode timeout {value!r}: expected {{minutes: N}} or seconds")


class MultinodeProtocol(Protocol):
    """One job's membership of its MultiNode group."""

    name = NAME

    def __init__(self, parameters: Mapping[str, Any], job_id: str) -> None:
        super().__init__(parameters, job_id)
        block: Mapping[str, Any] = parameters["protocols"][NAME]
        self.block = block
        self.group = str(block["target_group"])
        self.role = str(block.get("role") or "")
        self.group_size = int(block.get("group_size") or 0)
        self.essential = bool(block.get("essential", False))
        #: the protocol-level timeout: what test shell calls use
        self.timeout = call_timeout(block.get("timeout"), DEFAULT_CALL_TIMEOUT)
        self.expect_role: str | None = None
        if block.get("request") == "lava-start" and block.get("expect_role"):
            if block["expect_role"] == self.role:
                raise JobError(
                    "lava-multinode: expect_role must not match the role declaring lava-start"
                )
            self.expect_role = str(block["expect_role"])
        #: job id -> role, from the job (the server's) or else from the coordinator
        self.roles: dict[str, str] = {str(k): str(v) for k, v in (block.get("roles") or {}).items()}
        self.settings: CoordinatorSettings | None = None
        self.client: CoordinatorClient | None = None
        self._joined = False
        self._cleared = False
        self._aborted = False
        self._failure: BaseException | None = None
        self._lock = threading.Lock()
        self._armed = False
        self._watch_stop = Interrupter()
        self._watch_client: CoordinatorClient | None = None
        self._watcher: threading.Thread | None = None

    @classmethod
    def accepts(cls, parameters: Mapping[str, Any]) -> bool:
        block = (parameters.get("protocols") or {}).get(NAME)
        return isinstance(block, Mapping) and "target_group" in block

    # --- the wire ------------------------------------------------------------------
    def _client(self, ctx: RunContext) -> CoordinatorClient:
        if self.client is None:
            self.settings = resolve_settings(ctx.job.dispatcher)
            delay = self.settings.poll_delay
            base = {
                "port": self.settings.port,
                "blocksize": self.settings.blocksize,
                "poll_delay": int(delay) if delay == int(delay) else delay,
                "host": self.settings.host,
                # the worker's name, as LAVA sends it
                "hostname": socket.gethostname(),
                "client_name": self.job_id,
                "group_name": self.group,
                "role": self.role,
            }
            self.client = CoordinatorClient(
                self.settings, base, warn=ctx.logger.warning, debug=ctx.logger.debug
            )
        return self.client

    def request(
        self,
        ctx: RunContext,
        call: Mapping[str, Any],
        timeout: float,
        *,
        waits: bool = True,
        what: str = "",
    ) -> dict[str, Any]:
        """One API call within ``timeout`` seconds (wall clock) and the action's deadline.

        At our own deadline: clear_group (and the abort of an essential job),
        then MultinodeProtocolTimeoutError. When the action's or the job's
        deadline comes first, that deadline's error.
        """
        client = self._client(ctx)
        limit = min(timeout, ctx.remaining())
        what = what or f"{call.get('request')} {call.get('messageID', '')!s}".strip()
        if call.get("request") == "group_data":
            self._joined = True
        asked, asked_at = time.monotonic(), time.time()
        try:
            reply = client.request(call, timeout=limit, interrupter=ctx.interrupter, waits=waits)
        except CoordinatorTimeout as exc:
            if limit < timeout:
                raise ctx.timeout_error(f"waiting for the MultiNode coordinator ({what})") from exc
            why = f" (last error: {exc.last_error})" if exc.last_error else ""
            error = MultinodeProtocolTimeoutError(
                f"protocol {NAME} timed out: {what} not answered within {timeout:g} s "
                f"by the coordinator at {client.settings.address}{why}"
            )
            self._give_up(ctx, error)
            raise error from exc
        self._joined = True
        # when the call was released, and how long it took: the group's latency,
        # and when the answer reached this host (the rest is this host's own delay)
        took = f"{what}: {reply.get('response')} after {(time.monotonic() - asked) * 1000:.1f} ms"
        if client.arrived is not None:
            took += f" (on the socket after {(client.arrived - asked_at) * 1000:.1f} ms)"
        ctx.logger.debug(took)
        if reply.get("response") == "nack" and reply.get("error"):
            ctx.logger.warning(f"the coordinator refused {what}: {reply['error']}")
        return reply

    def _give_up(self, ctx: RunContext, error: BaseException) -> None:
        """A call timed out: as LAVA, leave the group (and abort it for an essential role)."""
        self._disarm()
        self._failure = self._failure or error
        self._stop_watching()
        if self.client is not None and self.client.unreachable:
            return  # no time spent on a coordinator that is not there: finalise tries again
        self._abort_group(ctx.logger, error)
        self._clear_group(ctx)

    # --- set-up ---------------------------------------------------------------------
    def set_up(self, ctx: RunContext) -> None:
        """Form the group (all jobs must start within the system timeout), then a delayed start."""
        try:
            self._set_up(ctx)
        except BaseException as exc:
            self._disarm()
            self._failure = exc
            if isinstance(exc, LAVAError):  # no action around it logs why
                ctx.logger.error(f"{NAME} set-up failed: {exc}")
            raise

    def _set_up(self, ctx: RunContext) -> None:
        client = self._client(ctx)
        assert self.settings is not None
        system = SYSTEM_TIMEOUT
        configured = ctx.job.dispatcher.get("multinode_system_timeout")
        if configured is not None:
            if isinstance(configured, bool) or not isinstance(configured, int | float):
                raise ConfigurationError(
                    f"dispatcher config: multinode_system_timeout: got {configured!r}; "
                    "expected a number of seconds"
                )
            system = float(configured)
        if self.expect_role is not None and "timeout" in self.block:
            # LAVA: a delayed start waits with the protocol timeout, group formation too
            system = self.timeout
        ctx.logger.info(
            f"{NAME}: job {self.job_id}, role {self.role!r}, group {self.group} of "
            f"{self.group_size}; coordinator {self.settings.address} (from {self.settings.source})"
        )
        reply = self.request(
            ctx, {"request": "group_data", "group_size": self.group_size}, system,
            what=f"group_data (forming group {self.group})",
        )  # fmt: skip
        if reply.get("response") != "group_data":
            raise InfrastructureError(
                f"the coordinator {client.settings.address} refused to form group {self.group}: "
                f"{reply.get('error') or reply}"
            )
        coordinator_roles = {str(k): str(v) for k, v in (reply.get("roles") or {}).items()}
        if not self.roles:
            self.roles = coordinator_roles
        elif coordinator_roles and coordinator_roles != self.roles:
            ctx.logger.warning(
                f"the coordinator's group {coordinator_roles} differs from "
                f"the job's roles {self.roles}"
            )
        ctx.logger.info(
            f"{NAME}: group complete: "
            + ", ".join(f"{job} ({role})" for job, role in sorted(self.roles.items()))
        )
        self._start_watching(ctx)
        if self.expect_role is not None:
            ctx.logger.info(
                f"{NAME}: start is delayed until role {self.expect_role!r} sends lava_start "
                f"(up to {format_duration(system)})"
            )
            reply = self.request(
                ctx,
                {
                    "request": "lava_wait_all",
                    "messageID": "lava_start",
                    "waitrole": self.expect_role,
                },
                system,
                what=f"lava_wait_all lava_start (role {self.expect_role})",
            )
            ctx.logger.debug(f"lava_start received: {reply}")
        ctx.logger.debug(f"{NAME} protocol initialised")

    # --- the API ----------------------------------------------------------------------
    def check_id(self, message_id: str) -> str:
        """The messageID, or JobError when it is empty, not one word, or reserved."""
        text = str(message_id)
        if not text or any(c.isspace() for c in text):
            raise JobError(f"invalid MultiNode messageID {text!r}: expected one word")
        if text in RESERVED_IDS:
            raise JobError(f"MultiNode messageID {text!r} is reserved by the dispatcher")
        return text

    def send(
        self, ctx: RunContext, message_id: str, message: Mapping[str, Any] | None, timeout: float
    ) -> dict[str, Any]:
        """lava_send: never waits for the others."""
        call = {"request": "lava_send", "messageID": self.check_id(message_id),
                "message": dict(message or {})}  # fmt: skip
        return self.request(ctx, call, timeout, waits=False)

    def wait(self, ctx: RunContext, message_id: str, timeout: float) -> dict[str, Any]:
        """lava_wait: until some job of the group has sent ``message_id``."""
        call = {
            "request": "lava_wait",
            "messageID": self.check_id(message_id),
            "nodeID": self.job_id,
        }
        return self.request(ctx, call, timeout)

    def wait_all(
        self, ctx: RunContext, message_id: str, timeout: float, role: str | None = None
    ) -> dict[str, Any]:
        """lava_wait_all: until every job (of ``role``) has sent ``message_id``."""
        call: dict[str, Any] = {"request": "lava_wait_all", "messageID": self.check_id(message_id)}
        if role:
            call["waitrole"] = str(role)
        return self.request(ctx, call, timeout)

    def sync(self, ctx: RunContext, message_id: str, timeout: float) -> dict[str, Any]:
        """lava_sync: until every job of the group has called it."""
        call = {"request": "lava_sync", "messageID": self.check_id(message_id)}
        return self.request(ctx, call, timeout)

    # --- requests at the start of named actions ----------------------------------------
    def requests_for(self, action: Action) -> Sequence[Mapping[str, Any]]:
        calls = (action.parameters.get("protocols") or {}).get(self.name) or []
        if isinstance(calls, Mapping):
            calls = [calls]
        return [
            call
            for call in calls
            if isinstance(call, Mapping) and call.get("action") == action.name
        ]

    def before_action(self, action: Action, ctx: RunContext) -> None:
        if action.parent is None and action.name == "finalize":
            self._disarm()  # the job is ending anyway: a late abort must not stop the power-off
        super().before_action(action, ctx)

    def run_request(self, request: Mapping[str, Any], action: Action, ctx: RunContext) -> None:
        api = str(request.get("request") or "").replace("-", "_")
        if api not in API:
            raise JobError(f"{action.name}: unknown {NAME} request {request.get('request')!r}")
        message_id = str(request.get("messageID") or "")
        timeout = call_timeout(request.get("timeout"), self.timeout)
        ctx.logger.info(
            f"Making protocol call for {action.name} using {NAME}: {api} {message_id!r}"
        )
        message = request.get("message")
        if api == "lava_send":
            if isinstance(message, str):
                message = {message: None}  # LAVA's reading of a bare string
            reply = self.send(ctx, message_id, message, timeout)
            if reply.get("response") == "nack":
                raise JobError(
                    f"{action.name}: the coordinator refused lava-send {message_id!r}: "
                    f"{reply.get('error') or 'nack'}"
                )
        elif api == "lava_wait":
            reply = self.wait(ctx, message_id, timeout)
        elif api == "lava_wait_all":
            reply = self.wait_all(ctx, message_id, timeout, request.get("role"))
        else:
            reply = self.sync(ctx, message_id, timeout)
        ctx.logger.debug(f"Request: {dict(request)}")
        ctx.logger.debug(f"Reply: {reply}")
        self._collate(ctx, action, request, reply)

    def _collate(
        self, ctx: RunContext, action: Action, request: Mapping[str, Any], reply: Mapping[str, Any]
    ) -> None:
        """Fill the request's ``$`` values from the reply, into the namespace data."""
        message = request.get("message")
        wanted = [
            key for key, value in (message.items() if isinstance(message, Mapping) else ())
            if isinstance(value, str) and value.startswith("$")
        ]  # fmt: skip
        api = str(request.get("request"))
        message_id = str(request.get("messageID"))
        if reply.get("response") == "nack":
            text = f"{action.name}: the coordinator answered nack to {api} {message_id!r}"
            if wanted:
                raise JobError(f"{text}: no values for {', '.join(wanted)}")
            ctx.logger.warning(text)
            return
        if not wanted:
            return
        senders = reply.get("message")
        if not isinstance(senders, Mapping) or not senders:
            raise JobError(
                f"Unable to identify replaceable values in the parameters: {dict(request)}"
            )
        # other jobs' data first, then this job's own (wait-all includes the caller)
        ordered = sorted(senders.items(), key=lambda item: str(item[0]) == self.job_id)
        values: dict[str, Any] = {}
        for key in wanted:
            for _sender, data in ordered:
                if isinstance(data, Mapping) and key in data:
                    values[key] = data[key]
                    break
            else:
                ctx.logger.warning(f"Skipping {key} - not found in {dict(senders)}")
        if not values:
            raise JobError(
                f"Unable to identify replaceable values in the parameters: {dict(request)}"
            )
        space = ctx.data(action.namespace)
        stored: dict[str, Any] | None = space.get(MULTINODE_DATA, default=None)
        data = dict(stored or {})
        data[message_id] = {**(data.get(message_id) or {}), **values}
        space.set(MULTINODE_DATA, data)
        ctx.logger.info(f"Setting namespace data key {message_id} to {values}")

    # --- an essential job's failure ends the group --------------------------------------
    def after_action(self, action: Action, ctx: RunContext, record: dict[str, Any]) -> None:
        if action.parent is not None:
            return
        # called from the pipeline's `finally`: an exception on its way out is the job failing
        failure = sys.exc_info()[1]
        if failure is None:
            return
        try:
            self._disarm()
            self._failure = self._failure or failure
            self._abort_group(ctx.logger, failure)
        except Exception as exc:  # never mask the job's own error
            ctx.logger.error(f"{NAME}: could not tell the group about the failure: {exc}")

    def _abort_group(self, logger: JobLogger, failure: BaseException) -> None:
        """An essential job failed: tell the others (once; they end their jobs)."""
        if not self.essential or self._aborted or not self._joined or self.client is None:
            return
        if isinstance(failure, MultinodeGroupAborted):
            return  # the group already knows
        self._aborted = True
        message = {"role": self.role, "error_type": error_type_of(failure),
                   "error": (str(failure) or type(failure).__name__)[:300]}  # fmt: skip
        logger.warning(
            f"{NAME}: essential role {self.role!r} failed: ending the group's other jobs"
        )
        try:
            self.client.request(
                {"request": "lava_send", "messageID": ABORT_ID, "message": message},
                timeout=self._final_timeout(), interrupter=Interrupter(), waits=False,
            )  # fmt: skip
        except (CoordinatorTimeout, LAVAError, OSError) as exc:
            logger.error(f"{NAME}: could not send {ABORT_ID}: {exc}")

    def _start_watching(self, ctx: RunContext) -> None:
        """Keep a lava_wait for ABORT_ID open in the background while the job runs."""
        with self._lock:
            self._armed = True
        self._watcher = threading.Thread(
            target=self._watch, args=(ctx,), name=f"{NAME}-abort-watch", daemon=True
        )
        self._watcher.start()

    def _watch(self, ctx: RunContext) -> None:
        assert self.client is not None
        call = {"request": "lava_wait", "messageID": ABORT_ID, "nodeID": self.job_id}
        quiet = self._watch_client = CoordinatorClient(
            self.client.settings, self.client.base, debug=ctx.logger.debug
        )
        while True:
            try:
                reply = quiet.request(
                    call, timeout=3600.0, interrupter=self._watch_stop, waits=True
                )
            except _StopWatching:
                return
            except CoordinatorTimeout:
                continue
            except Exception as exc:
                ctx.logger.debug(f"{NAME}: abort watch: {exc}")
                try:
                    self._watch_stop.sleep(5.0)
                except _StopWatching:
                    return
                continue
            senders = reply.get("message") if reply.get("response") == "ack" else None
            if not isinstance(senders, Mapping):
                try:  # a nack (the group is gone): ask again later, not in a loop
                    self._watch_stop.sleep(5.0)
                except _StopWatching:
                    return
                continue
            others = {str(k): v for k, v in senders.items() if str(k) != self.job_id}
            if not others:
                return  # our own abort: this job is failing already
            sender, data = next(iter(others.items()))
            data = data if isinstance(data, Mapping) else {}
            role = data.get("role") or self.roles.get(sender, "?")
            reason = f"{data.get('error_type', 'unknown')}: {data.get('error', 'no reason given')}"
            error = MultinodeGroupAborted(
                f"MultiNode group {self.group} aborted: job {sender} of essential role {role!r} "
                f"failed ({reason})"
            )
            with self._lock:
                if not self._armed:
                    return
                self._armed = False
                ctx.logger.error(str(error))
                # sticky: no retry or later wait may swallow it; the job rearms before cleanup
                ctx.interrupter.cancel(error)
            return

    def _disarm(self) -> None:
        with self._lock:
            self._armed = False

    def _stop_watching(self) -> None:
        self._disarm()
        self._watch_stop.cancel(_StopWatching())
        if self._watcher is not None:
            self._watcher.join(FINAL_TIMEOUT)
            self._watcher = None

    # --- the end ----------------------------------------------------------------------
    def _final_timeout(self) -> float:
        unreachable = self.client is not None and self.client.unreachable
        return FINAL_TIMEOUT_UNREACHABLE if unreachable else FINAL_TIMEOUT

    def _clear_group(self, ctx: RunContext) -> None:
        if self._cleared or not self._joined or self.client is None:
            return
        self._cleared = True
        try:
            self.client.request(
                {"request": "clear_group", "group_size": self.group_size},
                timeout=min(self._final_timeout(), max(ctx.remaining(), 1.0)),
                interrupter=ctx.interrupter, waits=False,
            )  # fmt: skip
        except (CoordinatorTimeout, OSError) as exc:
            ctx.logger.warning(f"{NAME}: clear_group failed: {exc}")

    def finalise(self, ctx: RunContext) -> None:
        self._stop_watching()
        if self._failure is not None:
            self._abort_group(ctx.logger, self._failure)
        self._clear_group(ctx)
        clients = [c for c in (self.client, self._watch_client) if c is not None]
        if any(client.holds is False for client in clients):
            # a coordinator that answers at once (LAVA's) must see its answers read
            # before this process goes, or it dies of a broken pipe
            for client in clients:
                client.settle(SETTLE_TIMEOUT)
        ctx.logger.debug(f"{NAME} protocol finalised.")


@hookimpl
def lava_protocols() -> list[type[Protocol]]:
    return [MultinodeProtocol]
