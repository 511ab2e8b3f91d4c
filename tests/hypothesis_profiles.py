"""Hypothesis profiles for the property tests, chosen with ``HYPOTHESIS_PROFILE``.

- ``ci`` (the default): a bounded number of examples, so that the whole suite stays
  fast; no deadline, because a shared CI machine makes timings meaningless.
- ``long``: a hundred times more examples, for a fuzzing run by hand or on a
  schedule: ``HYPOTHESIS_PROFILE=long python -m pytest tests/protocol -q``.
- ``dev``: few examples, for a quick edit-and-run loop.

Importing this module registers the profiles and loads the chosen one. Tests that
should follow the profile must not pass ``max_examples`` to ``@settings``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

__all__ = ["PROFILE"]

settings.register_profile("ci", max_examples=200, deadline=None, print_blob=True)
settings.register_profile(
    "long",
    max_examples=20_000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=20, deadline=None)

#: The profile in force.
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)
