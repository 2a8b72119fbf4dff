"""The worker's log: one line per record on stderr, in journald's format under systemd.

When stderr is the journal (``$JOURNAL_STREAM`` names its device and inode,
as systemd sets it), each line starts with its syslog priority, ``<3>`` for
an error, ``<6>`` for information (sd-daemon(3)), and carries no time: the
journal stamps it and filters on the priority (``journalctl -p warning``).
Otherwise (a terminal, a pipe, a test) lines carry their time and level.
Either way a record is one line: newlines inside a message or a traceback
are written as ``\\n``, so that one record is never split into entries or
lines that belong to nothing.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import IO

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(name)s: %(message)s"


def syslog_priority(levelno: int) -> int:
    """Python's level as a syslog priority: 2 critical, 3 error, 4 warning, 6 info, 7 debug."""
    for floor, priority in ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6)):
        if levelno >= floor:
            return priority
    return 7


def escape_newlines(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


class OneLineFormatter(logging.Formatter):
    """A record, its traceback included, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        return escape_newlines(super().format(record))


class JournalFormatter(OneLineFormatter):
    """``<priority>name: message``, as journald reads a stream (sd-daemon(3))."""

    def __init__(self) -> None:
        super().__init__(JOURNAL_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return f"<{syslog_priority(record.levelno)}>{super().format(record)}"


def is_journal(stream: IO[str], environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``stream`` is the journal: ``$JOURNAL_STREAM`` is ``DEVICE:INODE`` of its file."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        stat = os.fstat(stream.fileno())
    except (OSError, ValueError):  # closed, or not a file (a test's StringIO)
        return False
    return (stat.st_dev, stat.st_ino) == (int(device), int(inode))


def setup_logging(level: str, stream: IO[str] | None = None) -> bool:
    """Log to ``stream`` (stderr) at ``level``; whether the journal format was chosen."""
    stream = sys.stderr if stream is None else stream
    journal = is_journal(stream)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JournalFormatter() if journal else OneLineFormatter(PLAIN_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    return journal
