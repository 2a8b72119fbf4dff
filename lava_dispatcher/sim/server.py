"""Python API: a simulated board daemon as a context manager, plus argv helpers.

with SimServer(tmp_path, pty=True, tcp=True, password="secret") as sim:
    sim.power_on()
    port = serial.Serial(sim.pty)          # or socket.create_connection(("127.0.0.1", sim.tcp_port))
    ...
    device_power_on = sim.power_command("on")   # argv for a device file

with SimServer(tmp_path, ramdisk=initrd) as sim:   # or rootfs=DIR: the board's own root
    sim.flash(other_initrd)                        # booted from the next power-on on
    device_flash = sim.flash_command(path)         # argv of `sim flash` for a device file
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from lava_dispatcher.sim.config import SimConfig
from lava_dispatcher.sim.control import ControlError, request


class SimServerError(RuntimeError):
    """The daemon did not start, or misbehaved."""


def sim_command(*args: str) -> list[str]:
    """argv running `python -m lava_dispatcher.sim ARGS` with this interpreter."""
    return [sys.executable, "-m", "lava_dispatcher.sim", *args]


def run_command(**knobs: Any) -> list[str]:
    """argv of `sim run` with these knobs (SimConfig field names)."""
    return sim_command("run", *_config(knobs).to_argv())


def child_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment in which `python -m lava_dispatcher.sim` finds this copy
    of the package, installed or not."""
    env = dict(os.environ if base is None else base)
    root = str(Path(__file__).resolve().parents[2])
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in paths:
        env["PYTHONPATH"] = os.pathsep.join([root, *paths])
    return env


def _config(knobs: dict[str, Any]) -> SimConfig:
    unknown = set(knobs) - SimConfig.knob_names()
    if unknown:
        raise TypeError(f"unknown simulator knob(s): {', '.join(sorted(unknown))}")
    config = SimConfig(**knobs)
    config.validate()
    return config


def wait_process(process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait up to `timeout` seconds for `process` to end; True if it did."""
    if process.poll() is not None:
        return True
    try:
        pidfd = os.pidfd_open(process.pid)
    except (OSError, AttributeError):
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    try:
        select.select([pidfd], [], [], max(0.0, timeout))
    finally:
        os.close(pidfd)
    return process.poll() is not None


class SimServer:
    """A `sim serve` daemon hosting one board, run as a child process.

    The board starts powered off. `directory` is the daemon's control
    directory (created if needed); the pty link is `directory/ttySIM0`, the
    daemon's stderr goes to `directory/sim-serve.log`. Leaving the `with`
    block (normally or by an exception) stops the daemon, kills its shell and
    reaps the child.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        pty: bool = True,
        tcp: bool = False,
        tcp_port: int = 0,
        startup_timeout: float = 30.0,
        **knobs: Any,
    ) -> None:
        self.config = _config(knobs)
        self.directory = Path(directory).absolute()
        self.control = str(self.directory)
        self.startup_timeout = startup_timeout
        self.log_path = self.directory / "sim-serve.log"
        self._want_pty = pty
        self._want_tcp = tcp
        self._tcp_port = tcp_port
        self.process: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}
        self.pty: str | None = None
        self.pty_device: str | None = None
        self.tcp_port: int | None = None
        self.pid: int | None = None

    # -- lifetime ------------------------------------------------------------

    def command(self) -> list[str]:
        """argv of the `sim serve` this object starts."""
        argv = ["serve", "--control", self.control]
        if self._want_pty:
            argv += ["--pty", str(self.directory / "ttySIM0")]
        if self._want_tcp:
            argv += ["--tcp", str(self._tcp_port)]
        return sim_command(*argv, *self.config.to_argv())

    def start(self) -> SimServer:
        if self.process is not None:
            raise SimServerError("already started")
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                env=child_env(),
                start_new_session=True,
            )
        try:
            self.info = self._wait_ready(self.process)
        except BaseException:
            self.stop()
            raise
        self.pid = self.info["pid"]
        self.pty = self.info.get("pty")
        self.pty_device = self.info.get("pty_device")
        self.tcp_port = self.info.get("tcp_port")
        return self

    def _wait_ready(self, process: subprocess.Popen[bytes]) -> dict[str, Any]:
        stdout: IO[bytes] | None = process.stdout
        assert stdout is not None
        deadline = time.monotonic() + self.startup_timeout
        data = b""
        while b"\n" not in data:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SimServerError(
                    f"sim serve did not get ready in {self.startup_timeout} s{self._log_tail()}"
                )
            ready, _, _ = select.select([stdout], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(stdout.fileno(), 65536)
            if not chunk:
                wait_process(process, 5.0)
                raise SimServerError(
                    f"sim serve exited with status {process.returncode}{self._log_tail()}"
                )
            data += chunk
        try:
            info = json.loads(data.split(b"\n", 1)[0])
        except ValueError:
            raise SimServerError(f"sim serve announced something odd: {data!r}")
        if not isinstance(info, dict):
            raise SimServerError(f"sim serve announced something odd: {data!r}")
        return info

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-5:]
            if tail:
                return ":\n" + "\n".join(tail)
        return ""

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop the daemon (gracefully, else by signal) and reap it; return
        its exit status."""
        process, self.process = self.process, None
        if process is None:
            return None
        try:
            if process.poll() is None:
                with contextlib.suppress(ControlError, OSError, ValueError):
                    request(self.control, {"op": "stop"}, timeout)
                if not wait_process(process, timeout):
                    process.terminate()
                    if not wait_process(process, 5.0):
                        process.kill()
            process.wait()
        finally:
            if process.stdout is not None:
                process.stdout.close()
        return process.returncode

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- power ------------------------------------------------------------------

    def _power(self, action: str) -> dict[str, Any]:
        reply = request(self.control, {"op": "power", "action": action})
        status: dict[str, Any] = reply["status"]
        return status

    def power_on(self) -> dict[str, Any]:
        return self._power("on")

    def power_off(self) -> dict[str, Any]:
        return self._power("off")

    def reset(self) -> dict[str, Any]:
        return self._power("reset")

    def status(self) -> dict[str, Any]:
        return self._power("status")

    def flash(self, ramdisk: str | os.PathLike[str]) -> dict[str, Any]:
        """Give the board the ramdisk it boots from its next power-on on (the
        file is copied); returns the daemon's reply (ramdisk, size, status)."""
        return request(self.control, {"op": "flash", "ramdisk": os.path.abspath(ramdisk)})

    # -- argv for device files ----------------------------------------------------

    def power_command(self, action: str) -> list[str]:
        """argv of `sim power ACTION` for this daemon (on, off, reset, status)."""
        if action not in ("on", "off", "reset", "status"):
            raise ValueError(f"unknown power action {action!r}")
        return sim_command("power", action, "--control", self.control)

    def flash_command(self, ramdisk: str | os.PathLike[str]) -> list[str]:
        """argv of `sim flash --ramdisk FILE` for this daemon (a device's
        flash or deploy command)."""
        return sim_command("flash", "--control", self.control, "--ramdisk", os.fspath(ramdisk))

    def stop_command(self) -> list[str]:
        return sim_command("stop", "--control", self.control)

    def run_command(self, **knobs: Any) -> list[str]:
        """argv of `sim run` with this server's knobs, overridden by `knobs`."""
        merged = {name: getattr(self.config, name) for name in SimConfig.knob_names()}
        merged.update(knobs)
        return run_command(**merged)
