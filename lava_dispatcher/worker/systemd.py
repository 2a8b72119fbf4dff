"""systemd integration: the sd_notify protocol, the watchdog, and the worker's unit file.

The notify protocol is small enough to speak ourselves (no libsystemd, no
extra package): each message is one datagram of ``KEY=VALUE`` lines sent to
the AF_UNIX socket named by ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the
abstract namespace). The worker sends ``STATUS=`` while it starts,
``READY=1`` at its ready point (store open, inputs checked, listener up),
``WATCHDOG=1`` every half ``$WATCHDOG_USEC`` (when ``$WATCHDOG_PID`` is
unset or ours), and ``STOPPING=1`` then ``EXTEND_TIMEOUT_USEC=`` every few
seconds while it cancels its jobs, so that a stop longer than the unit's
``TimeoutStopSec`` is not killed while it is still making progress.

The watchdog and the extensions are timers on the event loop, not a thread:
a loop that is stuck stops pinging, and systemd restarts the worker. Without
``$NOTIFY_SOCKET`` nothing is sent and no timer runs. The variables are
removed from the environment once read, so the worker's children (jobs,
validator, coordinator) never talk to systemd in its name.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import shutil
import socket
import sys
from collections.abc import MutableMapping, Sequence
from pathlib import Path

from lava_dispatcher.worker.config import WorkerConfig
from lava_dispatcher.worker.errors import ConfigError

LOG = logging.getLogger("lava-worker.systemd")
NOTIFY_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
#: a datagram that cannot be queued this fast means systemd itself is stuck
SEND_TIMEOUT = 1.0
#: while stopping: EXTEND_TIMEOUT_USEC every EXTEND_EVERY seconds, each for EXTEND_FOR seconds
EXTEND_EVERY = 5.0
EXTEND_FOR = 3 * EXTEND_EVERY

UNIT_NAME = "lava-dispatcher-worker.service"
#: how long a stopping worker may need after its jobs: coordinator (10 s) and validator (5 s), with room
HELPERS_STOP = 30


def notify_address(value: str) -> str | None:
    """``$NOTIFY_SOCKET`` as a socket address (abstract ``@name`` -> ``\\0name``); None if unsupported."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split())


class Notifier:
    """The worker's side of sd_notify(3); every method does nothing when systemd did not ask."""

    def __init__(self, address: str | None = None, watchdog_usec: int = 0) -> None:
        self.address = address
        #: seconds between two WATCHDOG=1 (half the watchdog timeout), or None
        self.ping_every = watchdog_usec / 2e6 if address is not None and watchdog_usec > 0 else None
        self._socket: socket.socket | None = None
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._warned = False

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str] | None = None, pid: int | None = None) -> Notifier:
        """The notifier systemd asked for, the variables taken out of ``environ`` (os.environ)."""
        env = os.environ if environ is None else environ
        raw, usec, owner = (env.pop(name, "") for name in NOTIFY_VARIABLES)
        if not raw:
            return cls()
        address = notify_address(raw)
        if address is None:
            LOG.warning("NOTIFY_SOCKET=%s: not a path or @name; systemd will not be notified", raw)
            return cls()
        ours = not owner or (owner.isdigit() and int(owner) == (os.getpid() if pid is None else pid))
        watchdog = int(usec) if ours and usec.isdigit() else 0
        return cls(address, watchdog)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """One datagram of ``KEY=VALUE`` lines; a failure is logged (once), never raised."""
        if self.address is None:
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._socket.settimeout(SEND_TIMEOUT)
            self._socket.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            level = logging.DEBUG if self._warned else logging.WARNING
            LOG.log(level, "cannot notify systemd (%s): %s", fields[0], exc)
            self._warned = True
            return False
        return True

    def status(self, text: str) -> None:
        """What ``systemctl status`` shows."""
        self.send(f"STATUS={_one_line(text)}")

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={_one_line(status)}")

    def start_watchdog(self) -> None:
        """Ping now and every :attr:`ping_every` seconds, from the running event loop."""
        if self.ping_every is not None:
            self._repeat("watchdog", self.ping_every, "WATCHDOG=1")

    def stopping(self, status: str) -> None:
        """STOPPING=1, then keep extending the stop timeout until :meth:`close`."""
        self.send("STOPPING=1", f"STATUS={_one_line(status)}")
        if self.enabled:
            self._repeat("extend", EXTEND_EVERY, f"EXTEND_TIMEOUT_USEC={int(EXTEND_FOR * 1e6)}")

    def _repeat(self, name: str, every: float, message: str) -> None:
        self.send(message)
        loop = asyncio.get_running_loop()
        self._timers[name] = loop.call_later(every, self._repeat, name, every, message)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        if self._socket is not None:
            self._socket.close()
            self._socket = None


# -- the unit file ----------------------------------------------------------------------

UNIT_TEMPLATE = """\
# {unit}: lava-dispatch worker under systemd (see docs/worker.md, "Running under systemd").
# Installed by `lava-dispatch worker --install-systemd-unit`, which writes the
# path of the installed lava-dispatch below. Settings: /etc/lava-dispatcher/worker.yaml.

[Unit]
Description=LAVA-compatible dispatcher worker (lava-dispatch worker)
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={exec_start}
# READY=1 comes once the store is open, every device file is checked, jobs left
# by a crash are ended and the listener answers.
TimeoutStartSec=300
# WATCHDOG=1 from the event loop every 15 s: a stuck worker gets SIGABRT (its
# threads' stacks go to the journal) and is restarted.
WatchdogSec=30s
# SIGTERM to the worker alone: it cancels its jobs itself and SIGKILLs them
# after min(stop-timeout, cancel-timeout) = {jobs_stop} s, then stops its helpers; whatever
# is left in the unit is SIGKILLed after TimeoutStopSec, which the worker
# extends (EXTEND_TIMEOUT_USEC) while a longer stop is still progressing.
KillMode=mixed
TimeoutStopSec={stop_timeout}s
Restart=on-failure
RestartSec=5s
# exit 2 is a bad config or device file: restarting would not fix it
RestartPreventExitStatus=2
StateDirectory=lava-dispatcher
ConfigurationDirectory=lava-dispatcher
StandardOutput=journal
StandardError=journal
SyslogIdentifier=lava-worker
LimitNOFILE=65536
# Hardening that keeps jobs working: they need /dev/kvm, /dev/net/tun, serial
# ports, USB, loop and nbd devices, W+X memory (QEMU's JIT), setuid bits in
# unpacked root filesystems and /tmp shared with NFS/TFTP servers, so the unit
# has no device allow-list, PrivateTmp, MemoryDenyWriteExecute or RestrictSUIDSGID.
ProtectSystem=full
ProtectControlGroups=yes
ProtectKernelLogs=yes
ProtectHostname=yes
RestrictRealtime=yes

[Install]
WantedBy=multi-user.target
"""


def exec_quote(word: str) -> str:
    """One word of an ExecStart= line: quoted when needed, ``%`` and ``$`` doubled."""
    word = word.replace("%", "%%").replace("$", "$$")
    if word and not any(c.isspace() or c in "\"'\\;" for c in word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def stop_timeout(config: WorkerConfig) -> int:
    """TimeoutStopSec for this config: the jobs' part of a stop, then the helpers'."""
    return math.ceil(min(config.stop_timeout, config.cancel_timeout)) + HELPERS_STOP


def render_unit(command: Sequence[str], config: WorkerConfig) -> str:
    """The unit file that runs ``command`` (``lava-dispatch worker ...``) with these settings."""
    return UNIT_TEMPLATE.format(
        unit=UNIT_NAME,
        exec_start=" ".join(exec_quote(word) for word in command),
        jobs_stop=f"{min(config.stop_timeout, config.cancel_timeout):g}",
        stop_timeout=stop_timeout(config),
    )


def lava_dispatch_command() -> list[str]:
    """How to run this installation's ``lava-dispatch``: the script beside our Python, on PATH, or ``-m``."""
    beside = Path(sys.executable).parent / "lava-dispatch"
    if os.access(beside, os.X_OK):
        return [str(beside)]
    found = shutil.which("lava-dispatch")
    if found is not None:
        return [str(Path(found).absolute())]
    return [sys.executable, "-m", "lava_dispatcher"]


def install_unit(prefix: Path, worker_args: Sequence[str], config: WorkerConfig) -> tuple[Path, bool]:
    """Write the unit under ``prefix``/etc/systemd/system; its path, and whether it changed."""
    text = render_unit([*lava_dispatch_command(), "worker", *worker_args], config)
    path = prefix / "etc" / "systemd" / "system" / UNIT_NAME
    try:
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            return path, False
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{UNIT_NAME}.tmp")
        temporary.write_text(text, encoding="utf-8")
        temporary.replace(path)
    except OSError as exc:
        raise ConfigError(f"cannot install {path}: {exc.strerror or exc}") from None
    return path, True
