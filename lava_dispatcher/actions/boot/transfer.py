"""``transfer_overlay``: deliver the overlay to a booted DUT, then unpack it there.

- ``transfer_method: http`` (the default, as LAVA): the dispatcher serves the
  tarball itself from a small HTTP server of its own on its address (no
  Apache needed); the DUT runs ``<download_command> <url>`` then
  ``<unpack_command> <file>``.
- ``transfer_method: console`` (our addition, for DUTs with no network): the
  file is typed through the shell in base64 chunks, each verified by
  checksum, then unpacked the same way.
"""

from __future__ import annotations

import shlex
from typing import Any

from lava_dispatcher.actions.connection import CONNECTION, current_connection
from lava_dispatcher.actions.deploy.overlay import dispatcher_ip
from lava_dispatcher.actions.overlay_data import OVERLAY_FILE
from lava_dispatcher.console.expect import ExpectTimeout
from lava_dispatcher.console.shell import CommandFailed
from lava_dispatcher.errors import InfrastructureError, JobError
from lava_dispatcher.pipeline import Action, RunContext

METHODS = ("http", "console")


def file_server(ctx: RunContext) -> Any:
    """The job's HTTP file server, started on first use, stopped at finalize."""
    from lava_dispatcher.fileserver import FileServer

    dispatcher = ctx.job.dispatcher
    host = dispatcher_ip(dispatcher, "http")

    def start() -> Any:
        server = FileServer(host=host, on_request=lambda line: ctx.logger.debug(f"http: {line}"))
        server.start()
        return server

    return ctx.shared("file-server", start, lambda server: server.stop())


class OverlayUnpack(Action):
    name = "overlay-unpack"
    description = "transfer and unpack overlay to persistent rootfs after login"
    summary = "transfer and unpack overlay"
    timeout_exception = InfrastructureError
    needs = (CONNECTION, OVERLAY_FILE)

    @property
    def transfer(self) -> dict[str, Any]:
        return dict(self.parameters.get("transfer_overlay") or {})

    def validate(self) -> None:
        transfer = self.transfer
        method = transfer.get("transfer_method", "http")
        if method not in METHODS:
            self.errors.append(
                f"transfer_overlay.transfer_method: {method!r} is not supported; expected one of {', '.join(METHODS)}"
            )
        if method == "http" and not transfer.get("download_command"):
            self.errors.append("transfer_overlay needs a download_command for http")
        if not transfer.get("unpack_command"):
            self.errors.append("transfer_overlay needs an unpack_command")

    def run(self, ctx: RunContext) -> None:
        connection = current_connection(ctx, self)
        shell = connection.shell
        tarball = ctx.data(self.namespace).get(OVERLAY_FILE)
        name = tarball.name
        transfer = self.transfer
        method = transfer.get("transfer_method", "http")
        try:
            shell.run(f"rm -f {shlex.quote(name)}", timeout=ctx.remaining(), check=False)
            if method == "http":
                url = file_server(ctx).publish(tarball)
                ctx.logger.info(f"serving {name} at {url}")
                shell.run(f"{transfer['download_command']} {url}", timeout=ctx.remaining(), check=True)
            else:
                from lava_dispatcher.console.transfer import TransferError, send_file

                ctx.logger.info(f"sending {name} ({tarball.stat().st_size} bytes) through the console")
                try:
                    result = send_file(shell, tarball, name, timeout=ctx.remaining())
                except TransferError as exc:
                    raise InfrastructureError(f"cannot send the overlay through the console: {exc}") from exc
                self.results = {"bytes": result.bytes, "seconds": round(result.seconds, 3)}
            shell.run(f"{transfer['unpack_command']} {shlex.quote(name)}", timeout=ctx.remaining(), check=True)
        except CommandFailed as exc:
            raise JobError(f"overlay transfer failed on the DUT: {exc}") from exc
        except ExpectTimeout as exc:
            raise ctx.timeout_error(f"transferring {name}") from exc
        self.results = {**self.results, "method": method, "file": name}
