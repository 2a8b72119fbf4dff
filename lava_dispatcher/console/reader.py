"""The always-on console reader: one daemon thread per console.

The thread reads the transport all the time, not only while someone expects
something, so nothing is lost or late while the dispatcher is busy. It
decodes UTF-8 incrementally (invalid bytes become U+FFFD), splits lines on
``\\n`` (stripping the trailing ``\\r``s of ``\\r\\n`` and ``\\r\\r\\n``),
stamps each line with the wall-clock time its first byte arrived, hands it to
``on_line`` and to the watchers, and appends all decoded text to the
:class:`~lava_dispatcher.console.expect.ExpectBuffer` that expect() waits on.

A partial line (a prompt has no newline) is handed to ``on_line`` once the
console has been quiet for ``idle_flush`` seconds (that is the read timeout,
not a sleep); what arrives later for that line comes as a new ``on_line``
call. Watchers always see whole lines.
"""

from __future__ import annotations

import codecs
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from lava_dispatcher.console.expect import ExpectBuffer
from lava_dispatcher.console.transport import Transport, TransportClosed
from lava_dispatcher.console.watchers import Watcher

LOG = logging.getLogger(__name__)

#: bytes asked of the transport per read
READ_SIZE = 1 << 16
#: read timeout when no partial line is pending (bounds how long stop() may
#: take on a transport that cannot be woken)
POLL_INTERVAL = 0.25
#: a line longer than this is delivered in pieces (a console that never prints
#: a newline must not grow memory without bound)
MAX_LINE = 1 << 16

LineCallback = Callable[[str, float], None]
ClosedCallback = Callable[[BaseException | None], None]


class ConsoleReader:
    """Reads ``transport`` in a daemon thread; see the module documentation."""

    def __init__(
        self,
        transport: Transport,
        *,
        name: str,
        on_line: LineCallback,
        on_closed: ClosedCallback | None = None,
        watchers: Sequence[Watcher] = (),
        idle_flush: float = 0.1,
        buffer: ExpectBuffer | None = None,
        max_line: int = MAX_LINE,
    ) -> None:
        self.transport = transport
        self.name = name
        self.on_line = on_line
        self.on_closed = on_closed
        self.watchers: list[Watcher] = list(watchers)
        self.idle_flush = idle_flush
        self.buffer = buffer if buffer is not None else ExpectBuffer()
        self.max_line = max_line
        self.bytes_read = 0
        self.lines = 0
        #: the first exception a callback or watcher raised (the reader carries on)
        self.callback_error: BaseException | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        # the line being assembled: pieces not yet handed to on_line
        self._pending: list[str] = []
        self._pending_len = 0
        self._pending_ts = 0.0
        # the same line as watchers need it: pieces already handed to on_line
        self._head: list[str] = []
        self._head_len = 0
        self._head_ts = 0.0

    # -- control -------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"console reader {self.name!r} already started")
        self._thread = threading.Thread(target=self._run, name=f"console-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread (after it delivers the pending partial line).

        The transport stays open. Safe to call from a callback (then it does
        not wait for the thread).
        """
        self._stop.set()
        cancel: Any = getattr(self.transport, "cancel_read", None)
        if cancel is not None:
            try:
                cancel()
            except Exception:  # a closed transport: the thread is leaving anyway
                pass
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait for the thread to finish (EOF or stop)."""
        return self._done.wait(timeout)

    # -- the thread ----------------------------------------------------------

    def _run(self) -> None:
        exc: BaseException | None = None
        eof = False
        read = self.transport.read
        decode = self._decoder.decode
        try:
            while not self._stop.is_set():
                timeout = self.idle_flush if self._pending else POLL_INTERVAL
                data = read(READ_SIZE, timeout)
                if data:
                    now = time.time()
                    self.bytes_read += len(data)
                    text = decode(data)
                    if text:
                        self._process(text, now)
                else:
                    if self._pending:
                        self._flush_partial()
                    self._idle()
        except TransportClosed:
            eof = True
        except BaseException as error:  # an I/O error: report it as the end of the console
            eof = True
            exc = error
        finally:
            self._finish(eof, exc)

    def _finish(self, eof: bool, exc: BaseException | None) -> None:
        try:
            tail = self._decoder.decode(b"", True)
            if tail:
                self._process(tail, time.time())
            if eof:
                self.buffer.close(exc)
            if self._pending:
                self._flush_partial()
            if self._head:
                self._feed_watchers("".join(self._head).rstrip("\r"), self._head_ts)
                self._head.clear()
                self._head_len = 0
            for watcher in self.watchers:
                flush = getattr(watcher, "flush", None)
                if flush is not None:
                    self._call(flush)
            if eof and self.on_closed is not None:
                self._call(self.on_closed, exc)
        finally:
            self._done.set()

    def _process(self, text: str, now: float) -> None:
        # lines are handed out before the text reaches the expect buffer, so
        # that a log shows a line before whatever matched on it
        if "\n" not in text:
            if not self._pending:
                self._pending_ts = now
            self._pending.append(text)
            self._pending_len += len(text)
            if self._pending_len > self.max_line:
                self._flush_partial()
            self.buffer.append(text)
            return
        parts = text.split("\n")
        last = parts.pop()
        on_line = self.on_line
        watchers = self.watchers
        first = parts[0]
        first_ts = now
        if self._pending:
            self._pending.append(first)
            first = "".join(self._pending)
            first_ts = self._pending_ts
            self._pending.clear()
            self._pending_len = 0
        if self._head:
            # the start of this line was flushed as a partial line already
            head = "".join(self._head)
            head_ts = self._head_ts
            self._head.clear()
            self._head_len = 0
            rest = first.rstrip("\r")
            if rest:
                self._deliver(rest, first_ts)
            self._feed_watchers((head + first).rstrip("\r"), head_ts)
        else:
            line = first.rstrip("\r")
            self._deliver_and_watch(line, first_ts)
        if len(parts) > 1:
            self.lines += len(parts) - 1
            for part in parts[1:]:
                line = part.rstrip("\r")
                try:
                    on_line(line, now)
                    for watcher in watchers:
                        watcher.feed(line, now)
                except Exception as error:
                    self._callback_failed(error)
        if last:
            self._pending_ts = now
            self._pending.append(last)
            self._pending_len = len(last)
            if self._pending_len > self.max_line:
                self._flush_partial()
        self.buffer.append(text)

    def _deliver(self, line: str, ts: float) -> None:
        self.lines += 1
        try:
            self.on_line(line, ts)
        except Exception as error:
            self._callback_failed(error)

    def _deliver_and_watch(self, line: str, ts: float) -> None:
        self._deliver(line, ts)
        self._feed_watchers(line, ts)

    def _feed_watchers(self, line: str, ts: float) -> None:
        for watcher in self.watchers:
            try:
                watcher.feed(line, ts)
            except Exception as error:
                self._callback_failed(error)

    def _flush_partial(self) -> None:
        """Hand the pending partial line to on_line; keep it for the watchers."""
        text = "".join(self._pending)
        ts = self._pending_ts
        self._pending.clear()
        self._pending_len = 0
        if not self._head:
            self._head_ts = ts
        if self._head_len < self.max_line:
            self._head.append(text)
            self._head_len += len(text)
        line = text.rstrip("\r")
        if line:
            self._deliver(line, ts)

    def _idle(self) -> None:
        now = time.time()
        for watcher in self.watchers:
            idle = getattr(watcher, "idle", None)
            if idle is not None:
                self._call(idle, now)

    def _call(self, func: Callable[..., Any], *args: Any) -> None:
        try:
            func(*args)
        except Exception as error:
            self._callback_failed(error)

    def _callback_failed(self, error: BaseException) -> None:
        if self.callback_error is None:
            self.callback_error = error
        LOG.exception("console %s: a line callback or watcher failed", self.name, exc_info=error)
