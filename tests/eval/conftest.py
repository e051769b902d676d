"""The eval tasks' tests score with the session's tiny exported scalar RM (`tests/tiny_rm.py`)."""

from __future__ import annotations

import pytest

from tests.tiny_rm import MAX_LENGTH  # noqa: F401  (the length the eval tests encode to)


@pytest.fixture(scope="session")
def rm_folder(tiny_rm_folder) -> str:
  return tiny_rm_folder
