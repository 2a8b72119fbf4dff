"""Running device-dictionary commands on the worker from an action."""

from __future__ import annotations

import shlex

from lava_dispatcher import hostcmd
from lava_dispatcher.errors import InfrastructureError, LAVAError
from lava_dispatcher.pipeline import RunContext


def run_device_command(
    ctx: RunContext,
    command: str | list[str],
    *,
    what: str,
    error: type[LAVAError] = InfrastructureError,
) -> hostcmd.CommandResult:
    """Run one command with the current deadline; log its output as ``>> line``.

    A non-zero exit, a missing program or a timeout raise ``error`` naming
    the command, its exit status and its last lines of output.
    """
    argv = hostcmd.split_command(command)
    shown = shlex.join(argv)
    ctx.logger.debug(f"running: {shown}")
    try:
        result = hostcmd.run(
            argv,
            timeout=ctx.remaining(),
            interrupter=ctx.interrupter,
            on_line=lambda line: ctx.logger.debug(f">> {line}"),
        )
    except hostcmd.CommandNotFound as exc:
        raise error(f"{what}: {exc}") from exc
    except hostcmd.CommandTimeout as exc:
        raise ctx.timeout_error(f"'{shown}' was still running") from exc
    if result.returncode != 0:
        tail = result.last_lines
        detail = f": {tail}" if tail else ""
        raise error(f"{what}: '{shown}' failed with exit status {result.returncode}{detail}")
    return result
