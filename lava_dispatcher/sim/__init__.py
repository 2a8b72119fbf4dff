"""Simulated devices under test (DUTs) for tests, benchmarks and plugin authors.

A simulated board behaves like a real one on a serial console: powered on, it
prints a Linux boot log and a login prompt, then, after login, runs a REAL
shell (`/bin/sh -i` by default) in a pty that the simulator owns and relays;
the shell's echo and output come back over the console with CR LF line
endings, as a serial console gives them. Faults can be injected (kernel
panics, hangs, dropped or garbled characters, a slow baud rate, bursts of
output).

Root file system. By default the shell runs on the host's file system. With
`--rootfs DIR` it runs chrooted into DIR, and with `--ramdisk FILE` in a fresh
root unpacked from the initramfs FILE at every power-on (deleted at power-off;
`sim flash --control DIR --ramdisk FILE` gives a served board another one):
either way as PID 1 of new PID, mount, UTS and IPC namespaces (plus a user
namespace when not root), with /proc, /dev (a /dev/kmsg whose lines reach the
console as kernel messages) and /run mounted inside. So a test overlay put
into the ramdisk really is inside the board. `namespace` has the details,
`rootfs` builds a busybox root or initramfs to boot.

Security: the shell is not sandboxed. On the host it runs as the user who
started the simulator, with that user's rights: whoever can type on the
simulated console (a pty, a TCP port on 127.0.0.1, the stdin of `sim run`)
can run any command as that user. In a root file system the namespaces keep
power commands, processes, mounts and the host name on the board, but root
in a chroot is still root on the host's kernel. Do not expose the console to
untrusted users, and do not run the simulator as root unless the tests need it.

Three ways to reach a board (`lava-dispatch sim --help` has the details):

* `sim run [knobs]`: a spawned process on stdin/stdout, like QEMU;
* `sim serve --control DIR --pty LINK`: a pty, opened like a serial port;
* `sim serve --control DIR --tcp PORT`: a ser2net-style TCP port;

with `sim power on|off|reset|status --control DIR` as the power commands and
`sim flash --control DIR --ramdisk FILE` as the flash (deploy) command.
From Python, `SimServer` runs a daemon for the length of a `with` block.
"""

from lava_dispatcher.sim.config import ConfigError, SimConfig
from lava_dispatcher.sim.dut import SimDUT, Stage, StageHandler
from lava_dispatcher.sim.namespace import BoardError
from lava_dispatcher.sim.rootfs import RootfsError, build_busybox_initramfs, build_busybox_rootfs
from lava_dispatcher.sim.server import (
    SimServer,
    SimServerError,
    child_env,
    run_command,
    sim_command,
)

__all__ = [
    "BoardError",
    "ConfigError",
    "RootfsError",
    "SimConfig",
    "SimDUT",
    "SimServer",
    "SimServerError",
    "Stage",
    "StageHandler",
    "build_busybox_initramfs",
    "build_busybox_rootfs",
    "child_env",
    "run_command",
    "sim_command",
]
