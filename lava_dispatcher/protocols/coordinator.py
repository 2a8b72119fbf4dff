"""The MultiNode coordinator, server side: LAVA's protocol, answered without polling.

LAVA's coordinator serves one connection at a time and answers ``wait``
until the dispatcher polls again, seconds later. This one is an asyncio
server: any number of connections at once, and a request that carries
``"hold": <seconds>`` (our clients send it) is kept open and answered the
moment its answer is no longer ``wait``, woken by the change itself. LAVA's
dispatchers send no ``hold``: they get LAVA's immediate ``wait`` and keep
polling, unchanged.

Also: optional persistence (``state_dir``: a restart loses nothing), an
optional shared secret (``coordinator_auth``), and wall-clock limits on
reading and writing each connection. ``docs/coordinator.md`` has the details.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lava_dispatcher.protocols import coordinator_auth
from lava_dispatcher.protocols.coordinator_state import Groups, Outcome, Reply, is_wait, nack
from lava_dispatcher.protocols.coordinator_store import StateStore
from lava_dispatcher.protocols.coordinator_wire import (
    MAX_REQUEST_CHARS,
    FrameError,
    encode_frame,
    read_request,
)

LOG = logging.getLogger("lava-coordinator")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3079
#: longest hold a request may ask for (seconds): below the 60 s socket timeout of LAVA's client
HOLD_MAX = 50.0
#: a client has this long to send its whole request, and to take the reply (seconds)
READ_TIMEOUT = 30.0
WRITE_TIMEOUT = 30.0
#: after a bad frame: how long, and how much, the rest of it is read and dropped
DISCARD_TIME = 2.0
DISCARD_BYTES = 1 << 20
#: how long a stopping server lets its connections finish (seconds)
STOP_GRACE = 5.0


def parse_hold(request: Mapping[str, Any]) -> float:
    """The hold a request asks for (0: none); ValueError when it is not a valid one."""
    value = request.get("hold")
    if value is None:
        return 0.0
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 < value <= HOLD_MAX
    ):
        raise ValueError(
            f"invalid hold {value!r}: a number of seconds, above 0 and at most {HOLD_MAX:g}"
        )
    return float(value)


@dataclass(eq=False)
class _Held:
    """A request kept open; :meth:`CoordinatorServer._release` sets its answer."""

    request: dict[str, Any]
    future: asyncio.Future[Outcome | None]


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


class CoordinatorServer:
    """One coordinator: every group it serves, its listening socket and its state directory."""

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        state_dir: Path | None = None,
        secret: str | None = None,
        read_timeout: float = READ_TIMEOUT,
        max_request_chars: int = MAX_REQUEST_CHARS,
    ) -> None:
        self.host = host
        self.port = port
        self.state_dir = state_dir
        self.secret = secret
        self.read_timeout = read_timeout
        self.max_request_chars = max_request_chars
        self.groups = Groups()
        self.store: StateStore | None = None
        self._server: asyncio.Server | None = None
        #: group name -> its held requests, oldest first
        self._held: dict[str, list[_Held]] = {}
        self._connections: set[asyncio.Task[Any]] = set()
        #: groups changed since the last write to the state directory (name -> deleted)
        self._dirty: dict[str, bool] = {}
        #: done when the next write of the dirty groups is over
        self._flushed: asyncio.Future[None] | None = None
        self._stopping = False
        #: requests being held just now (for tests and status)
        self.held = 0

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    async def start(self) -> None:
        """Load the saved groups and listen; OSError when the address cannot be used."""
        if self.state_dir is not None:
            self.store = StateStore(self.state_dir)
            self.groups = Groups(self.store.load())
        try:
            self._server = await asyncio.start_server(
                self._connection, self.host, self.port, backlog=1024, reuse_address=True
            )
        except BaseException:
            if self.store is not None:
                self.store.close()
            raise
        self.port = int(self._server.sockets[0].getsockname()[1])
        LOG.info(
            "listening on %s (state %s, secret %s, %d group(s) loaded)",
            self.address,
            self.state_dir or "in memory only",
            "required" if self.secret else "not used",
            len(self.groups.groups),
        )

    async def close(self) -> None:
        """Stop listening; held requests are answered ``wait`` (their clients ask again)."""
        self._stopping = True
        for entries in self._held.values():
            for entry in entries:  # answered ``wait``: their clients ask again
                if not entry.future.done():
                    entry.future.set_result(None)
        self._held.clear()
        if self._server is not None:
            self._server.close()
        pending = set(self._connections)
        if pending:
            _done, late = await asyncio.wait(pending, timeout=STOP_GRACE)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        if self.store is not None:
            self.store.close()
            self.store = None

    # --- one connection, one request ----------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        peer = _peer(writer)
        unread = False
        try:
            try:
                async with asyncio.timeout(self.read_timeout):
                    request = await read_request(reader, self.max_request_chars)
            except FrameError as exc:
                LOG.warning("bad request from %s: %s", peer, exc)
                reply, unread = nack(str(exc)), True
            except TimeoutError:
                LOG.warning("no complete request from %s in %g s", peer, self.read_timeout)
                reply, unread = nack(f"no complete request within {self.read_timeout:g} s"), True
            except (asyncio.IncompleteReadError, ConnectionError):
                LOG.debug("%s closed the connection without a request", peer)
                return
            else:
                reply = await self._answer(request, peer)
            await self._send(writer, reply, peer)
            if unread:
                await self._discard(reader, writer)
        finally:
            writer.close()
            if task is not None:
                self._connections.discard(task)

    async def _send(self, writer: asyncio.StreamWriter, reply: Reply, peer: str) -> None:
        try:
            writer.write(encode_frame(reply))
            async with asyncio.timeout(WRITE_TIMEOUT):
                await writer.drain()
        except (ConnectionError, TimeoutError) as exc:
            LOG.warning("could not send the reply to %s: %s", peer, exc or type(exc).__name__)

    async def _discard(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """After a nack for a bad frame, read what the client still sends, for a while:
        closing on unread data would reset the connection and lose the nack."""
        with contextlib.suppress(OSError, TimeoutError):
            writer.write_eof()
            async with asyncio.timeout(DISCARD_TIME):
                left = DISCARD_BYTES
                while left > 0:
                    chunk = await reader.read(65536)
                    if not chunk:
                        break
                    left -= len(chunk)

    async def _answer(self, request: dict[str, Any], peer: str) -> Reply:
        loop = asyncio.get_running_loop()
        started = loop.time()
        if self.secret is not None:
            error = coordinator_auth.check(self.secret, request)
            if error is not None:
                LOG.warning("refused request from %s: %s", peer, error)
                return nack(error)
        request.pop(coordinator_auth.AUTH_KEY, None)
        try:
            hold = parse_hold(request)
        except ValueError as exc:
            reply = nack(str(exc))
            self._log(request, reply, peer, None)
            return reply
        outcome = self.groups.handle(request)
        entry: _Held | None = None
        if hold and is_wait(outcome.reply) and outcome.group is not None:
            # held before the change this request made is committed: the last
            # node arriving at a sync is released in the same pass as the others
            entry = _Held(request, loop.create_future())
            self._held.setdefault(outcome.group, []).append(entry)
        self._commit(outcome)
        if entry is not None:
            outcome = await self._hold(entry, outcome, started + hold, peer)
        if self._flushed is not None:
            # nobody hears of a change before it is on disk (see _commit)
            await asyncio.shield(self._flushed)
        self._log(request, outcome.reply, peer, loop.time() - started if entry else None)
        return outcome.reply

    async def _hold(self, entry: _Held, outcome: Outcome, deadline: float, peer: str) -> Outcome:
        """Wait until :meth:`_release` answers the request, or its hold ends (``wait``)."""
        if not entry.future.done():
            LOG.debug(
                "holding group=%s client=%s request=%s messageID=%s for up to %g s peer=%s",
                outcome.group,
                outcome.client,
                entry.request.get("request"),
                entry.request.get("messageID"),
                deadline - asyncio.get_running_loop().time(),
                peer,
            )
        self.held += 1
        try:
            async with asyncio.timeout_at(deadline):
                released = await asyncio.shield(entry.future)
        except TimeoutError:
            released = None
        finally:
            self.held -= 1
            entries = self._held.get(outcome.group or "")
            if entries is not None and entry in entries:
                entries.remove(entry)
                if not entries:
                    del self._held[outcome.group or ""]
        return released or outcome

    def _release(self, group: str, outcome: Outcome) -> None:
        """Answer every held request of ``group`` that ``outcome``'s change may have
        made answerable, and those that their own answers make answerable, in one pass
        (one write to disk for all of them)."""
        entries = self._held.get(group)
        everything = outcome.everything or outcome.scope is None
        scopes = {outcome.scope}
        while entries:
            again = False
            for entry in list(entries):
                if entry.future.done():
                    entries.remove(entry)
                    continue
                if not everything and str(entry.request.get("messageID")) not in scopes:
                    continue
                answer = self.groups.handle(entry.request, first=False)
                if answer.changed:
                    self._dirty_group(answer)
                    if not answer.quiet:
                        again = True
                        everything = everything or answer.everything or answer.scope is None
                        scopes.add(answer.scope)
                if not is_wait(answer.reply):
                    entries.remove(entry)
                    entry.future.set_result(answer)
            if not again:
                break
        if entries is not None and not entries:
            self._held.pop(group, None)

    def _commit(self, outcome: Outcome) -> None:
        """Have a change persisted (before any reply is sent, see _answer), and wake the
        group's held requests unless the change cannot answer any of them.

        Writes are grouped: every change made while the event loop works through
        what is ready (the last node arriving at a sync, then the release of all
        the others) is written once, group by group, by one :meth:`_flush`, not
        once per request: a group of 32 released together costs 2 writes, not 33.
        """
        if not outcome.changed or outcome.group is None:
            return
        self._dirty_group(outcome)
        if not outcome.quiet:
            self._release(outcome.group, outcome)

    def _dirty_group(self, outcome: Outcome) -> None:
        """Have the group written by the next :meth:`_flush` (scheduled if need be)."""
        if self.store is None or outcome.group is None:
            return
        self._dirty[outcome.group] = outcome.deleted or self._dirty.get(outcome.group, False)
        if self._flushed is None:
            loop = asyncio.get_running_loop()
            self._flushed = loop.create_future()
            loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Write every changed group to the state directory, then let the replies go."""
        dirty, self._dirty = self._dirty, {}
        done, self._flushed = self._flushed, None
        for name, deleted in dirty.items():
            group = self.groups.groups.get(name)
            try:
                if self.store is None:
                    break
                if deleted or group is None:
                    self.store.delete(name)
                else:
                    self.store.save(group)
            except OSError as exc:
                LOG.error("cannot save the state of group %s: %s", name, exc)
        if done is not None and not done.done():
            done.set_result(None)

    def _log(self, request: Mapping[str, Any], reply: Reply, peer: str, held: float | None) -> None:
        response = reply.get("response")
        if response == "nack":
            level = logging.WARNING
        elif response == "wait" and held is None:
            level = logging.DEBUG  # a polling client: one line per poll is noise
        else:
            level = logging.INFO
        if not LOG.isEnabledFor(level):
            return
        extra = f" error={reply['error']!r}" if "error" in reply else ""
        if held is not None:
            extra += f" held={held * 1000:.1f}ms"
        LOG.log(
            level,
            "group=%s client=%s request=%s messageID=%s reply=%s%s peer=%s",
            request.get("group_name"),
            request.get("client_name"),
            request.get("request"),
            request.get("messageID"),
            response,
            extra,
            peer,
        )
        if LOG.isEnabledFor(logging.DEBUG) and (request.get("message") or reply.get("message")):
            LOG.debug(
                "  request message=%r reply message=%r",
                request.get("message"),
                reply.get("message"),
            )


class BackgroundCoordinator:
    """A coordinator on its own thread and event loop: for tests, the worker and group runs.

    ``port=0`` picks a free port; :attr:`address` says which after :meth:`start`.
    """

    def __init__(self, host: str = DEFAULT_HOST, port: int = 0, **options: Any) -> None:
        self.server = CoordinatorServer(host, port, **options)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return self.server.address

    def start(self) -> str:
        """Listen (errors are raised here) and serve in the background; the HOST:PORT."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.server.start())
            except BaseException as exc:
                failure.append(exc)
                loop.close()
                ready.set()
                return
            ready.set()
            try:
                loop.run_forever()
                loop.run_until_complete(self.server.close())
            finally:
                loop.close()

        self._thread = threading.Thread(target=serve, name="lava-coordinator", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            raise failure[0]
        return self.address

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._thread = None

    def __enter__(self) -> BackgroundCoordinator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
