"""Suite-wide settings.

Hypothesis explores new random inputs on every developer run, which is how
the fuzz tests keep finding parser bugs.  CI must be reproducible, so
``.ci/run`` selects the ``ci`` profile: the same derandomized examples on
every run, and a failure there is a failure on every machine.  Neither
profile has time limits: they measure the machine, not the code.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# Timing is the machine's, not the code's: a loaded 2-core CI box must not
# fail a fuzz test because generating its inputs or one example was slow.
_UNTIMED = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("ci", derandomize=True, print_blob=True, **_UNTIMED)
settings.register_profile("dev", print_blob=True, **_UNTIMED)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
