"""``lava-overlay``: build the ``/lava-<job_id>/`` tree and pack it as a tar.gz.

Added to a deploy block's pipeline when a test block of the same namespace
runs a test shell; ``deploy: to: overlay`` is this action alone (the DUT
then receives the overlay after boot, by ``transfer_overlay``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lava_dispatcher import overlay
from lava_dispatcher.actions.deploy.testdef import TestDefinitionAction, overlay_test_blocks
from lava_dispatcher.actions.overlay_data import (
    OVERLAY_FILE,
    OVERLAY_LOCATION,
    RESULTS_DIR,
    TEST_SHELL,
)
from lava_dispatcher.actions.strategy import Strategy
from lava_dispatcher.errors import JobError
from lava_dispatcher.pipeline import Action, RunContext
from lava_dispatcher.plugins import hookimpl
from lava_dispatcher.protocols.multinode import multinode_protocol

#: which lava-test helper scripts get which device values injected
_DEVICE_INJECTIONS = {
    "lava-target-ip": ("TARGET_DEVICE_IP", ("parameters", "interfaces", "target", "ip")),
    "lava-target-mac": ("TARGET_DEVICE_MAC", ("parameters", "interfaces", "target", "mac")),
}


def _lookup(data: Mapping[str, Any], path: tuple[str, ...]) -> str:
    value: Any = data
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return "" if value is None else str(value)


def dispatcher_ip(dispatcher: Mapping[str, Any], kind: str = "") -> str:
    """The address the DUT reaches the dispatcher at (dispatcher.yaml), loopback by default."""
    return str(
        (dispatcher.get(f"dispatcher_{kind}_ip") if kind else None)
        or dispatcher.get("dispatcher_ip")
        or "127.0.0.1"
    )


def needs_overlay(settings: Any, namespace: str) -> bool:
    return bool(overlay_test_blocks(settings, namespace))


class OverlayAction(Action):
    """Helper scripts, environment and secrets, then the definitions, then the tarball."""

    name = "lava-overlay"
    description = "add lava scripts during deployment for test shell use"
    summary = "overlay the lava support scripts"
    provides = (OVERLAY_LOCATION, RESULTS_DIR, TEST_SHELL, OVERLAY_FILE)

    def populate(self, parameters: Mapping[str, Any]) -> None:
        pipeline = self.new_pipeline(parameters)
        if not needs_overlay(self.settings, str(parameters.get("namespace") or "common")):
            return
        pipeline.add_action(MultinodeOverlayAction())
        pipeline.add_action(TestDefinitionAction())
        pipeline.add_action(CompressOverlay())

    def validate(self) -> None:
        try:
            overlay.results_dir(self._results_template(), self.settings.job_id)
        except ValueError as exc:
            raise JobError(str(exc)) from exc

    def _results_template(self) -> str:
        return str(self.get_constant("lava_test_results_dir", "posix", "/lava-%s"))

    def run(self, ctx: RunContext) -> None:
        if not needs_overlay(self.settings, self.namespace):
            ctx.logger.info(f"[{self.namespace}] skipped {self.name} - no test action.")
            return
        space = ctx.data(self.namespace)
        results = overlay.results_dir(self._results_template(), self.settings.job_id)
        shell = str(self.get_constant("lava_test_sh_cmd", "posix", "/bin/sh"))
        location = ctx.mkdtemp("overlay")
        space.set(OVERLAY_LOCATION, location)
        space.set(RESULTS_DIR, results)
        space.set(TEST_SHELL, shell)
        ctx.logger.debug(f"[{self.namespace}] Preparing overlay tarball in {location}")
        root = overlay.tree_path(location, results)
        for name in ("bin", "tests", "results"):
            (root / name).mkdir(parents=True, exist_ok=True)
        device = self.settings.device
        distro = (self.parameters.get("deployment_data") or {}).get("distro") or self.parameters.get("os")
        for script in overlay.script_files(str(distro) if distro else None, multinode=False):
            injected = []
            if script.name in _DEVICE_INJECTIONS:
                variable, path = _DEVICE_INJECTIONS[script.name]
                injected.append(f"{variable}={overlay.shell_value(_lookup(device, path))}")
            elif script.name == "lava-target-storage":
                storage = "".join(
                    f"\\t{key}\\t{value}\\n"
                    for method in device.get("storage_info") or [{}]
                    for key, value in method.items()
                )
                injected.append(f'LAVA_STORAGE="{storage}"')
            overlay.install_script(script, root / "bin", shell, injected)
        dispatcher = self.settings.dispatcher
        lines = overlay.environment_lines(
            device=device,
            job=self.settings.parameters,
            job_id=self.settings.job_id,
            dispatcher_ip=dispatcher_ip(dispatcher),
            dispatcher_prefix=str(dispatcher.get("prefix") or ""),
        )
        overlay.write_text(root / "environment", "".join(f"{line}\n" for line in lines))
        secrets = self.settings.parameters.get("secrets") or {}
        if secrets:
            overlay.write_text(root / "secrets", "".join(f"{k}={v}\n" for k, v in secrets.items()))
        super().run(ctx)


#: where the MultiNode helpers keep the data of the last reply, on the DUT (LAVA's path)
MULTINODE_CACHE = "/tmp/lava_multi_node_cache.txt"  # nosec - a path on the DUT


def _double_quoted(text: str) -> str:
    """``text`` for the inside of a shell "..." whose value is then read by ``printf %b``."""
    # one backslash for the shell's quotes, one for printf %b
    text = text.replace("\\", "\\" * 4)
    for char in ('"', "$", "`"):
        text = text.replace(char, "\\" + char)
    return text


def multinode_injections(
    name: str, roles: Mapping[str, str], role: str, job_id: str, results: str
) -> list[str]:
    """The lines written after the ``#!`` line of MultiNode helper ``name`` (LAVA's)."""
    if name == "lava-group":
        members = "".join(
            f"{_double_quoted(str(job))}\\t{_double_quoted(str(member))}\\n"
            for job, member in roles.items()
        )
        return ['LAVA_GROUP="', members + '"']
    if name == "lava-role":
        return [f"TARGET_ROLE={overlay.shell_value(role)}"]
    if name == "lava-self":
        return [f"LAVA_HOSTNAME={overlay.shell_value(job_id)}"]
    return [
        f"LAVA_TEST_BIN={overlay.shell_value(results + '/bin')}",
        f"LAVA_MULTI_NODE_CACHE={overlay.shell_value(MULTINODE_CACHE)}",
        # always write out full debug logs, as LAVA
        "LAVA_MULTI_NODE_DEBUG='yes'",
    ]


class MultinodeOverlayAction(Action):
    """The MultiNode helper scripts, with the group's data written into them.

    ``lava-group`` gets the group (job id and role of every job: the job's
    ``roles``, as the server injects them, else the group the coordinator
    formed), ``lava-role`` this job's role, ``lava-self`` its job id, and the
    request helpers where the other scripts and the cache file are.
    """

    name = "lava-multinode-overlay"
    description = "add lava scripts during deployment for multinode test shell use"
    summary = "overlay the lava multinode scripts"
    needs = (OVERLAY_LOCATION, RESULTS_DIR, TEST_SHELL)

    def run(self, ctx: RunContext) -> None:
        multinode = (self.settings.parameters.get("protocols") or {}).get("lava-multinode") or {}
        if "target_group" not in multinode:
            ctx.logger.debug(f"skipped {self.name}")
            return
        protocol = multinode_protocol(ctx)
        roles = {str(k): str(v) for k, v in (multinode.get("roles") or {}).items()}
        if not roles and protocol is not None:
            roles = dict(protocol.roles)
        if not roles:
            raise JobError(
                "MultiNode job without the group's roles: neither protocols.lava-multinode.roles "
                "nor the coordinator gave them"
            )
        space = ctx.data(self.namespace)
        results = space.get(RESULTS_DIR)
        bin_dir = overlay.tree_path(space.get(OVERLAY_LOCATION), results) / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        role = str(multinode.get("role") or "")
        for job, member in roles.items():
            ctx.logger.debug(f"group roles:\t{job}\t{member}")
        for script in sorted((overlay.SCRIPTS_DIR / "multi_node").glob("lava-*")):
            if not script.is_file():
                continue
            injected = multinode_injections(
                script.name, roles, role, self.settings.job_id, results
            )
            overlay.install_script(script, bin_dir, space.get(TEST_SHELL), injected)


class CompressOverlay(Action):
    name = "compress-overlay"
    description = "Create a lava overlay tarball and store alongside the job"
    summary = "Compress the lava overlay files"

    def run(self, ctx: RunContext) -> None:
        space = ctx.data(self.namespace)
        output = ctx.mkdtemp("overlay-tarball") / f"overlay-{self.level}.tar.gz"
        overlay.pack(space.get(OVERLAY_LOCATION), space.get(RESULTS_DIR), output)
        space.set(OVERLAY_FILE, output)
        self.results = {"file": output.name, "size": output.stat().st_size}


class Overlay(Strategy):
    """``deploy: to: overlay``: build the overlay only (delivered later by transfer_overlay)."""

    section = "deploy"
    name = "overlay"

    @classmethod
    def action(cls, parameters: Mapping[str, Any]) -> Action:
        return OverlayAction()


@hookimpl
def lava_strategies() -> list[type[Strategy]]:
    return [Overlay]
