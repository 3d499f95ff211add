"""Shared test setup: a fixed seed per test, Hypothesis profiles, and the devices to run on.

Hypothesis runs the ``ci`` profile (few examples, no deadline: the first call of a torch kernel is slow and
would trip a per-example deadline). ``HYPOTHESIS_PROFILE=thorough`` runs many more examples locally.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=20, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("thorough", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# One thread per process: the suite runs under pytest-xdist on small machines, where torch's default of one
# thread per core makes workers spin against each other (a 10x slowdown measured on 2 cores).
torch.set_num_threads(1)

# A second device, when there is one: the tests that need it (device checks, the GPU kernels) run there.
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test starts from the same RNG state, so a failure reproduces on its own."""
    torch.manual_seed(0)


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)
