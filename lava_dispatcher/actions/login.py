"""After power-on: wait for the kernel, log in, reach a shell prompt."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lava_dispatcher.actions.connection import CONNECTION, current_connection, expect
from lava_dispatcher.console.expect import ExpectTimeout
from lava_dispatcher.console.shell import LoginFailed
from lava_dispatcher.errors import InfrastructureError, JobError
from lava_dispatcher.pipeline import Action, RetryAction, RunContext


def prompts_of(parameters: Mapping[str, Any]) -> list[str]:
    prompts = parameters.get("prompts") or []
    return [prompts] if isinstance(prompts, str) else [str(p) for p in prompts]


def kernel_results(connection: Any) -> dict[str, Any]:
    """LAVA's login-action results: the kernel messages seen, or success."""
    if connection.kernel_messages:
        return {
            "extra": [
                {"kind": m.kind, "message": m.text} for m in connection.kernel_messages
            ]
        }
    return {"success": "No kernel warnings or errors detected."}


class LoginAction(Action):
    """Wait for a login or shell prompt, log in with ``auto_login``, run login_commands."""

    name = "login-action"
    description = "Real login action."
    summary = "Login after boot."
    needs = (CONNECTION,)

    def run(self, ctx: RunContext) -> None:
        connection = current_connection(ctx, self)
        shell = connection.shell
        prompts = prompts_of(self.parameters)
        shell.prompts = prompts
        connection.watcher.enabled = not self.parameters.get("ignore_kernel_messages", False)
        params = self.parameters.get("auto_login")
        failure = self.parameters.get("failure_message")
        if failure:
            ctx.logger.info(f"Checking for user specified failure message: {failure}")
        if not params:
            ctx.logger.debug("No login prompt set.")
            match = expect(ctx, self, connection, [*prompts, *([failure] if failure else [])])
            if failure and match.index == len(prompts):
                raise JobError(f"matched the failure message: {failure}")
        else:
            ctx.logger.info("Waiting for the login prompt")
            try:
                shell.login(
                    login_prompt=params["login_prompt"],
                    username=params["username"],
                    password_prompt=params.get("password_prompt"),
                    password=params.get("password"),
                    login_commands=list(params.get("login_commands") or []),
                    timeout=ctx.remaining(),
                )
            except LoginFailed as exc:
                raise JobError(str(exc)) from exc
            except ExpectTimeout as exc:
                tail = exc.tail.strip().splitlines()
                last = tail[-1][-200:] if tail else ""
                raise ctx.timeout_error(
                    f"waiting to log in; the console showed last: {last!r}"
                ) from exc
        self.results = kernel_results(connection)


class AutoLoginAction(RetryAction):
    """Wait for the kernel to start, then log in (retried as one unit)."""

    name = "auto-login-action"
    description = "automatically login after boot using job parameters and checking for messages."
    summary = "Auto-login after boot with support for kernel messages."
    needs = (CONNECTION,)

    def __init__(self, booting: bool = True, after_bootloader: bool = False) -> None:
        super().__init__()
        self.booting = booting
        # once a bootloader has handed over to the kernel, its banner again
        # means the board reset: fail at once, quoting it, not at the timeout
        self.after_bootloader = after_bootloader

    def validate(self) -> None:
        params = self.parameters.get("auto_login")
        if params:
            if not params.get("login_prompt"):
                self.errors.append("'login_prompt' is mandatory for auto_login")
            if "username" not in params:
                self.errors.append("'username' is mandatory for auto_login")
            if "password_prompt" in params and "password" not in params:
                self.errors.append(
                    "'password' is mandatory if 'password_prompt' is used in auto_login"
                )
        prompts = prompts_of(self.parameters)
        if not prompts:
            self.errors.append("'prompts' is mandatory for auto-login-action")
        elif not all(prompts):
            self.errors.append("Items of 'prompts' can't be empty")

    def populate(self, parameters: Any) -> None:
        self.new_pipeline(parameters).add_action(LoginAction())

    def run(self, ctx: RunContext) -> None:
        if self.booting:
            connection = current_connection(ctx, self)
            connection.watcher.reset_detection = self.after_bootloader
            start = (self.parameters.get("parameters") or {}).get(
                "kernel-start-message"
            ) or self.get_constant("kernel-start-message")
            method = str(self.parameters.get("method") or "")
            errors = list(self.get_constant("error-messages", prefix=method) or [])
            if start:
                match = expect(ctx, self, connection, [start, *errors])
                if match.index != 0:
                    raise InfrastructureError(
                        f"matched a bootloader error message: '{errors[match.index - 1]}'"
                    )
        super().run(ctx)
        connection = current_connection(ctx, self)
        connection.watcher.reset_detection = True


class ExpectShellSession(Action):
    """Make sure the shell answers: send a newline and wait for the prompt."""

    name = "expect-shell-connection"
    description = "Wait for a shell"
    summary = "Expect a shell prompt"
    needs = (CONNECTION,)

    def run(self, ctx: RunContext) -> None:
        connection = current_connection(ctx, self)
        prompts = prompts_of(self.parameters) or connection.shell.prompts
        connection.shell.prompts = list(prompts)
        try:
            connection.shell.force_prompt(timeout=min(ctx.remaining(), self.connection_timeout))
        except ExpectTimeout as exc:
            raise ctx.timeout_error("waiting for a shell prompt") from exc
