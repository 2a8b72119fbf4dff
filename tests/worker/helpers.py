"""A real worker daemon for tests: its own process, a loopback HTTP port, real job children.

Everything a test starts lives under its tmp_path, which is on every
command line (state directory, devices): cleanup ends exactly those
processes, by PID, even when the test failed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from lava_dispatcher.sim import child_env
from lava_dispatcher.worker import procs

ROOT = Path(__file__).resolve().parents[2]

# A device of the simulated type whose jobs need no console: the fastest job
# there is (one user command on the worker host), for the throughput tests.
FAST_DEVICE = {
    "extends": "sim",
    "commands": {
        "users": {
            "hello": {"do": "echo hello"},
            # logs a line every 20 ms until it is killed or the job times out
            "ticker": {"do": "sh -c 'i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.02; done'"},
            "fail": {"do": "false"},
        }
    },
}


def job_yaml(command: str = "hello", name: str = "fast", timeout: int = 60, **extra: Any) -> str:
    definition = {
        "job_name": name,
        "device_type": "sim",
        "visibility": "public",
        "timeouts": {"job": {"seconds": timeout}},
        "actions": [{"command": {"name": command}}],
        **extra,
    }
    return yaml.safe_dump(definition, sort_keys=False)


def write_devices(directory: Path, count: int, prefix: str = "fast", data: dict[str, Any] | None = None) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    names = [f"{prefix}-{n:02d}" for n in range(1, count + 1)]
    for name in names:
        (directory / f"{name}.yaml").write_text(yaml.safe_dump(data or FAST_DEVICE), encoding="utf-8")
    return names


def compile_bytecode() -> None:
    """As an install has it: with PYTHONDONTWRITEBYTECODE every job would recompile (~60 ms)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "lava_dispatcher")], check=True)


def add_user(state: Path, name: str, admin: bool = False) -> str:
    """``lava-dispatch users add``; the token is the last word of its output."""
    argv = [sys.executable, "-m", "lava_dispatcher", "users", "add", name, "--state-dir", str(state)]
    done = subprocess.run(argv + (["--admin"] if admin else []), capture_output=True, text=True,
                          env=child_env(), check=True, timeout=60)  # fmt: skip
    return done.stdout.split()[-1]


class HTTPError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


class Worker:
    """``lava-dispatch worker`` as a child process, and a small REST client for it."""

    def __init__(self, tmp: Path, *extra: str, state: Path | None = None, devices: Path | None = None) -> None:
        self.tmp = tmp
        self.state = state or tmp / "state"
        self.devices = devices or tmp / "devices"
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.token: str | None = None
        self.user: str | None = None
        self.log_path = tmp / "worker.log"
        self._lines: list[str] = []
        self._reader: threading.Thread | None = None

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "lava_dispatcher", "worker", "--state-dir", str(self.state),
                "--devices", str(self.devices), "--listen", "127.0.0.1:0", *self.extra]  # fmt: skip

    def start(self, timeout: float = 60) -> Worker:
        """Start and wait for the ready line (its URL); AssertionError with the log if it exits."""
        self._lines = []
        self.process = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        stdout=subprocess.DEVNULL, env=child_env(), start_new_session=True)  # fmt: skip
        ready = threading.Event()

        def read() -> None:
            assert self.process is not None and self.process.stderr is not None
            with open(self.log_path, "a", encoding="utf-8") as log:
                for raw in self.process.stderr:
                    line = raw.decode(errors="replace")
                    log.write(line)
                    log.flush()
                    self._lines.append(line)
                    if "ready: listening on " in line:
                        self.url = line.split("ready: listening on ", 1)[1].split()[0]
                        ready.set()
            ready.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        ready.wait(timeout)
        if not self.url or self.process.poll() is not None:
            raise AssertionError(f"worker did not get ready:\n{self.output()}")
        return self

    def output(self) -> str:
        return "".join(self._lines)

    def wait_exit(self, timeout: float = 60) -> int:
        assert self.process is not None
        code = self.process.wait(timeout)
        if self._reader is not None:
            self._reader.join(10)
        return code

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM (the graceful stop) and wait."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        """SIGKILL the daemon alone (its jobs keep running, as after a crash)."""
        assert self.process is not None
        self.process.kill()
        self.wait_exit(10)
        self.url = ""

    def cleanup(self) -> None:
        """End the daemon and every process of this test's tree, by PID."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        kill_processes_naming(str(self.tmp))

    # -- REST ------------------------------------------------------------------

    def login(self, name: str = "admin", admin: bool = True) -> str:
        self.user, self.token = name, add_user(self.state, name, admin)
        return self.token

    def request(self, method: str, path: str, body: Any = None, auth: str | bool | None = True) -> Any:
        headers = {"Content-Type": "application/json"}
        if auth is True and self.token:
            headers["Authorization"] = f"Token {self.token}"
        elif isinstance(auth, str):
            headers["Authorization"] = auth
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                text = response.read().decode()
                kind = response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            raise HTTPError(exc.code, exc.read().decode()) from None
        return json.loads(text) if "json" in kind else text

    def basic(self, user: str, token: str) -> str:
        return "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()

    def submit(self, definition: str, auth: str | bool | None = True) -> list[Any]:
        return list(self.request("POST", "/api/v0.2/jobs/", {"definition": definition}, auth)["job_ids"])

    def job(self, job_id: Any) -> dict[str, Any]:
        return dict(self.request("GET", f"/api/v0.2/jobs/{job_id}/"))

    def all_jobs(self) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = []
        path: str | None = "/api/v0.2/jobs/?limit=100"
        while path:
            page = self.request("GET", path)
            jobs += page["results"]
            path = page["next"][len(self.url):] if page["next"] else None
        return jobs

    def log_lines(self, job_id: Any, start: int = 0, end: int | None = None) -> list[str]:
        query = f"?start={start}" + ("" if end is None else f"&end={end}")
        try:
            text = self.request("GET", f"/api/v0.2/jobs/{job_id}/logs/{query}")
        except HTTPError as exc:
            if exc.status == 404:
                return []
            raise
        return str(text).splitlines()

    def device_list(self) -> dict[str, dict[str, Any]]:
        return {d["hostname"]: d for d in self.request("GET", "/api/v0.2/devices/?limit=100")["results"]}

    def wait_for(self, predicate: Any, timeout: float, what: str) -> Any:
        """Poll the API (tests only; the daemon never polls) until ``predicate()`` is truthy."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n{self.output()[-4000:]}")
            time.sleep(0.1)

    def wait_finished(self, ids: list[Any], timeout: float = 120) -> dict[str, dict[str, Any]]:
        wanted = {str(i) for i in ids}

        def done() -> dict[str, dict[str, Any]] | None:
            jobs = {str(j["sub_id"] or j["id"]): j for j in self.all_jobs()}
            if all(jobs.get(i, {}).get("state") == "Finished" for i in wanted):
                return {i: jobs[i] for i in wanted}
            return None

        result: dict[str, dict[str, Any]] = self.wait_for(done, timeout, f"jobs {sorted(wanted)} to finish")
        return result


def kill_processes_naming(text: str) -> None:
    """SIGKILL every live process whose command line contains ``text`` (a test's tmp path),
    and the whole session of each that leads one (a job's commands)."""
    needle = text.encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        try:
            if needle not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
        except OSError:
            continue
        for member in {pid, *procs.session_members(pid)}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(member, signal.SIGKILL)
