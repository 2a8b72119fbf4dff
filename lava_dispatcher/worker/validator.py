"""Job and device validation for the worker, done by the dispatcher itself in a child process.

The worker must refuse a bad job at submission with the same answer that
``lava-dispatch validate JOB --device DEV`` gives, but it never imports the
dispatcher's actions or pipeline (DESIGN.md §2). So one long-lived child,
``python -m lava_dispatcher.worker.validator``, loads them once and answers
requests, one JSON object per line on its stdin and stdout:

* ``{"op": "job", "definition": TEXT, "device": PATH}`` ->
  ``{"ok": true, "warnings": [...]}`` or ``{"ok": false, "error": MESSAGE}``;
* ``{"op": "device", "path": PATH}`` -> ``{"ok": true, "device_type": NAME}``.

A job check builds the whole pipeline for that device (strategy selection
included) through :func:`lava_dispatcher.cli.load_inputs`, as ``run`` would.
Answers are cached by job text and device file (its size and mtime), so a
burst of identical submissions costs one check.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import IO, Any

from lava_dispatcher.worker.errors import ConfigError, InvalidJob, WorkerError
from lava_dispatcher.worker.procs import child_environment, die_with_parent

#: answers kept (job text hash, device file) -> answer
CACHE_SIZE = 512


class ValidatorClient:
    """The daemon's side: one child, one request at a time, restarted if it dies."""

    def __init__(self, dispatcher: Path | None = None) -> None:
        self.dispatcher = dispatcher
        self._process: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._cache: OrderedDict[tuple[str, str, int, int], dict[str, Any]] = OrderedDict()

    async def start(self) -> None:
        argv = [sys.executable, "-m", "lava_dispatcher.worker.validator"]
        if self.dispatcher is not None:
            argv += ["--dispatcher", str(self.dispatcher)]
        self._process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=child_environment(),
            preexec_fn=die_with_parent,
            limit=1 << 24,
        )

    async def close(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        assert process.stdin is not None
        process.stdin.close()
        try:
            async with asyncio.timeout(5):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()

    async def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        async with self._lock:
            for attempt in (1, 2):
                if self._process is None or self._process.returncode is not None:
                    await self.start()
                process = self._process
                assert process is not None and process.stdin and process.stdout
                try:
                    process.stdin.write(json.dumps(request).encode() + b"\n")
                    await process.stdin.drain()
                    line = await process.stdout.readline()
                except (BrokenPipeError, ConnectionResetError):
                    line = b""
                if line:
                    answer: dict[str, Any] = json.loads(line)
                    return answer
                await self.close()
                if attempt == 2:
                    raise WorkerError("the job validator stopped unexpectedly (see the worker's log)")
        raise AssertionError("unreachable")

    async def job(self, definition: str, device: Path) -> list[str]:
        """Warnings for a valid job; InvalidJob saying what is wrong otherwise."""
        stat = device.stat()
        key = (hashlib.sha256(definition.encode()).hexdigest(), str(device), stat.st_mtime_ns, stat.st_size)
        answer = self._cache.get(key)
        if answer is None:
            answer = await self._ask({"op": "job", "definition": definition, "device": str(device)})
            self._cache[key] = answer
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        if not answer["ok"]:
            raise InvalidJob(answer["error"])
        return list(answer.get("warnings") or [])

    async def device(self, path: Path) -> str:
        """The device type of a valid device file; ConfigError naming the file otherwise."""
        answer = await self._ask({"op": "device", "path": str(path)})
        if not answer["ok"]:
            raise ConfigError(answer["error"])
        return str(answer["device_type"])


# -- the child ----------------------------------------------------------------------


def _check_job(definition: str, device: str, dispatcher: Path | None, scratch: Path) -> dict[str, Any]:
    from lava_dispatcher.cli import InvalidInput, load_inputs

    path = scratch / "definition"
    path.write_text(definition, encoding="utf-8")
    try:
        job = load_inputs(path, Path(device), "0", dispatcher)
    except InvalidInput as exc:
        return {"ok": False, "error": str(exc).replace(str(path), "definition")}
    warnings = [w.replace(str(path), "definition") for w in job.warnings]
    return {"ok": True, "warnings": warnings}


def _check_device(path: str) -> dict[str, Any]:
    from lava_dispatcher import plugins
    from lava_dispatcher.builtin_plugins import get_manager
    from lava_dispatcher.devices import load_device
    from lava_dispatcher.errors import LAVAError

    try:
        device = load_device(path, plugins.device_type_dirs(get_manager()))
    except LAVAError as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": True, "device_type": device.device_type}


def serve(stdin: IO[str], stdout: IO[str], dispatcher: Path | None) -> None:
    """Answer requests until stdin closes; a request never ends the loop."""
    with tempfile.TemporaryDirectory(prefix="lava-validate-") as scratch:
        for line in stdin:
            try:
                request = json.loads(line)
                if request.get("op") == "job":
                    answer = _check_job(request["definition"], request["device"], dispatcher, Path(scratch))
                elif request.get("op") == "device":
                    answer = _check_device(request["path"])
                else:
                    answer = {"ok": False, "error": f"unknown request {request.get('op')!r}"}
            except Exception as exc:  # one bad request must not stop the validator
                answer = {"ok": False, "error": f"cannot validate: {type(exc).__name__}: {exc}"}
            stdout.write(json.dumps(answer) + "\n")
            stdout.flush()


def main(argv: list[str]) -> int:
    dispatcher = Path(argv[1]) if len(argv) == 2 and argv[0] == "--dispatcher" else None
    # answers go on the real stdout; anything a plugin prints goes to stderr
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    serve(sys.stdin, out, dispatcher)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
