"""The two ways of hosting a simulated board: `run` (stdio) and `serve` (daemon)."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

from lava_dispatcher.sim.bootloaders import bootloader_factory
from lava_dispatcher.sim.config import SimConfig
from lava_dispatcher.sim.control import (
    INFO_NAME,
    SOCKET_NAME,
    ControlError,
    ControlServer,
    request,
    write_info,
)
from lava_dispatcher.sim.dut import SimDUT
from lava_dispatcher.sim.line import FaultInjector, SerialLine
from lava_dispatcher.sim.loop import EventLoop
from lava_dispatcher.sim.namespace import BoardError
from lava_dispatcher.sim.transports import (
    Console,
    FanoutConsole,
    PtyConsole,
    StdioConsole,
    TcpConsole,
)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# How long `serve --detach` waits for the daemon to report ready.
DETACH_TIMEOUT = 60.0


class SimError(Exception):
    """A failure to report to the user in one line."""


def _make_dut(loop: EventLoop, config: SimConfig, console: Console) -> SimDUT:
    faults = FaultInjector(config.drop_rate, config.garble_rate, config.seed)
    line = SerialLine(loop, console, baud=config.baud, faults=faults)
    dut = SimDUT(loop, config, line, bootloader=bootloader_factory(config))
    if config.input_drop_rate:
        # characters typed into the board lost on the way (their own random stream)
        typed = FaultInjector(config.input_drop_rate, 0.0, config.seed)

        def board_input(data: bytes) -> None:
            data = typed.apply(data)
            if data:
                dut.input(data)

        console.on_input = board_input
    else:
        console.on_input = dut.input
    return dut


def run_stdio(config: SimConfig) -> int:
    """`sim run`: the board on stdin/stdout, powered while this process lives."""
    loop = EventLoop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, loop.stop)
    try:
        console = StdioConsole(loop, on_eof=loop.stop)
    except BaseException:
        loop.close()
        raise
    dut: SimDUT | None = None
    try:
        dut = _make_dut(loop, config, console)
        try:
            dut.power_on()
        except BoardError as exc:
            raise SimError(f"power on: {exc}")
        loop.run()
    finally:
        if dut is not None:
            dut.power_off()
        console.close()
        loop.close()
    return 0


def _check_not_running(control_dir: Path) -> None:
    """Refuse to start twice on one directory; clear a dead daemon's files."""
    if not (control_dir / SOCKET_NAME).exists() and not (control_dir / INFO_NAME).exists():
        return
    try:
        reply = request(control_dir, {"op": "status"}, timeout=5.0)
    except ControlError:
        for name in (SOCKET_NAME, INFO_NAME):
            with contextlib.suppress(FileNotFoundError):
                (control_dir / name).unlink()
        return
    raise SimError(
        f"a simulator daemon is already running at {control_dir} (pid {reply.get('pid')})"
    )


class _Readiness:
    """Tells whoever started the daemon that it is ready, once: a line of
    JSON on stdout, or (detached) a message on the pipe to the parent."""

    def __init__(self, fd: int | None, out: TextIO) -> None:
        self.fd = fd
        self.out = out

    def ready(self, announcement: str) -> None:
        if self.fd is None:
            with contextlib.suppress(OSError, ValueError):
                print(announcement, file=self.out, flush=True)
        else:
            self._send(f"ok {announcement}")

    def failed(self, message: str) -> None:
        if self.fd is not None:
            self._send(f"error {message}")

    def _send(self, message: str) -> None:
        assert self.fd is not None
        with contextlib.suppress(OSError):
            os.write(self.fd, message.encode())
        self.close()

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None


def _detach(log_file: str | None) -> tuple[int | None, int]:
    """Become a daemon. In the original process, return (exit status, -1)
    once the daemon is ready or failed; in the daemon, return (None, fd of
    the pipe to report readiness on)."""
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    child = os.fork()
    if child:
        os.close(write_end)
        os.waitpid(child, 0)
        data = bytearray()
        deadline = time.monotonic() + DETACH_TIMEOUT
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            while (remaining := deadline - time.monotonic()) > 0:
                ready, _, _ = select.select([pipe], [], [], remaining)
                chunk = pipe.read(65536) if ready else b""
                if ready and not chunk:
                    break
                data += chunk or b""
        message = data.decode(errors="replace")
        if message.startswith("ok "):
            print(message[3:].strip(), flush=True)
            return 0, -1
        print(
            f"lava-dispatch sim serve: {message.removeprefix('error ') or 'the daemon did not start'}",
            file=sys.stderr,
        )
        return 1, -1
    # the intermediate child: leave the session, let the grandchild go on
    os.close(read_end)
    os.setsid()
    if os.fork():
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    if log_file:
        err = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(err, 2)
        os.close(err)
    else:
        os.dup2(devnull, 2)
    os.close(devnull)
    return None, write_end


def serve(
    config: SimConfig,
    control_dir: str | Path,
    *,
    pty_link: str | None = None,
    tcp_port: int | None = None,
    detach: bool = False,
    log_file: str | None = None,
    out: TextIO | None = None,
) -> int:
    """`sim serve`: a daemon hosting one board, powered off at start."""
    if pty_link is None and tcp_port is None:
        raise SimError("a served board needs a console: a pty link, a TCP port or both")
    control_dir = Path(control_dir).absolute()
    try:
        control_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SimError(f"cannot create the control directory {control_dir}: {exc.strerror}")
    _check_not_running(control_dir)
    readiness = _Readiness(None, out or sys.stdout)
    if detach:
        status, ready_fd = _detach(log_file)
        if status is not None:
            return status
        readiness.fd = ready_fd
    try:
        return _serve(config, control_dir, pty_link, tcp_port, readiness)
    except (SimError, OSError) as exc:
        readiness.failed(str(exc))
        raise
    finally:
        readiness.close()


FLASH_DIR = "flash"


def _flash(board: SimDUT, control_dir: Path, source: object) -> dict[str, Any]:
    """`sim flash --ramdisk FILE`: copy FILE into the control directory; the
    board boots it from the next power-on (or reboot) on."""
    if not isinstance(source, str) or not source:
        return {"ok": False, "error": "flash: give the ramdisk's path"}
    directory = control_dir / FLASH_DIR
    target = directory / "ramdisk"
    try:
        directory.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".ramdisk.", dir=directory)
        try:
            with open(source, "rb") as src, os.fdopen(fd, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        return {"ok": False, "error": f"flash: cannot copy {source}: {exc.strerror or exc}"}
    board.flash(str(target))
    return {
        "ok": True,
        "ramdisk": str(target),
        "size": target.stat().st_size,
        "status": board.status(),
        "pid": os.getpid(),
    }


def _serve(
    config: SimConfig,
    control_dir: Path,
    pty_link: str | None,
    tcp_port: int | None,
    readiness: _Readiness,
) -> int:
    loop = EventLoop()
    consoles: list[Console] = []
    control: ControlServer | None = None
    dut: SimDUT | None = None
    try:
        if pty_link is not None:
            consoles.append(PtyConsole(loop, pty_link))
        if tcp_port is not None:
            consoles.append(TcpConsole(loop, tcp_port))
        console = consoles[0] if len(consoles) == 1 else FanoutConsole(loop, consoles)
        dut = _make_dut(loop, config, console)
        board = dut

        def handle(message: dict[str, Any]) -> dict[str, Any]:
            op = message.get("op")
            if op == "power":
                action = message.get("action")
                try:
                    if action == "on":
                        changed = board.power_on()
                    elif action == "off":
                        changed = board.power_off()
                    elif action == "reset":
                        board.reset()
                        changed = True
                    elif action == "status":
                        changed = False
                    else:
                        return {"ok": False, "error": f"unknown power action {action!r}"}
                except BoardError as exc:
                    return {"ok": False, "error": f"power {action}: {exc}"}
                return {
                    "ok": True,
                    "changed": changed,
                    "status": board.status(),
                    "pid": os.getpid(),
                }
            if op == "flash":
                return _flash(board, control_dir, message.get("ramdisk"))
            if op == "status":
                return {"ok": True, "status": board.status(), "pid": os.getpid()}
            if op == "stop":
                return {"ok": True, "pid": os.getpid()}
            return {"ok": False, "error": f"unknown request {op!r}"}

        control = ControlServer(loop, control_dir, handle, on_stop=loop.stop)
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, loop.stop)
        pty_console = next((c for c in consoles if isinstance(c, PtyConsole)), None)
        tcp_console = next((c for c in consoles if isinstance(c, TcpConsole)), None)
        info = {
            "pid": os.getpid(),
            "pty": pty_console.link if pty_console else None,
            "pty_device": pty_console.device if pty_console else None,
            "tcp_port": tcp_console.port if tcp_console else None,
            "control": str(control_dir),
            "socket": str(control.path),
        }
        write_info(control_dir, info)
        readiness.ready(json.dumps(info))
        loop.run()
        return 0
    finally:
        if dut is not None:
            dut.power_off()
        for console in consoles:
            console.close()
        with contextlib.suppress(FileNotFoundError):
            (control_dir / INFO_NAME).unlink()
        if control is not None:
            control.close()
            control.release_stop_waiters()
        loop.close()
