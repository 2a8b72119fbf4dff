"""What the deploy actions hand to the boot and test actions.

Declared once here: the deploy side (``lava-overlay`` and its children)
provides these keys, the boot side (``overlay-unpack``) and the test shell
read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from re import Pattern
from typing import Any

from lava_dispatcher.data import Key


@dataclass
class TestDefinitionInfo:
    """One test definition as deployed: what the test shell needs to report it."""

    __test__ = False  # not a pytest class

    name: str
    testrun_id: str  # "<index>_<name>": the result suite
    uuid: str  # "<job_id>_<level of its repo action>"
    stage: int
    source: str  # inline, git, url
    path: str
    repository: str = ""
    revision: str = ""
    commit_id: str = ""
    pattern: Pattern[str] | None = None
    fixupdict: dict[str, str] = field(default_factory=dict)
    expected: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


#: the overlay tree's root on the worker (the DUT's / )
OVERLAY_LOCATION: Key[Path] = Key("overlay-location", Path, "where the overlay tree is built")
#: lava_test_results_dir for this job, e.g. /lava-1234
RESULTS_DIR: Key[str] = Key("lava-test-results-dir", str, "the overlay's directory on the DUT")
#: the shell the helper scripts run with (constants.posix.lava_test_sh_cmd)
TEST_SHELL: Key[str] = Key("lava-test-sh-cmd", str, "the DUT shell for the helper scripts")
#: the packed overlay, overlay-<level>.tar.gz
OVERLAY_FILE: Key[Path] = Key("overlay-file", Path, "the compressed overlay tarball")
#: every deployed definition, by uuid
TEST_DEFINITIONS: Key[dict] = Key(
    "test-definitions", dict, "uuid -> TestDefinitionInfo of every deployed definition"
)
#: commands the test shell types before starting the runner (mounting the overlay...)
PRE_COMMANDS: Key[list] = Key("pre-command-list", list, "typed before lava-test-runner")
#: a tmpfs image's QEMU arguments, by image label ("-kernel {kernel}")
IMAGE_ARGS: Key[str] = Key("image-arg", str, "the image_arg of a tmpfs image, by label")
#: the ext2 disk holding the overlay, for a VM whose images did not take it
GUEST_DISK: Key[Path] = Key("guest-disk", Path, "the overlay on a guest disk image")
#: a file the bootloader fetches by TFTP, by label (kernel, ramdisk, dtb, tee,
#: dtbo0...): its name relative to the TFTP root, what {KERNEL}... become
BOOT_FILE: Key[str] = Key("boot-file", str, "a TFTP file for the bootloader, by label")
#: the U-Boot command that boots the deployed kernel: bootz, booti or bootm
BOOT_COMMAND: Key[str] = Key("bootcommand", str, "bootz/booti/bootm for the deployed kernel")
#: the NFS root for the kernel's command line: {NFSROOTFS} (label "path") and
#: {NFS_SERVER_IP} (label "server")
NFS_ROOT: Key[str] = Key("nfs-root", str, "the NFS export the DUT mounts as its root")
#: the job's TFTP directory relative to the TFTP root ({EXTRA_FILES_DIR} is under it)
TFTP_SUFFIX: Key[str] = Key("tftp-suffix", str, "the job's TFTP directory, relative to the root")
