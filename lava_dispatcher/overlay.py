"""Building the test overlay: the ``/lava-<job_id>/`` tree the DUT runs tests from.

Pure functions over a directory on the worker; the deploy actions
(``lava-overlay``, ``test-definition``...) call them in LAVA's order. The
layout, file names and script contents follow LAVA so that test definitions
and habits carry over::

    <results_dir>/bin/            helper scripts, first line '#!<lava_test_sh_cmd>'
    <results_dir>/environment     export lines sourced before the runner starts
    <results_dir>/secrets         KEY=value lines
    <results_dir>/<stage>/lava-test-runner.conf
    <results_dir>/<stage>/tests/<i>_<name>/{run.sh,install.sh,testdef.yaml,uuid,testdef_metadata}
"""

from __future__ import annotations

import os
import re
import shlex
import stat
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

SCRIPTS_DIR = Path(__file__).resolve().parent / "test_shell"
EXECUTABLE = stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
#: the shell variables a parameter may set: a name the shell accepts
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
#: `$1` in a --shell/--cmd step means the step's own argument, not run.sh's
_POSITIONAL = re.compile(r"\$(\d+)\b")


def results_dir(template: str, job_id: str) -> str:
    """``lava_test_results_dir`` (``/lava-%s``) for this job."""
    try:
        return template % job_id
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"lava_test_results_dir {template!r} must contain one '%s' for the job id"
        ) from exc


def tree_path(location: Path, results: str) -> Path:
    """Where ``results`` (an absolute DUT path) lives under ``location`` on the worker."""
    return location / results.lstrip("/")


def script_files(distro: str | None, multinode: bool) -> list[Path]:
    """The helper scripts to install, distro overrides after the generic ones."""
    files = sorted(p for p in SCRIPTS_DIR.glob("lava-*") if p.is_file())
    if distro:
        files += sorted(p for p in (SCRIPTS_DIR / "distro" / distro).glob("lava-*") if p.is_file())
    if multinode:
        files += sorted(p for p in (SCRIPTS_DIR / "multi_node").glob("lava-*") if p.is_file())
    return files


def install_script(source: Path, bin_dir: Path, sh_cmd: str, injected: Sequence[str] = ()) -> Path:
    """Copy one helper script: its ``#!`` line becomes ``#!<sh_cmd>``, then the injected lines."""
    text = source.read_text(encoding="utf-8")
    if text.startswith("#!"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
    target = bin_dir / source.name
    header = f"#!{sh_cmd}\n\n" + "".join(f"{line}\n" for line in injected)
    target.write_text(header + text, encoding="utf-8")
    target.chmod(EXECUTABLE)
    return target


def shell_value(value: Any) -> str:
    """A value for ``NAME=<value>`` in a DUT script, quoted for the shell.

    LAVA writes ``NAME='value'``; so do we, except that a value containing a
    quote is quoted properly instead of breaking the script.
    """
    if value is None:
        value = ""
    if isinstance(value, bool):
        value = "1" if value else "0"
    text = str(value)
    if "'" not in text:
        return f"'{text}'"
    return shlex.quote(text)


def export_lines(data: Any, prefix: str = "") -> list[str]:
    """``export K=V`` lines for nested device/job data, LAVA's way (K_sub_0...)."""
    lines: list[str] = []
    if isinstance(data, Mapping):
        for key, value in data.items():
            lines += export_lines(value, f"{prefix}_{key}" if prefix else str(key))
    elif isinstance(data, (list, tuple)):
        for index, value in enumerate(data):
            lines += export_lines(value, f"{prefix}_{index}" if prefix else str(index))
    else:
        if isinstance(data, bool):
            value = "1" if data else "0"
        elif isinstance(data, int):
            value = str(data)
        else:
            value = shlex.quote(str(data))
        name = re.sub(r"[^A-Za-z0-9_]", "_", prefix) or "_"
        lines.append(f"export {name}={value}")
    return lines


def environment_lines(
    *,
    device: Mapping[str, Any],
    job: Mapping[str, Any],
    job_id: str,
    dispatcher_ip: str,
    dispatcher_prefix: str = "",
) -> list[str]:
    """The ``environment`` file: device data, the job's environment, LAVA metadata."""
    lines: list[str] = []
    for source, prefix in (
        ("environment", ""),
        ("device_info", "LAVA_DEVICE_INFO"),
        ("static_info", "LAVA_STATIC_INFO"),
        ("storage_info", "LAVA_STORAGE_INFO"),
    ):
        data = device.get(source)
        if data:
            lines += export_lines(data, prefix)
    multinode = (job.get("protocols") or {}).get("lava-multinode") or {}
    job_env = multinode.get("environment") if "environment" in multinode else job.get("environment")
    if job_env:
        lines += export_lines(job_env)
    lines += export_lines(job_id, "LAVA_JOB_ID")
    lines += export_lines(dispatcher_ip, "LAVA_DISPATCHER_IP")
    lines += export_lines(",".join(str(t) for t in job.get("tags") or []), "LAVA_JOB_TAGS")
    lines += export_lines(dispatcher_prefix, "LAVA_DISPATCHER_PREFIX")
    if device.get("hostname"):
        lines += export_lines(device["hostname"], "LAVA_DEVICE_HOSTNAME")
    if device.get("devicetype"):
        lines += export_lines(device["devicetype"], "LAVA_DEVICE_TYPE")
    return lines


def parameter_lines(testdef: Mapping[str, Any], block: Mapping[str, Any]) -> list[str]:
    """The parameter header of run.sh and install.sh: the definition's, then the job's."""

    def assignments(params: Any, where: str) -> list[str]:
        if params is None:
            return []
        if not isinstance(params, Mapping):
            raise ValueError(f"{where} must be a mapping of parameter names to values")
        out = []
        for name, value in params.items():
            if not _IDENTIFIER.match(str(name)):
                raise ValueError(f"{where}: {name!r} is not a valid shell variable name")
            out.append(f"{name}={shell_value(value)}")
        return out

    lines = ["###default parameters from test definition###"]
    lines += assignments(testdef.get("params"), "test definition 'params'")
    lines += assignments(testdef.get("parameters"), "test definition 'parameters'")
    lines += ["######", "###test parameters from job submission###"]
    lines += assignments(block.get("parameters"), "job 'parameters'")
    lines += assignments(block.get("params"), "job 'params'")
    lines.append("######")
    return lines


INSTALL_SKIP_CHOICES = ("keys", "sources", "deps", "steps", "git-repos", "all")


def skipped_install_parts(block: Mapping[str, Any]) -> set[str]:
    skip = set(block.get("skip_install") or [])
    if "all" in skip:
        return set(INSTALL_SKIP_CHOICES) - {"all"}
    return skip


def render_install_sh(
    testdef: Mapping[str, Any],
    block: Mapping[str, Any],
    test_dir: str,
    distro: str | None = None,
) -> str | None:
    """install.sh for a definition, or None when it has nothing to install."""
    install = testdef.get("install")
    if not install:
        return None
    skip = skipped_install_parts(block)
    lines = parameter_lines(testdef, block)
    if "keys" not in skip:
        lines += [f"lava-add-keys {key}" for key in install.get("keys") or []]
    if "sources" not in skip:
        lines += [f"lava-add-sources {src}" for src in install.get("sources") or []]
    if "deps" not in skip:
        deps = list(install.get("deps") or [])
        if distro:
            deps += list(install.get(f"deps-{distro}") or [])
        if deps:
            lines.append("lava-install-packages " + " ".join(str(d) for d in deps))
    if "steps" not in skip and install.get("steps"):
        lines += [f"cd {test_dir}", "pwd"]
        lines += [str(step) for step in install["steps"] if step is not None]
    return "\n".join(lines) + "\n"


def render_run_sh(
    testdef: Mapping[str, Any],
    block: Mapping[str, Any],
    *,
    testrun_id: str,
    test_dir: str,
    lava_signal: str = "stdout",
    character_delay: float = 0.0,
) -> str:
    """run.sh: parameters, STARTRUN, the run steps, ENDRUN (LAVA's shape)."""
    lines = parameter_lines(testdef, block)
    lines += [
        "set -e",
        "set -x",
        f"export TESTRUN_ID={testrun_id}",
        f"cd {test_dir}",
        'UUID="$(cat uuid)"',
        "set +x",
    ]
    if character_delay:
        lines += [f"export CHARACTER_DELAY={character_delay:g}", f"sleep {character_delay:g}"]
    if lava_signal == "kmsg":
        lines += [
            "# USE_KMSG",
            "export KMSG=true",
            'echo "<0><LAVA_SIGNAL_STARTRUN $TESTRUN_ID $UUID>" > /dev/kmsg',
        ]
    else:
        lines.append('echo "<LAVA_SIGNAL_STARTRUN $TESTRUN_ID $UUID>"')
    lines.append("set -x")
    for step in (testdef.get("run") or {}).get("steps") or []:
        if step is None:
            continue
        step = str(step)
        if "--cmd" in step or "--shell" in step:
            step = _POSITIONAL.sub(r"\\$\1", step)
        lines.append(step)
    lines.append("set +x")
    if character_delay:
        lines.append(f"sleep {character_delay:g}")
    if lava_signal == "kmsg":
        lines += [
            "unset KMSG",
            'echo "<0><LAVA_SIGNAL_ENDRUN $TESTRUN_ID $UUID>" > /dev/kmsg',
        ]
    else:
        lines.append('echo "<LAVA_SIGNAL_ENDRUN $TESTRUN_ID $UUID>"')
    return "\n".join(lines) + "\n"


def write_text(path: Path, text: str, executable: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    if executable:
        path.chmod(EXECUTABLE)


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, default_flow_style=False, sort_keys=False)


def pack(location: Path, results: str, output: Path, extra: Iterable[tuple[Path, str]] = ()) -> Path:
    """The overlay tarball: ``<results_dir>`` (as ``lava-<id>``, relative) plus extras."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tree = tree_path(location, results)
    with tarfile.open(output, "w:gz") as tar:
        tar.add(tree, arcname=results.lstrip("/"), filter=_normalize)
        for source, arcname in extra:
            tar.add(source, arcname=arcname, filter=_normalize)
    return output


def _normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Files on the DUT belong to root, whoever built the overlay."""
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def safe_relative(path: str) -> bool:
    """Whether ``path`` stays inside the directory it is relative to."""
    parts = Path(path).parts
    return bool(parts) and not Path(path).is_absolute() and ".." not in parts and os.sep not in parts[:1]
