"""Shared test settings: small thread counts so the suite behaves on 2 cores."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


# Property tests draw the same examples on every run (CI must not flake on a new draw);
# `pytest --hypothesis-seed=N` or HYPOTHESIS_PROFILE=explore searches afresh.
from hypothesis import settings  # noqa: E402

settings.register_profile("default", derandomize=True, deadline=None)
settings.register_profile("explore", derandomize=False, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
