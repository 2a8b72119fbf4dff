"""`python -m lava_dispatcher.sim ...` is `lava-dispatch sim ...`."""

import sys

from lava_dispatcher.sim.cli import main

raise SystemExit(main(sys.argv[1:]))
