"""Suite-wide settings.

Hypothesis explores new random inputs on every developer run, which is how
the fuzz tests keep finding parser bugs.  CI must be reproducible, so
``.ci/run`` selects the ``ci`` profile: the same derandomized examples on
every run, and a failure there is a failure on every machine.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
