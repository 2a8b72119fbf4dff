"""The live console of a namespace, and the action that opens it.

A :class:`Connection` is a console (transport + always-on reader + expect
buffer) with its shell session and kernel-message watcher. It is opened
once per namespace by ``connect-device`` and reused by every later action
of the namespace; finalize closes it. Lines the reader delivers go to the
job log as ``target`` when the namespace is the one running, else as
``feedback`` with ``ns``, at the time they arrived.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lava_dispatcher.console import Console, ShellSession, open_transport
from lava_dispatcher.console.expect import ExpectMatch, ExpectTimeout
from lava_dispatcher.console.reconnect import RECONNECT_WITHIN, ReconnectingTransport
from lava_dispatcher.console.watchers import RESET_KIND, KernelMessage, KernelMessageWatcher
from lava_dispatcher.data import Key
from lava_dispatcher.errors import ConfigurationError, InfrastructureError, JobError
from lava_dispatcher.hostcmd import host_environment
from lava_dispatcher.pipeline import Action, RunContext

#: how a console is left politely before its process is ended, per tag: (bytes, shown as)
_DISCONNECT = {"telnet": (b"\x1dquit\n", "telnet's quit"), "ssh": (b"\n~.", "~.")}
#: how long a console gets to end on its goodbye before its process is ended for sure
GOODBYE_GRACE = 3.0


class Connection:
    """One open console of a namespace."""

    def __init__(
        self,
        console: Console,
        shell: ShellSession,
        *,
        namespace: str,
        name: str,
        tags: Sequence[str],
        watcher: KernelMessageWatcher,
        logger: Any = None,
    ) -> None:
        self.console = console
        self.shell = shell
        self.namespace = namespace
        self.name = name
        self.tags = list(tags)
        self.watcher = watcher
        self.logger = logger
        self.kernel_messages: list[KernelMessage] = []

    @property
    def closed(self) -> bool:
        return self.console.closed

    def close(self) -> None:
        """Say goodbye the console's way (telnet's quit, ssh's ``~.``) and wait
        for its process to end on it, then release the console for sure.

        A connection being reopened gets no goodbye (it would wait for it)."""
        console = self.console
        if console.closed:
            return
        transport: Any = console.transport
        goodbyes = [_DISCONNECT[tag] for tag in self.tags if tag in _DISCONNECT]
        if goodbyes and getattr(transport, "connected", True) and not console.buffer.closed:
            ending = getattr(transport, "ending", None)
            if ending is not None:
                ending()  # its end is ours, not a drop to reconnect
            data, shown = goodbyes[0]
            pid = getattr(transport, "pid", None)
            try:
                console.write(data)
            except Exception:  # already gone: nothing to say goodbye to
                pass
            else:
                if console.reader.wait_closed(GOODBYE_GRACE):
                    self._log("info", f"{self.name}: session ended with {shown} (pid {pid})")
                else:
                    self._log("warning", f"{self.name}: the session did not end on {shown} "
                                         f"within {GOODBYE_GRACE:g} seconds: terminating pid {pid}")  # fmt: skip
        console.close()

    def _log(self, level: str, message: str) -> None:
        if self.logger is not None:
            getattr(self.logger, level)(message)


CONNECTION: Key[Connection] = Key("connection", Connection, "the live console of the namespace")


def console_spec(device: Mapping[str, Any]) -> tuple[str, dict[str, Any], list[str]]:
    """Which console to open: (name, transport spec, tags).

    LAVA's ``commands.connect``, or the ``commands.connections`` entry tagged
    ``primary`` (or the only entry).
    """
    commands = device.get("commands") or {}
    connections = commands.get("connections") or {}
    for name, entry in connections.items():
        entry = entry or {}
        if "primary" in (entry.get("tags") or []):
            return str(name), dict(entry), list(entry.get("tags") or [])
    if commands.get("connect"):
        command = commands["connect"]
        tags = ["telnet"] if str(command).split()[:1] == ["telnet"] else []
        return "connect", {"connect": command}, tags
    if len(connections) == 1:
        name, entry = next(iter(connections.items()))
        return str(name), dict(entry or {}), list((entry or {}).get("tags") or [])
    if connections:
        raise ConfigurationError(
            "commands.connections: none of "
            + ", ".join(map(str, connections))
            + " is tagged 'primary'; expected one primary console"
        )
    raise ConfigurationError(
        "device has no console: expected commands.connect or commands.connections"
    )


class LogFlusher:
    """A console watcher that writes out the log's buffered lines when the console goes quiet."""

    def __init__(self, logger: Any) -> None:
        self.logger = logger

    def feed(self, line: str, ts: float) -> None:
        pass

    def idle(self, now: float) -> None:
        self.logger.flush()

    def flush(self) -> None:
        self.logger.flush()


def line_logger(ctx: RunContext, namespace: str) -> Any:
    """Log a console line as target (own namespace running) or feedback."""
    logger = ctx.logger

    def on_line(text: str, when: float) -> None:
        if ctx.namespace == namespace:
            logger.target(text, when=when)
        else:
            logger.feedback(text, namespace, when=when)

    return on_line


def open_connection(
    ctx: RunContext,
    namespace: str,
    name: str,
    spec: Mapping[str, Any],
    tags: Sequence[str],
    prompts: Sequence[str] = (),
    reconnect: float = 0.0,
    kernel_messages: bool = True,
    echo: bool | None = None,
) -> Connection:
    """Open a console, start its reader and register its release at finalize.

    With ``reconnect`` (seconds), a connection that drops is opened again
    within that bound, its gap logged as a warning (see
    :mod:`lava_dispatcher.console.reconnect`). ``kernel_messages=False``
    for a console that shows a remote shell rather than a kernel (ssh);
    ``echo`` presets whether the shell echoes (None: find out)."""
    env = host_environment()
    transport: Any
    try:
        if reconnect > 0:
            transport = ReconnectingTransport(
                lambda: open_transport(spec, env=env),
                name=name,
                within=reconnect,
                notify=ctx.logger.warning,
            )
        else:
            transport = open_transport(spec, env=env)
    except ValueError as exc:
        raise ConfigurationError(f"commands.connections.{name}: {exc}") from exc
    except OSError as exc:
        raise InfrastructureError(f"cannot open console {name!r}: {exc}") from exc

    holder: list[Connection] = []

    def on_kernel_message(message: KernelMessage) -> None:
        if holder:
            holder[0].kernel_messages.append(message)
        level = ctx.logger.error if message.fatal else ctx.logger.warning
        level(f"kernel message ({message.kind}): {message.text}")
        if message.kind == RESET_KIND:
            # the board, not the job: a reset loop, a watchdog, a power glitch
            ctx.interrupter.post(InfrastructureError(f"the board reset: {message.text.strip()!r}"))
        elif message.fatal:
            ctx.interrupter.post(JobError(f"{message.kind}: {message.text}"))

    watcher = KernelMessageWatcher(on_kernel_message, enabled=kernel_messages)
    console = Console(
        transport,
        name=name,
        on_line=line_logger(ctx, namespace),
        on_input=ctx.logger.input,
        watchers=[watcher, LogFlusher(ctx.logger)],
        interrupter=ctx.interrupter,
    )
    console.start()
    shell = ShellSession(console, prompts=list(prompts))
    shell.echo = echo
    connection = Connection(
        console, shell, namespace=namespace, name=name, tags=tags, watcher=watcher,
        logger=ctx.logger,
    )
    holder.append(connection)
    ctx.add_finalizer(f"console {name} ({transport.describe()})", connection.close)
    ctx.data(namespace).set(CONNECTION, connection)
    return connection


def current_connection(ctx: RunContext, action: Action) -> Connection:
    """The live console the action drives (its ``connection-namespace``)."""
    connection = ctx.data(action.connection_namespace).get(CONNECTION, default=None)
    if connection is None or connection.closed:
        raise InfrastructureError(
            f"{action.name}: no open console in namespace {action.connection_namespace!r}"
        )
    return connection


def reconnect_within(dispatcher: Mapping[str, Any]) -> float:
    """How long a dropped device console may take to come back (seconds):
    the dispatcher config's ``console_reconnect``, 0 to fail at once as LAVA does."""
    value = dispatcher.get("console_reconnect", RECONNECT_WITHIN)
    try:
        seconds = float(value)
        if isinstance(value, bool) or seconds < 0:
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"dispatcher config: console_reconnect: got {value!r}; "
            "expected a number of seconds (0 turns reconnecting off)"
        ) from None
    return seconds


class ConnectDevice(Action):
    """Open the device's primary console, or reuse the namespace's open one."""

    name = "connect-device"
    description = "use the device's console command or serial port to connect"
    summary = "run connection command"
    timeout_exception = InfrastructureError
    provides = (CONNECTION,)

    def validate(self) -> None:
        console_spec(self.settings.device)
        reconnect_within(self.settings.dispatcher)

    def run(self, ctx: RunContext) -> None:
        data = ctx.data(self.namespace)
        existing = data.get(CONNECTION, default=None)
        if existing is not None and not existing.closed:
            ctx.logger.debug(f"[{self.namespace}] reusing console {existing.name}")
            return
        name, spec, tags = console_spec(self.settings.device)
        prompt = self.get_constant("default-shell-prompt")
        connection = open_connection(
            ctx, self.namespace, name, spec, tags, prompts=[prompt] if prompt else [],
            reconnect=reconnect_within(self.settings.dispatcher),
        )
        ctx.logger.info(
            f"[{self.namespace}] connected to {name}: {connection.console.transport.describe()}"
        )
        self.results = {"connection": name}


def expect(
    ctx: RunContext,
    action: Action,
    connection: Connection,
    patterns: Sequence[Any],
    timeout: float | None = None,
) -> ExpectMatch:
    """Expect on the console within the action's deadline (or a shorter ``timeout``).

    Running out of time raises the error of the deadline that expired, with
    the last thing the console showed, so a failed job says why.
    """
    left = ctx.remaining()
    limit = left if timeout is None else min(timeout, left)
    try:
        return connection.shell.expect(list(patterns), timeout=limit)
    except ExpectTimeout as exc:
        tail = _last_line(exc.tail)
        shown = f"the console showed last: {tail!r}" if tail else "the console showed nothing"
        if limit < left:
            raise action.timeout_exception(
                f"{action.name}: no match for {_patterns(patterns)} within {limit:g} seconds; {shown}"
            ) from exc
        raise ctx.timeout_error(f"waiting for {_patterns(patterns)}; {shown}") from exc


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.replace("\r", "\n").split("\n") if line.strip()]
    return lines[-1][-200:] if lines else ""


def _patterns(patterns: Sequence[Any]) -> str:
    shown = [p.pattern if hasattr(p, "pattern") else p for p in patterns if isinstance(p, str) or hasattr(p, "pattern")]
    return ", ".join(repr(p) for p in shown[:4]) + (", ..." if len(shown) > 4 else "")
