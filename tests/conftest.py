"""Settings every test shares.

Hypothesis: the suite's properties assert what the code does, never how fast; a machine
busy with other work must not fail them, so its timing checks (the per-example deadline, the
slow-generation health check) are off for the whole suite.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile("suite", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("suite")
