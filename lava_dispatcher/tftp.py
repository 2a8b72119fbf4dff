"""Where a job's files are served by TFTP: the lab's TFTP root and a job directory under it.

The root comes from the dispatcher configuration (``tftp_root``, our
addition to LAVA's dispatcher.yaml); else, as in LAVA labs, from
``TFTP_DIRECTORY`` in tftpd-hpa's ``/etc/default/tftpd-hpa``; else
``/srv/tftp``. Each job gets ``<root>/<job id>/tftp-deploy-XXXX/``, made at
deploy time and removed when the job ends, whatever the outcome. Boot
commands name files relative to the root (``<job id>/tftp-deploy-XXXX/kernel/Image``),
which is what a TFTP client asks the server for.
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lava_dispatcher.errors import InfrastructureError

TFTPD_HPA_DEFAULTS = Path("/etc/default/tftpd-hpa")
DEFAULT_ROOT = Path("/srv/tftp")
#: LAVA's limit for one file sent over TFTP (dispatcher config: tftp_size_limit)
DEFAULT_SIZE_LIMIT = 4 * 1024 * 1024 * 1024 - 1


def tftpd_hpa_directory(defaults: Path = TFTPD_HPA_DEFAULTS) -> Path | None:
    """``TFTP_DIRECTORY`` of tftpd-hpa's defaults file (shell syntax), if set."""
    try:
        text = defaults.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("TFTP_DIRECTORY="):
            continue
        try:
            words = shlex.split(line.split("=", 1)[1], comments=True)
        except ValueError:
            return None
        return Path(words[0]) if words else None
    return None


def tftp_root(dispatcher: Mapping[str, Any], defaults: Path = TFTPD_HPA_DEFAULTS) -> Path:
    configured = dispatcher.get("tftp_root")
    if configured:
        return Path(str(configured))
    return tftpd_hpa_directory(defaults) or DEFAULT_ROOT


def size_limit(dispatcher: Mapping[str, Any]) -> int:
    return int(dispatcher.get("tftp_size_limit") or DEFAULT_SIZE_LIMIT)


class JobTftpDirectory:
    """``<root>/<job id>/tftp-deploy-XXXX/``; ``remove()`` takes it away, and the
    job-id directory too when nothing else is left in it."""

    def __init__(self, root: Path, job_id: str) -> None:
        if not root.is_dir():
            raise InfrastructureError(
                f"the TFTP root {root} does not exist: set tftp_root in the dispatcher "
                f"configuration or TFTP_DIRECTORY in {TFTPD_HPA_DEFAULTS}"
            )
        self.root = root
        self.job_dir = root / str(job_id)
        try:
            self.job_dir.mkdir(exist_ok=True)
            self.path = Path(tempfile.mkdtemp(prefix="tftp-deploy-", dir=self.job_dir))
            self.path.chmod(0o755)  # tftpd often runs as another user
        except OSError as exc:
            raise InfrastructureError(
                f"cannot create the job's TFTP directory under {root}: {exc}"
            ) from exc

    def relative(self, path: Path) -> str:
        """How a TFTP client names ``path``: relative to the root."""
        return str(path.relative_to(self.root))

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.job_dir.rmdir()  # only when empty: another deploy of the job may still use it
