"""The console layer: transports, the always-on reader, expect, watchers, shells.

It knows nothing of jobs, actions, YAML or log formats: it reports through
callbacks (``on_line``, ``on_input``, ``on_closed``, a watcher's
``on_message``) and stops waits through a :class:`lava_dispatcher.timing.Interrupter`.
"""

from lava_dispatcher.console.expect import (
    EOF,
    TIMEOUT,
    ExpectBuffer,
    ExpectMatch,
    ExpectTimeout,
    expect,
    flush,
)
from lava_dispatcher.console.reader import ConsoleReader
from lava_dispatcher.console.shell import (
    CommandFailed,
    CommandResult,
    Console,
    LoginFailed,
    ShellSession,
)
from lava_dispatcher.console.transport import (
    ProcessTransport,
    SerialTransport,
    Transport,
    TransportClosed,
    TransportError,
    open_transport,
)
from lava_dispatcher.console.watchers import KernelMessage, KernelMessageWatcher, Watcher

__all__ = [
    "EOF",
    "TIMEOUT",
    "CommandFailed",
    "CommandResult",
    "Console",
    "ConsoleReader",
    "ExpectBuffer",
    "ExpectMatch",
    "ExpectTimeout",
    "KernelMessage",
    "KernelMessageWatcher",
    "LoginFailed",
    "ProcessTransport",
    "SerialTransport",
    "ShellSession",
    "Transport",
    "TransportClosed",
    "TransportError",
    "Watcher",
    "expect",
    "flush",
    "open_transport",
]
