"""Session-wide compiled setups, shared by the step tests."""

import pytest

from tests.train.fixtures import Setup


@pytest.fixture(scope="session")
def rm():
  return Setup("rm")


@pytest.fixture(scope="session")
def sft():
  return Setup("sft")
