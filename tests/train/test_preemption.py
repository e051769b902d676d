"""SIGTERM / SIGINT set a flag instead of killing the process."""

import os
import signal
import time

import pytest

from omni_rrm_jax.train.preemption import PreemptionGuard


def wait_for(predicate, timeout=5.0):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if predicate():
      return True
    time.sleep(0.01)
  return predicate()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_sets_flag_and_handlers_are_restored(sig):
  before = signal.getsignal(sig)
  with PreemptionGuard() as guard:
    assert not guard.should_stop()
    os.kill(os.getpid(), sig)
    assert wait_for(guard.should_stop)
    assert guard.local_stop_requested()
  assert signal.getsignal(sig) is before


def test_request_stop_by_hand():
  with PreemptionGuard(signals=(signal.SIGTERM,)) as guard:
    guard.request_stop()
    assert guard.should_stop()
