"""``boot: method: ssh``: log in to a machine over ssh and unpack the overlay there.

LAVA's ``login-ssh``, for a device reached over ssh as its primary
connection (LAVA's ``ssh`` device type): nothing is booted; the machine is
up and its address, port, user, key and extra ssh options are in the
device's ``actions.deploy.methods.ssh``. In LAVA's order:

- ``scp-deploy`` creates ``lava_test_results_dir`` on the machine and copies
  the overlay tarball (built by ``deploy: to: ssh``) into it with ``scp``;
- ``prepare-ssh`` settles which machine the console reaches;
- ``ssh-connection`` opens the console: an ``ssh -t`` process on a pty, its
  shell prompt awaited;
- ``auto-login-action`` (there is no login to type: ssh did it),
  ``expect-shell-connection``;
- ``scp-overlay-unpack`` unpacks the tarball through that shell.

ssh and scp always get ``-o UserKnownHostsFile=/dev/null -o
StrictHostKeyChecking=no`` (machines are reinstalled, their host keys
change) and ``-o BatchMode=yes`` (nobody is there to type a password or a
passphrase: fail at once instead of waiting for the timeout), after the
device's own options, which win since ssh keeps the first value of an
option. Every value goes to ssh as an argument, never through a shell on the
worker; what runs on the machine is quoted. At the end of the job the
session is left with ssh's escape ``~.``, and its process ended for sure.

MultiNode secondary connections (``parameters: {hostID: ...}``, the host
address coming from another job) are not supported.
"""

from __future__ import annotations

import re
import shlex
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lava_dispatcher
from lava_dispatcher import hostcmd
from lava_dispatcher.actions.connection import (
    CONNECTION,
    current_connection,
    expect,
    open_connection,
)
from lava_dispatcher.actions.login import (
    AutoLoginAction,
    ExpectShellSession,
    LoginAction,
    prompts_of,
)
from lava_dispatcher.actions.overlay_data import OVERLAY_FILE, RESULTS_DIR
from lava_dispatcher.actions.strategy import Strategy
from lava_dispatcher.console.expect import EOF, ExpectTimeout
from lava_dispatcher.console.shell import CommandFailed
from lava_dispatcher.data import Key
from lava_dispatcher.errors import ConfigurationError, InfrastructureError, JobError
from lava_dispatcher.pipeline import Action, RetryAction, RunContext
from lava_dispatcher.plugins import hookimpl

#: ssh options every connection gets, after the device's (which win)
FIXED_OPTIONS = (
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "StrictHostKeyChecking=no",
    "-o", "BatchMode=yes",
)  # fmt: skip
#: ssh's exit status when ssh itself failed (not the remote command)
SSH_FAILED = 255
#: a results directory typed to the remote shell and given to scp unquoted
SAFE_PATH = re.compile(r"^/[A-Za-z0-9._+@,=/-]+\Z")
#: a host or user name: no option lookalike, nothing a shell or scp would parse
_NAME = re.compile(r"^[A-Za-z0-9._:%\[\]-]+\Z")

#: where LAVA resolves a relative ``identity_file`` (its ``dynamic_vm_keys/lava``)
PACKAGE_DIR = Path(lava_dispatcher.__file__).resolve().parent


@dataclass(frozen=True)
class SshTarget:
    """The machine an ssh device is reached at, from ``actions.deploy.methods.ssh``."""

    host: str
    port: int
    user: str
    identity_file: str
    options: tuple[str, ...]

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}"

    def describe(self) -> str:
        return f"{self.destination} port {self.port}"

    def _options(self, identity: str) -> list[str]:
        options = [*self.options, *FIXED_OPTIONS]
        if identity:
            options += ["-i", identity]
        return options

    def ssh_argv(self, identity: str, remote_command: str = "", tty: bool = False) -> list[str]:
        """``ssh`` to the machine; ``remote_command`` is run by the remote shell as given."""
        argv = ["ssh", *self._options(identity), "-p", str(self.port)]
        if tty:
            argv.append("-t")
        argv += ["--", self.destination]
        if remote_command:
            argv.append(remote_command)
        return argv

    def scp_argv(self, identity: str, source: Path, destination: str) -> list[str]:
        """``scp`` of a local file to ``destination`` (an absolute path) on the machine."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return [
            "scp", *self._options(identity), "-P", str(self.port),
            "--", str(source), f"{self.user}@{host}:{destination}",
        ]  # fmt: skip


def ssh_parameters(device: Mapping[str, Any]) -> Mapping[str, Any]:
    methods = ((device.get("actions") or {}).get("deploy") or {}).get("methods") or {}
    if not isinstance(methods, Mapping) or "ssh" not in methods:
        raise ConfigurationError(
            "the device has no actions.deploy.methods.ssh: expected the host, port, user, "
            "identity_file and options of the machine"
        )
    params = methods["ssh"] or {}
    if not isinstance(params, Mapping):
        raise ConfigurationError(
            f"actions.deploy.methods.ssh: got {params!r}; expected a mapping with host, port..."
        )
    return params


def ssh_target(device: Mapping[str, Any]) -> SshTarget:
    """The device's ssh settings, checked: a device mistake is a ConfigurationError."""
    params = ssh_parameters(device)
    where = "actions.deploy.methods.ssh"
    host = params.get("host")
    if not isinstance(host, str) or not host.strip():
        raise ConfigurationError(
            f"{where}.host: got {host!r}; expected the address of the machine "
            "(MultiNode secondary connections, whose host comes from another job, "
            "are not supported)"
        )
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):  # an IPv6 address as scp writes it
        host = host[1:-1]
    user = params.get("user") or "root"
    port = params.get("port", 22)
    for key, value in (("host", host), ("user", user)):
        if not isinstance(value, str) or not _NAME.match(value) or value.startswith("-"):
            raise ConfigurationError(
                f"{where}.{key}: got {value!r}; expected a plain name or address"
            )
    try:
        number = int(str(port))
        if isinstance(port, bool) or not 0 < number < 65536:
            raise ValueError
    except ValueError:
        raise ConfigurationError(
            f"{where}.port: got {port!r}; expected a TCP port number"
        ) from None
    options = params.get("options") or []
    if (
        isinstance(options, str)
        or not isinstance(options, Sequence)
        or not all(isinstance(option, str) for option in options)
    ):
        raise ConfigurationError(
            f"{where}.options: got {options!r}; expected a list of strings such as "
            "['-o', 'Compression=yes']"
        )
    identity = params.get("identity_file") or ""
    if not isinstance(identity, str):
        raise ConfigurationError(f"{where}.identity_file: got {identity!r}; expected a path")
    return SshTarget(host, number, user, identity, tuple(options))


def identity_path(target: SshTarget) -> str:
    """The private key to give ssh ("" for ssh's own), a relative path taken
    from the dispatcher's package directory as LAVA does. Checked when the job
    runs, not at validation: the key is the worker's business."""
    if not target.identity_file:
        return ""
    path = Path(target.identity_file).expanduser()
    if not path.is_absolute():
        path = PACKAGE_DIR / path
    if not path.is_file():
        raise ConfigurationError(
            f"actions.deploy.methods.ssh.identity_file: no private key at {path}; "
            "expected the path of the key that logs in to the machine"
        )
    return str(path)


def safe_results_dir(results: str) -> str:
    """``lava_test_results_dir`` as typed on the machine: an absolute path with no
    character a shell or scp would interpret (the job's context can set it)."""
    if not SAFE_PATH.match(results) or "/../" in f"{results}/":
        raise JobError(
            f"lava_test_results_dir {results!r}: expected an absolute path of letters, "
            "digits and ._+@,=/- only"
        )
    return results


def last_words(output: str) -> str:
    """The last lines a command printed, on one line."""
    lines = [line.strip() for line in output.replace("\r", "\n").split("\n") if line.strip()]
    return "; ".join(lines[-3:])[-400:]


def ssh_failure(target: SshTarget, output: str, status: int | None, wait: float) -> str:
    """Why ssh failed, in ssh's words; when it said nothing (``LogLevel=FATAL``
    in the device's options), whether its port answers at all."""
    said = last_words(output)
    code = "" if status is None else f" (exit status {status})"
    if not said:
        said = f"ssh printed nothing; {probe(target.host, target.port, min(5.0, wait))}"
    return f"ssh to {target.describe()} failed{code}: {said}"


def probe(host: str, port: int, timeout: float = 5.0) -> str:
    """Whether a TCP connection to ``host:port`` opens, as a sentence."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return f"{host} port {port} accepts connections"
    except OSError as exc:
        return f"cannot connect to {host} port {port}: {exc.strerror or exc}"


def run_host_command(ctx: RunContext, argv: list[str], what: str) -> hostcmd.CommandResult:
    """Run an ssh/scp command on the worker within the action's deadline."""
    ctx.logger.debug(f"{what}: {shlex.join(argv)}")
    try:
        return hostcmd.run(
            argv,
            timeout=ctx.remaining(),
            interrupter=ctx.interrupter,
            on_line=lambda line: ctx.logger.debug(f"{argv[0]}: {line}"),
        )
    except hostcmd.CommandNotFound as exc:
        raise InfrastructureError(f"{what}: {exc}") from exc
    except hostcmd.CommandTimeout as exc:
        raise ctx.timeout_error(f"{what}: {exc}") from exc


#: the machine the console reaches (set by prepare-ssh)
SSH_TARGET: Key[SshTarget] = Key("ssh-target", SshTarget, "the machine of an ssh connection")
#: where scp-deploy put the overlay tarball on the machine ("" when there was none)
REMOTE_OVERLAY: Key[str] = Key("remote-overlay", str, "the overlay tarball on the ssh machine")


class SshAction(RetryAction):
    name = "login-ssh"
    description = "connect over ssh and ensure a shell is found"
    summary = "login over ssh"
    section = "boot"

    def populate(self, parameters: Mapping[str, Any]) -> None:
        pipeline = self.new_pipeline(parameters)
        pipeline.add_action(ScpDeploy())
        pipeline.add_action(PrepareSsh())
        pipeline.add_action(ConnectSsh())
        pipeline.add_action(SshAutoLogin())
        pipeline.add_action(ExpectShellSession())
        pipeline.add_action(ScpOverlayUnpack())


class ScpDeploy(Action):
    """Copy the overlay into ``lava_test_results_dir`` on the machine, before
    the console opens: ``ssh <machine> mkdir -p <dir>`` (LAVA types it in the
    console, which we open only once the file is there), then ``scp``. A wrong
    key or a dead machine thus fails here, in ssh's words, before anything is
    left on the machine."""

    name = "scp-deploy"
    description = "copy a file to a known device using scp"
    summary = "scp over the ssh connection"
    timeout_exception = InfrastructureError
    provides = (REMOTE_OVERLAY,)

    def run(self, ctx: RunContext) -> None:
        space = ctx.data(self.namespace)
        tarball = space.get(OVERLAY_FILE, default=None)
        results = space.get(RESULTS_DIR, default=None)
        if tarball is None or results is None:
            ctx.logger.info("no overlay to copy: the job runs no test shell on this machine")
            space.set(REMOTE_OVERLAY, "")
            return
        results = safe_results_dir(results)
        target = ssh_target(self.settings.device)
        identity = identity_path(target)
        mkdir = target.ssh_argv(identity, f"mkdir -p -- {shlex.quote(results)}")
        done = run_host_command(ctx, mkdir, f"creating {results} on {target.describe()}")
        if done.returncode == SSH_FAILED:
            raise InfrastructureError(
                ssh_failure(target, done.output, done.returncode, ctx.remaining())
            )
        if done.returncode != 0:
            raise InfrastructureError(
                f"cannot create {results} on {target.describe()} "
                f"(exit status {done.returncode}): {last_words(done.output)}"
            )
        destination = f"{results}/{tarball.name}"
        ctx.logger.info(f"copying {tarball.name} to {target.destination}:{destination}")
        copy = run_host_command(ctx, target.scp_argv(identity, tarball, destination), "scp")
        if copy.returncode != 0:
            raise InfrastructureError(
                f"scp of {tarball.name} to {target.describe()} failed "
                f"(exit status {copy.returncode}): "
                f"{last_words(copy.output) or 'scp printed nothing'}"
            )
        space.set(REMOTE_OVERLAY, destination)
        self.results = {"success": "ssh deployment", "file": destination}


class PrepareSsh(Action):
    """Which machine the console reaches: the device's (the primary connection)."""

    name = "prepare-ssh"
    description = "determine which address to use for primary or secondary connections"
    summary = "set the host address of the ssh connection"
    provides = (SSH_TARGET,)

    def validate(self) -> None:
        extra = self.parameters.get("parameters") or {}
        if "hostID" in extra:
            self.errors.append(
                "MultiNode secondary ssh connections (parameters: hostID) are not supported; "
                "the machine must be the device's actions.deploy.methods.ssh.host"
            )
        ssh_target(self.settings.device)

    def run(self, ctx: RunContext) -> None:
        target = ssh_target(self.settings.device)
        ctx.data(self.namespace).set(SSH_TARGET, target)
        ctx.logger.debug(f"ssh connection to {target.describe()} (primary connection)")


class ConnectSsh(Action):
    """The console: ``ssh -t`` on a pty, up once the shell prompt shows.

    If ssh ends first (refused, wrong key, unknown host) its words are the
    error and its process is gone; the console is reused when it is still
    open (a retried login-ssh)."""

    name = "ssh-connection"
    description = "login to a known device using ssh"
    summary = "make an ssh connection to a device"
    timeout_exception = InfrastructureError
    needs = (SSH_TARGET,)
    provides = (CONNECTION,)

    def validate(self) -> None:
        if not prompts_of(self.parameters):
            self.errors.append(
                "'prompts' is mandatory for an ssh boot: the shell prompt to wait for"
            )

    def run(self, ctx: RunContext) -> None:
        space = ctx.data(self.namespace)
        existing = space.get(CONNECTION, default=None)
        if existing is not None and not existing.closed:
            ctx.logger.debug(f"[{self.namespace}] reusing the ssh session {existing.name}")
            return
        target = space.get(SSH_TARGET)
        argv = target.ssh_argv(identity_path(target), tty=True)
        prompts = prompts_of(self.parameters)
        ctx.logger.info(f"connecting to {target.describe()}: {shlex.join(argv)}")
        # no kernel messages: the session shows a remote shell (a test printing
        # dmesg must not end the job); no echo check: ssh gives the remote pty
        # the modes of ours, which has echo off, and TCP loses no character
        connection = open_connection(
            ctx, self.namespace, f"ssh {target.destination}", {"connect": argv}, ["ssh"],
            prompts=prompts, kernel_messages=False, echo=False,
        )  # fmt: skip
        transport = connection.console.transport
        ctx.logger.debug(f"{self.name}: {transport.describe()}")
        try:
            match = expect(ctx, self, connection, [*prompts, EOF])
        except BaseException:
            connection.console.close()
            space.pop(CONNECTION)
            raise
        if match.pattern is EOF:
            connection.console.close()  # reaps ssh: its exit status
            space.pop(CONNECTION)
            status = getattr(transport, "exit_status", None)
            raise InfrastructureError(ssh_failure(target, match.before, status, ctx.remaining()))
        ctx.logger.info(f"[{self.namespace}] connected to {transport.describe()}")
        self.results = {"host": target.host, "port": target.port, "user": target.user}


class SshLogin(LoginAction):
    """ssh has logged in already: set the prompts and record the login."""

    def run(self, ctx: RunContext) -> None:
        connection = current_connection(ctx, self)
        connection.shell.prompts = prompts_of(self.parameters)
        self.results = {"success": "logged in by ssh"}


class SshAutoLogin(AutoLoginAction):
    """LAVA's auto-login-action of an ssh boot: no kernel to wait for, no login to type."""

    def __init__(self) -> None:
        super().__init__(booting=False)

    def populate(self, parameters: Any) -> None:
        self.new_pipeline(parameters).add_action(SshLogin())


class ScpOverlayUnpack(Action):
    """Unpack the copied overlay at / of the machine (the tarball holds the
    results directory's path), through the ssh console."""

    name = "scp-overlay-unpack"
    description = "unpack the overlay over an existing ssh connection"
    summary = "unpack the overlay on the remote device"
    needs = (CONNECTION, REMOTE_OVERLAY)

    def run(self, ctx: RunContext) -> None:
        remote = ctx.data(self.namespace).get(REMOTE_OVERLAY, default="")
        if not remote:
            ctx.logger.debug("no overlay to unpack")
            return
        command = shlex.join(["tar", "-C", "/", "-xzf", remote])
        connection = current_connection(ctx, self)
        try:
            connection.shell.run(command, timeout=ctx.remaining(), check=True)
        except CommandFailed as exc:
            raise JobError(f"cannot unpack the overlay on the machine: {exc}") from exc
        except ExpectTimeout as exc:
            raise ctx.timeout_error(f"unpacking {remote}") from exc
        self.results = {"file": remote}


class Ssh(Strategy):
    section = "boot"
    name = "ssh"

    @classmethod
    def action(cls, parameters: Mapping[str, Any]) -> Action:
        return SshAction()


@hookimpl
def lava_strategies() -> list[type[Strategy]]:
    return [Ssh]
