"""Simulated devices under test (DUTs) for tests, benchmarks and plugin authors.

A simulated board behaves like a real one on a serial console: powered on, it
prints a Linux boot log and a login prompt, then, after login, runs a REAL
shell (`/bin/sh -i` by default) in a pty that the simulator owns and relays;
the shell's echo and output come back over the console with CR LF line
endings, as a serial console gives them. Faults can be injected (kernel
panics, hangs, dropped or garbled characters, a slow baud rate, bursts of
output).

Security: the shell is not sandboxed. It runs ON THE HOST, as the user who
started the simulator, with that user's rights: whoever can type on the
simulated console (a pty, a TCP port on 127.0.0.1, the stdin of `sim run`)
can run any command as that user. Do not expose the console to untrusted
users, and do not run the simulator as root unless the tests need it.

Three ways to reach a board (`lava-dispatch sim --help` has the details):

* `sim run [knobs]`: a spawned process on stdin/stdout, like QEMU;
* `sim serve --control DIR --pty LINK`: a pty, opened like a serial port;
* `sim serve --control DIR --tcp PORT`: a ser2net-style TCP port;

with `sim power on|off|reset|status --control DIR` as the power commands.
From Python, `SimServer` runs a daemon for the length of a `with` block.
"""

from lava_dispatcher.sim.config import ConfigError, SimConfig
from lava_dispatcher.sim.dut import SimDUT, Stage, StageHandler
from lava_dispatcher.sim.server import (
    SimServer,
    SimServerError,
    child_env,
    run_command,
    sim_command,
)

__all__ = [
    "ConfigError",
    "SimConfig",
    "SimDUT",
    "SimServer",
    "SimServerError",
    "Stage",
    "StageHandler",
    "child_env",
    "run_command",
    "sim_command",
]
