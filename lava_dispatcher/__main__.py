"""`python -m lava_dispatcher` is `lava-dispatch`."""

from lava_dispatcher.cli import main

raise SystemExit(main())
