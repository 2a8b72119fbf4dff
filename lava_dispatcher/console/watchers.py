"""Watchers: code the console reader runs on every complete line it reads.

They run in the reader thread, during boot and during tests alike, so they
must be cheap: :class:`KernelMessageWatcher` tests one precompiled regex per
line and does more work only on the rare lines that match.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@runtime_checkable
class Watcher(Protocol):
    """Fed every complete console line with its arrival time (``time.time()``).

    A watcher may also define ``idle(now: float)`` (called when the console
    has been quiet for a read timeout) and ``flush()`` (called when the reader
    stops or the console reaches EOF): the reader calls them when present.
    """

    def feed(self, line: str, ts: float) -> None: ...


@dataclass(frozen=True)
class KernelMessage:
    """A kernel message seen on the console: ``kind`` uses LAVA's names
    (oops, bug, warning, fault, kasan, kcsan, kfence, invalid opcode, panic,
    DUT_has_reset, unknown); ``ts`` is the arrival time of its first line."""

    kind: str
    text: str
    fatal: bool
    ts: float


@dataclass(frozen=True)
class _Kind:
    kind: str | None  # None: classify from the collected text ("cut here" blocks)
    start: str
    #: a literal that every line matching ``start`` contains: a cheap prefilter
    needle: str
    fatal: bool = False
    end: str | None = None  # None: the generic end-of-trace marker


_END_TRACE = r"---\[ end (?:trace|Kernel panic)"
_EQUALS_LINE = r"={20,}\s*$|" + _END_TRACE

#: The start patterns of LAVA's kernel messages (lava_dispatcher/utils/messages.py),
#: in priority order: a specific "BUG: KASAN:" before the generic "BUG:".
KERNEL_KINDS: tuple[_Kind, ...] = (
    _Kind("panic", r"Kernel panic - not syncing", "Kernel panic", fatal=True),
    _Kind(None, r"-\[ cut here \]", "cut here"),
    _Kind("fault", r"Unhandled fault", "Unhandled fault"),
    _Kind("kcsan", r"BUG: KCSAN:", "BUG", end=_EQUALS_LINE),
    _Kind("kasan", r"BUG: KASAN:", "BUG", end=_EQUALS_LINE),
    _Kind("kfence", r"BUG: KFENCE:", "BUG", end=_EQUALS_LINE),
    _Kind("oops", r"Oops(?: -|:)", "Oops"),
    _Kind("warning", r"WARNING:", "WARNING:"),
    _Kind("bug", r"kernel BUG at|BUG:", "BUG"),
    _Kind("invalid opcode", r"invalid opcode:", "invalid opcode"),
)
KERNEL_NEEDLES: tuple[str, ...] = tuple(dict.fromkeys(k.needle for k in KERNEL_KINDS))

#: A bootloader banner after boot means the board reset (LAVA: "U-Boot SPL 20xx").
RESET_PATTERNS: tuple[str, ...] = (r"U-Boot SPL 20\d\d", r"U-Boot 20\d\d\.\d\d")
RESET_NEEDLES: tuple[str, ...] = ("U-Boot",)

RESET_KIND = "DUT_has_reset"

#: a non-fatal message's collection ends after this many lines...
MAX_LINES = 30
#: ...or after the console was quiet this long (checked by idle())
QUIET_TIME = 1.0


def _classify(text: str) -> str:
    if "Oops" in text:
        return "oops"
    if "BUG" in text:
        return "bug"
    if "WARNING" in text:
        return "warning"
    return "unknown"


class KernelMessageWatcher:
    """Reports kernel faults seen on the console through ``on_message``.

    A fatal message (``Kernel panic - not syncing``; a bootloader banner when
    ``reset_detection`` is armed) is reported at once with its line: the job
    must end now, not after the panic's trace. A non-fatal one (oops,
    warning, BUG, KASAN...) collects the following lines until the kernel's
    end marker (``---[ end trace``, or the ``=====`` line closing a KASAN
    report), ``MAX_LINES`` lines, a quiet console or EOF, then is reported
    with the collected text.

    ``enabled`` (False for ``ignore_kernel_messages``) switches the kernel
    checks off; ``reset_detection`` (off by default, since a banner is
    expected while booting) arms the bootloader-banner check.
    """

    def __init__(
        self,
        on_message: Callable[[KernelMessage], None],
        *,
        enabled: bool = True,
        reset_detection: bool = False,
        reset_patterns: Sequence[str] = RESET_PATTERNS,
        max_lines: int = MAX_LINES,
        quiet_time: float = QUIET_TIME,
    ) -> None:
        self.on_message = on_message
        self.enabled = enabled
        self.reset_detection = reset_detection
        self.max_lines = max_lines
        self.quiet_time = quiet_time
        groups = [f"(?P<k{i}>{k.start})" for i, k in enumerate(KERNEL_KINDS)]
        self._kernel_re = re.compile("|".join(groups))
        self._fatal_re = re.compile("|".join(k.start for k in KERNEL_KINDS if k.fatal))
        self._reset_re = re.compile("|".join(f"(?:{p})" for p in reset_patterns))
        # custom banners have no known literal: "" is in every line, so search all
        self._reset_needles = (
            RESET_NEEDLES if tuple(reset_patterns) == RESET_PATTERNS else ("",)
        )
        self._both_re = re.compile(
            self._kernel_re.pattern + "|" + f"(?P<reset>{self._reset_re.pattern})"
        )
        self._end_res = {k.end or _END_TRACE: re.compile(k.end or _END_TRACE) for k in KERNEL_KINDS}
        # the message being collected
        self._kind: _Kind | None = None
        self._lines: list[str] = []
        self._ts = 0.0
        self._last = 0.0
        self._end_re: re.Pattern[str] | None = None

    @property
    def collecting(self) -> bool:
        return self._kind is not None

    def _worth_searching(self, line: str) -> bool:
        """Whether any start pattern could match: substring tests cost a
        fraction of a regex search, and almost every console line fails them."""
        if self.enabled:
            for needle in KERNEL_NEEDLES:
                if needle in line:
                    return True
        if self.reset_detection:
            for needle in self._reset_needles:
                if needle in line:
                    return True
        return False

    def feed(self, line: str, ts: float) -> None:
        if self._kind is None and not self._worth_searching(line):
            return
        if self.enabled:
            regex = self._both_re if self.reset_detection else self._kernel_re
        elif self.reset_detection:
            regex = self._reset_re
        else:
            if self._kind is not None:
                self._emit()
            return
        found = regex.search(line)
        if self._kind is not None:
            self._continue(line, ts, found)
            return
        if found is None:
            return
        self._start(line, ts, found)

    def _start(self, line: str, ts: float, found: re.Match[str]) -> None:
        group = found.lastgroup
        if group is None or group == "reset":  # the reset-only regex has no groups
            self.on_message(KernelMessage(RESET_KIND, line, True, ts))
            return
        kind = KERNEL_KINDS[int(group[1:])]
        if kind.fatal:
            self.on_message(KernelMessage(kind.kind or "panic", line, True, ts))
            return
        fatal = self._fatal_in(line)
        if fatal is not None:
            self.on_message(KernelMessage(fatal, line, True, ts))
            return
        self._kind = kind
        self._lines = [line]
        self._ts = self._last = ts
        self._end_re = self._end_res[kind.end or _END_TRACE]
        if self._end_re.search(line) or self.max_lines <= 1:
            self._emit()

    def _fatal_in(self, line: str) -> str | None:
        """A line that matched something non-fatal may still hold a panic further on."""
        if self.enabled and self._fatal_re.search(line):
            return "panic"
        if self.reset_detection and self._reset_re.search(line):
            return RESET_KIND
        return None

    def _continue(self, line: str, ts: float, found: re.Match[str] | None) -> None:
        if found is not None:
            group = found.lastgroup
            if group is None or group == "reset" or KERNEL_KINDS[int(group[1:])].fatal:
                # the message so far, then the fatal line on its own, at once
                self._emit()
                self._start(line, ts, found)
                return
            fatal = self._fatal_in(line)
            if fatal is not None:
                self._emit()
                self.on_message(KernelMessage(fatal, line, True, ts))
                return
        self._lines.append(line)
        self._last = ts
        assert self._end_re is not None
        if self._end_re.search(line) or len(self._lines) >= self.max_lines:
            self._emit()

    def _emit(self) -> None:
        kind = self._kind
        if kind is None:
            return
        text = "\n".join(self._lines)
        self._kind, self._lines, self._end_re = None, [], None
        self.on_message(KernelMessage(kind.kind or _classify(text), text, False, self._ts))

    def idle(self, now: float | None = None) -> None:
        """The console is quiet: report a message whose end never came."""
        if self._kind is not None:
            current = time.time() if now is None else now
            if current - self._last >= self.quiet_time:
                self._emit()

    def flush(self) -> None:
        """Report the message being collected, if any (EOF, reader stopped)."""
        self._emit()
