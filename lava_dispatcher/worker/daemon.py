"""The worker daemon: start-up, the ready point, and the graceful stop.

Start-up, in order (any failure stops it with one clear message, exit 2,
having changed nothing that matters):

1. lock the state directory (one daemon per directory);
2. open the store; bind the event socket (when events are on) and start the
   notifier; from here on every committed change of a job or a device is an
   event and goes to the notifier (:mod:`.changes`);
3. start the validator child; check every device file and health-check job;
4. bring the devices table in line with the device files;
5. recover from a crash: jobs left Scheduled, Running or Canceling by a
   worker that died are ended (their processes killed, their logs indexed to
   the last line), marked Incomplete with the reason, and their devices set
   Unknown so that they are health-checked; a job that never started goes
   back to the queue;
6. start the MultiNode coordinator (unless one is configured);
7. listen (HTTP);
8. **ready**: :attr:`Daemon.ready` is set, ``on_ready`` callbacks run (the
   place for systemd's ``READY=1``), and one line ``ready: listening on
   URL`` is logged; then the scheduler starts.

Stop (SIGTERM, SIGINT, :meth:`Daemon.stop`): ``on_stopping`` callbacks run
(systemd's ``STOPPING=1``), stop listening, stop scheduling, cancel running
jobs (SIGKILL after ``stop_timeout``), stop the coordinator and the
validator, close the store. Queued jobs stay queued.

:func:`serve` speaks to systemd when it asked (:mod:`.systemd`): status
while starting, ``READY=1`` at the ready point, watchdog pings from the
event loop, ``STOPPING=1`` at the stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from lava_dispatcher.worker.changes import ChangeFeed
from lava_dispatcher.worker.config import WorkerConfig, host_port
from lava_dispatcher.worker.devices import read_device_file
from lava_dispatcher.worker.errors import ConfigError, WorkerError
from lava_dispatcher.worker.events import EventHub
from lava_dispatcher.worker.procs import child_environment, die_with_parent
from lava_dispatcher.worker.runner import Runner
from lava_dispatcher.worker.scheduler import Scheduler, load_health_checks
from lava_dispatcher.worker.service import Service
from lava_dispatcher.worker.store import (
    ACTIVE,
    FINISHED,
    IDLE,
    INCOMPLETE,
    SCHEDULED,
    SUBMITTED,
    UNKNOWN,
    Store,
    now,
)
from lava_dispatcher.worker.systemd import Notifier
from lava_dispatcher.worker.validator import ValidatorClient
from lava_dispatcher.worker.zmq_publisher import CurveKeys, ZmqPublisher

if TYPE_CHECKING:
    import ssl

    from lava_dispatcher.worker.notify.notifier import Notifier as JobNotifier

LOG = logging.getLogger("lava-worker")
#: how long the coordinator child may take to listen
COORDINATOR_START = 30.0


@dataclass
class Inputs:
    """The device files and health-check jobs as the dispatcher found them."""

    #: hostname -> (device type, device file)
    devices: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: device type -> its health-check job
    checks: dict[str, str] = field(default_factory=dict)
    #: device type -> a health-check file for a type that has no device here (not used)
    unused_checks: dict[str, Path] = field(default_factory=dict)
    #: what is wrong (only when checked with ``keep_going``)
    errors: list[str] = field(default_factory=list)


def tls_context(config: WorkerConfig) -> ssl.SSLContext | None:
    """The HTTPS context of tls-cert/tls-key (None: plain HTTP); ConfigError when they do not load."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls-cert/tls-key: cannot load {config.tls_cert} with {config.tls_key}: {exc}") from None
    return context


class Daemon:
    """One worker: its store, validator, scheduler, runner, coordinator and listener."""

    # made by start(), once the inputs are known to be good
    runner: Runner
    scheduler: Scheduler
    service: Service

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.ready = asyncio.Event()
        self.stopped = asyncio.Event()
        self.on_ready: list[Callable[[Daemon], None]] = []
        #: called at the start of a stop with what the stop is doing
        self.on_stopping: list[Callable[[Daemon, str], None]] = []
        self.url = ""
        self.store: Store | None = None
        self.validator = ValidatorClient(config.dispatcher)
        self.coordinator_address: str | None = config.coordinator
        self._lock: IO[str] | None = None
        self._coordinator: asyncio.subprocess.Process | None = None
        self._site: Any = None
        self._runner_http: Any = None
        self._scheduling: asyncio.Task[None] | None = None
        self._stopping: asyncio.Task[None] | None = None
        self._drainer: asyncio.Task[None] | None = None
        #: event notifications (None: off), their ZeroMQ socket, and the job notifier
        self.events: EventHub | None = None
        self.publisher: ZmqPublisher | None = None
        self.notifier: JobNotifier | None = None
        self.feed: ChangeFeed | None = None

    # -- start ----------------------------------------------------------------------

    def _take_lock(self) -> None:
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        lock = open(self.config.state_dir / "worker.lock", "a+", encoding="utf-8")  # noqa: SIM115 - held for the daemon's life
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            owner = lock.read().strip() or "another process"
            lock.close()
            raise ConfigError(f"state-dir {self.config.state_dir} is in use by another worker (pid {owner})") from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        self._lock = lock

    async def check_inputs(self, keep_going: bool = False) -> Inputs:
        """Every device file and health-check job, checked by the dispatcher (the validator child).

        The start stops at the first bad one (ConfigError); ``--check-config``
        keeps going and collects every error in :attr:`Inputs.errors`.
        """
        inputs = Inputs()

        def bad(message: str) -> None:
            if not keep_going:
                raise ConfigError(message)
            inputs.errors.append(message)

        if not self.config.devices.is_dir():
            raise ConfigError(f"devices: {self.config.devices} is not a directory")
        for path in sorted(self.config.devices.glob("*.yaml")):
            try:
                if path.is_file():
                    device = read_device_file(path)
                    inputs.devices[device.hostname] = (await self.validator.device(device.path), str(device.path))
            except ConfigError as exc:
                bad(str(exc))
        by_type = {device_type: path for device_type, path in inputs.devices.values()}
        try:
            checks = load_health_checks(self.config.health_checks)
        except (OSError, UnicodeDecodeError) as exc:
            bad(f"health checks: cannot read {self.config.health_checks}: {exc}")
            checks = {}
        for device_type, (path, text) in checks.items():
            if device_type not in by_type:
                inputs.unused_checks[device_type] = path
                continue
            try:
                await self.validator.job(text, Path(by_type[device_type]))
                inputs.checks[device_type] = text
            except WorkerError as exc:
                bad(f"health check {path}: {exc}")
        return inputs

    async def start(self) -> None:
        """Everything up to the ready point; ConfigError (nothing started) when an input is bad."""
        self._take_lock()
        try:
            self.store = store = Store(self.config.state_dir)
            self._start_telling(store)
            await self.validator.start()
            inputs = await self.check_inputs()
            for device_type, path in inputs.unused_checks.items():
                LOG.warning("health check %s: no device of type %s here; not used", path, device_type)
            devices = inputs.devices
            store.sync_devices(devices)
            self.runner = Runner(self.config, store, self._finished, lambda: self.coordinator_address)
            assert self.feed is not None
            self.runner.on_test_event = self.feed.test_event
            self.scheduler = Scheduler(store, self.runner, inputs.checks, self.config.health_check_interval)
            self.service = Service(self.config, store, self.validator, self.scheduler, self.runner)
            if self.publisher is not None and self.config.event_port == 0:
                # the port the system picked, for scheduler.get_publisher_event_socket
                port = self.publisher.address.rpartition(":")[2]
                host = self.config.event_host
                shown = "*" if host in ("0.0.0.0", "::", "*") else f"[{host}]" if ":" in host else host
                self.service.event_socket = f"tcp://{shown}:{port}"
            await self._recover()
            if self.coordinator_address is None:
                self.coordinator_address = await self._start_coordinator()
            await self._listen()
        except BaseException:
            await self._shutdown_parts()
            raise
        self._scheduling = asyncio.create_task(self.scheduler.run(), name="scheduler")
        self.ready.set()
        LOG.info("ready: listening on %s (state %s, %d devices, coordinator %s)", self.url,
                 self.config.state_dir, len(devices), self.coordinator_address)  # fmt: skip
        if self.feed is not None:
            self.feed.worker_changed("Online")
        for callback in self.on_ready:
            callback(self)

    def _start_telling(self, store: Store) -> None:
        """Events (when on: the hub and its ZeroMQ socket) and job notifications, fed by
        every commit of the store; ConfigError when the event socket cannot be bound."""
        from lava_dispatcher.worker.notify.notifier import Notifier as JobNotifier
        from lava_dispatcher.worker.notify.settings import NotifySettings

        config = self.config
        if config.event_topic is not None:
            curve = None
            if config.event_curve_secret is not None and config.event_curve_clients is not None:
                try:
                    curve = CurveKeys.load(config.event_curve_secret, config.event_curve_clients)
                except ValueError as exc:
                    raise ConfigError(str(exc)) from None
            self.events = EventHub(config.event_topic)
            host = f"[{config.event_host}]" if ":" in config.event_host else config.event_host
            try:
                self.publisher = ZmqPublisher(f"tcp://{host}:{config.event_port}", curve)
            except OSError as exc:
                raise ConfigError(f"event-port: {exc}") from None
            self.events.listeners.append(self.publisher.send)
            LOG.info("events: topic %s, ZeroMQ %s%s", config.event_topic, self.publisher.address,
                     " (CURVE)" if curve else "")  # fmt: skip
        self.notifier = JobNotifier.for_worker(
            NotifySettings.from_mapping(config.notify, "notify"), store, config.state_dir
        )
        self.feed = ChangeFeed(store, config.name, self.events, [self.notifier])
        self.feed.prime()
        store.on_commit = self.feed.committed

    def _finished(self, job: Any, outcome: Any) -> None:
        self.scheduler.job_finished(job, outcome)

    async def _recover(self) -> None:
        """End what a dead worker left running (see the module docstring)."""
        store = self.store
        assert store is not None
        placeholders = ", ".join("?" for _ in ACTIVE)
        for job in store.jobs(f"state IN ({placeholders})", ACTIVE):
            started = await self.runner.end_orphan(job)
            if not started and job.state == SCHEDULED:
                LOG.warning("job %s: never started before the worker stopped: queued again", job.display_id)
                with store.transaction():
                    store.update_job(job.id, state=SUBMITTED, actual_device=None)
                    if job.actual_device:
                        store.update_device(job.actual_device, state=IDLE, current_job=None)
                continue
            reason = (
                "the worker stopped (killed or crashed) while this job was "
                f"{job.state.lower()}; it was ended when the worker started again"
            )
            LOG.warning("job %s: Incomplete: %s", job.display_id, reason)
            self.runner.log(job.id).append("error", f"lava-worker: {reason}")
            with store.transaction():
                store.update_job(job.id, state=FINISHED, health=INCOMPLETE, end_time=now(),
                                 failure_comment=reason, error_type="Infrastructure",
                                 error_msg=reason)  # fmt: skip
                if job.actual_device:
                    store.update_device(job.actual_device, state=IDLE, current_job=None)
                    device = store.device(job.actual_device)
                    if device is not None and device.health in ("Good", UNKNOWN, "Bad"):
                        store.update_device(job.actual_device, health=UNKNOWN,
                                            health_reason=f"job {job.display_id} was interrupted")  # fmt: skip
        # a device can only be busy with a job that is still active
        with store.transaction():
            for device in store.devices():
                if device.state != IDLE or device.current_job is not None:
                    store.update_device(device.hostname, state=IDLE, current_job=None)

    async def _start_coordinator(self) -> str:
        """Our coordinator as a child on a free loopback port, its state in the state directory."""
        state = self.config.state_dir / "coordinator"
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "lava_dispatcher", "coordinator", "--listen", "127.0.0.1:0",
            "--state", str(state),
            stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            env=child_environment(), preexec_fn=die_with_parent,
        )  # fmt: skip
        self._coordinator = process
        assert process.stderr is not None
        lines: list[str] = []
        try:
            async with asyncio.timeout(COORDINATOR_START):
                while line := (await process.stderr.readline()).decode(errors="replace"):
                    lines.append(line.rstrip())
                    if "listening on " in line:
                        address = line.split("listening on ", 1)[1].split()[0]
                        self._drainer = asyncio.create_task(self._drain(process.stderr))
                        return address
        except TimeoutError:
            pass
        tail = "; ".join(lines[-5:]) or "no output"
        raise ConfigError(f"the MultiNode coordinator did not start: {tail}")

    @staticmethod
    async def _drain(stream: asyncio.StreamReader) -> None:
        coordinator = logging.getLogger("lava-worker.coordinator")
        while line := await stream.readline():
            coordinator.info("%s", line.decode(errors="replace").rstrip())

    async def _listen(self) -> None:
        from aiohttp import web

        from lava_dispatcher.worker.http import make_app

        host, port = host_port(self.config.listen)
        ssl_context = tls_context(self.config)
        self._runner_http = web.AppRunner(make_app(self.service, self.events), access_log=None)
        await self._runner_http.setup()
        site = web.TCPSite(self._runner_http, host, port, ssl_context=ssl_context, backlog=1024)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(f"listen: cannot listen on {self.config.listen}: {exc.strerror}") from None
        self._site = site
        server = getattr(site, "_server", None)
        sockets = server.sockets if server is not None else []
        bound = sockets[0].getsockname()[1] if sockets else port
        shown = f"[{host}]" if ":" in host else host
        self.url = f"{'https' if ssl_context else 'http'}://{shown}:{bound}"

    # -- stop -----------------------------------------------------------------------

    def request_stop(self, reason: str = "the worker is stopping") -> None:
        """Start the graceful stop (from a signal handler); :attr:`stopped` is set at its end."""
        if self._stopping is None:
            self._stopping = asyncio.create_task(self.stop(reason), name="stop")

    async def stop(self, reason: str = "the worker is stopping") -> None:
        """Stop listening and scheduling, cancel running jobs, stop the helpers."""
        LOG.info("stopping: %s", reason)
        running = len(self.runner.running) if self._scheduling is not None else 0
        for callback in self.on_stopping:
            callback(self, f"stopping ({reason}): canceling {running} running job(s)")
        if self._runner_http is not None:
            await self._runner_http.cleanup()
            self._runner_http = None
        if self._scheduling is not None:
            await self.scheduler.stop()
            await self._scheduling
            self._scheduling = None
            await self.runner.stop(f"canceled: {reason}")
        await self._shutdown_parts()
        LOG.info("stopped")
        self.stopped.set()

    async def _shutdown_parts(self) -> None:
        if self.feed is not None and self.ready.is_set():
            self.feed.worker_changed("Offline")
        if self.notifier is not None:
            await self.notifier.close(grace=min(5.0, self.config.stop_timeout))
            self.notifier = None
        if self.events is not None:
            self.events.close()
        if self.publisher is not None:
            self.publisher.close()
            self.publisher = None
        if self._runner_http is not None:
            await self._runner_http.cleanup()
            self._runner_http = None
        if self._coordinator is not None and self._coordinator.returncode is None:
            self._coordinator.terminate()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await self._coordinator.wait()
            if self._coordinator.returncode is None:
                self._coordinator.kill()
                await self._coordinator.wait()
        await self.validator.close()
        if self.store is not None:
            self.store.on_commit = None
            self.store.close()
            self.store = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None


async def serve(config: WorkerConfig, on_ready: Callable[[Daemon], None] | None = None) -> int:
    """Run a daemon until SIGTERM/SIGINT; 0 after a clean stop, 2 when it cannot start.

    Under systemd (``$NOTIFY_SOCKET``) it reports its progress, readiness,
    liveness (watchdog) and stop; see :mod:`lava_dispatcher.worker.systemd`.
    """
    notifier = Notifier.from_environment()  # before any child inherits the variables
    notifier.start_watchdog()
    notifier.status("starting: checking device files and health checks, recovering jobs")
    daemon = Daemon(config)
    daemon.on_ready.append(lambda d: notifier.ready(f"ready: listening on {d.url}"))
    if on_ready is not None:
        daemon.on_ready.append(on_ready)
    daemon.on_stopping.append(lambda _daemon, status: notifier.stopping(status))
    loop = asyncio.get_running_loop()
    try:
        try:
            await daemon.start()
        except (WorkerError, OSError) as exc:  # ConfigError and the like: one line, nothing started
            LOG.error("cannot start: %s", exc)
            notifier.status(f"cannot start: {exc}")
            return 2
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, daemon.request_stop, f"stopped by {signal.Signals(sig).name}")
        await daemon.stopped.wait()
        return 0
    finally:
        notifier.close()
