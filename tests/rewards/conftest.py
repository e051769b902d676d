"""Every reward test starts and ends with zeroed error counters."""

from __future__ import annotations

import pytest

from omni_rrm_jax.rewards import contract


@pytest.fixture(autouse=True)
def _clean_error_counts():
  contract.reset_error_counts()
  yield
  contract.reset_error_counts()
