"""Runs that share a workdir: one at a time, the same run on resume, and a damaged
latest checkpoint falls back to the one before."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from omni_rrm_jax.core import workdir_lock
from omni_rrm_jax.train.checkpointing import Checkpointer, config_changes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _holder(workdir: str, seconds: float = 60) -> subprocess.Popen:
  code = textwrap.dedent(f"""
      import sys, time
      from omni_rrm_jax.core import workdir_lock
      workdir_lock.hold({workdir!r})
      print("held", flush=True)
      time.sleep({seconds})
  """)
  proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                          text=True)
  assert proc.stdout.readline().strip() == "held"
  return proc


def test_a_second_run_on_a_workdir_is_refused_with_the_holder(tmp_path):
  workdir = str(tmp_path / "run")
  proc = _holder(workdir)
  try:
    with pytest.raises(ValueError, match=rf"in use by another run \(pid {proc.pid} on "):
      workdir_lock.hold(workdir)
  finally:
    proc.kill()  # kill -9: the kernel drops the lock with the process
    proc.wait()
  workdir_lock.hold(workdir)  # no stale lock
  workdir_lock.hold(workdir)  # the holder may take it again
  other = subprocess.run([sys.executable, "-c", "from omni_rrm_jax.core import workdir_lock;"
                          f"workdir_lock.hold({workdir!r})"], cwd=ROOT, capture_output=True,
                         text=True)
  assert other.returncode != 0 and f"pid {os.getpid()} on" in other.stderr
  workdir_lock.release(workdir)
  subprocess.run([sys.executable, "-c", "from omni_rrm_jax.core import workdir_lock;"
                  f"workdir_lock.hold({workdir!r})"], cwd=ROOT, check=True)


def _config(**changes) -> str:
  c = {"optim": {"learning_rate": 1e-3, "warmup_steps": 2}, "seed": 0,
       "train": {"num_steps": 10, "log_every": 1}, "checkpoint": {"every": 1},
       "mesh": {"data": -1}}
  for dotted, value in changes.items():
    node = c
    *parents, leaf = dotted.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return json.dumps(c, sort_keys=True)


def test_config_changes_keep_only_what_a_resume_may_not_change():
  assert config_changes(_config(), _config(**{"train.num_steps": 20, "mesh.data": 2,
                                             "checkpoint.every": 5})) == []
  assert config_changes(_config(), _config(**{"optim.learning_rate": 2e-3, "seed": 1})) == [
      "optim.learning_rate: 0.001 -> 0.002", "seed: 0 -> 1"]


def test_a_setting_added_since_the_checkpoint_resumes_only_at_its_old_behaviour():
  saved = _config()  # written before `model.target_logits` existed
  assert config_changes(saved, _config(**{"model": {"target_logits": 0}})) == []
  assert config_changes(saved, _config(**{"model": {"target_logits": 128}})) == [
      "model.target_logits: '(none)' -> 128"]


def _state(value: float):
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return {"w": jax.device_put(jnp.full((4,), value, jnp.float32), sharding),
          "step": jax.device_put(jnp.asarray(int(value), jnp.int32), sharding)}


class _Iter:
  def __init__(self):
    self.state = None

  def set_state(self, state):
    self.state = state


def test_resume_refuses_other_settings_unless_allowed(tmp_path):
  with Checkpointer(str(tmp_path), save_every=1, async_save=False) as ckpt:
    ckpt.check_config(_config(), allow_change=False)  # a fresh workdir passes
    ckpt.save(1, _state(1.0), {"pos": 1}, _config())
    ckpt.wait()
    ckpt.check_config(_config(**{"train.num_steps": 50}), allow_change=False)
    with pytest.raises(ValueError, match=r"holds step 1 of a run with other settings "
                       r"\(optim.learning_rate: 0.001 -> 0.002\); .*allow_config_change=True"):
      ckpt.check_config(_config(**{"optim.learning_rate": 2e-3}), allow_change=False)
    ckpt.check_config(_config(**{"optim.learning_rate": 2e-3}), allow_change=True)


def _damage(folder: str) -> int:
  """Truncates every file of a checkpoint's state item; returns how many."""
  n = 0
  for root, _, files in os.walk(os.path.join(folder, "state")):
    for name in files:
      with open(os.path.join(root, name), "r+b") as f:
        f.truncate(max(0, os.path.getsize(os.path.join(root, name)) // 3))
      n += 1
  return n


def test_a_damaged_latest_checkpoint_falls_back_to_the_one_before(tmp_path, caplog):
  with Checkpointer(str(tmp_path), save_every=1, keep=3, async_save=False) as ckpt:
    for step in (1, 2, 3):
      ckpt.save(step, _state(float(step)), {"pos": step}, _config())
    ckpt.wait()
    assert _damage(os.path.join(ckpt.directory, "3")) > 0
    it = _Iter()
    state, step = ckpt.resume(_state(0.0), it)
  assert step == 2 and it.state == {"pos": 2}
  np.testing.assert_array_equal(np.asarray(state["w"]), np.full((4,), 2.0, np.float32))
  assert "checkpoint 3" in caplog.text and "unreadable" in caplog.text


def test_no_readable_checkpoint_is_one_clear_error(tmp_path):
  with Checkpointer(str(tmp_path), save_every=1, keep=2, async_save=False) as ckpt:
    ckpt.save(1, _state(1.0), None, _config())
    ckpt.wait()
    _damage(os.path.join(ckpt.directory, "1"))
    with pytest.raises(ValueError, match="no readable checkpoint in .*step 1: "):
      ckpt.resume(_state(0.0), _Iter())


def test_the_training_loop_refuses_a_changed_resume_before_any_work(tmp_path):
  from omni_rrm_jax.train.loop import run
  from tests.e2e.runs import load_config, trained_rm

  workdir, _ = trained_rm()
  before = sorted(os.listdir(workdir))
  config = load_config("rm", **{"train.num_steps": 240, "train.progress_bar": False,
                                "train.eval_every": 1000, "optim.learning_rate": 5e-4})
  with pytest.raises(ValueError, match=r"optim.learning_rate: 0.001 -> 0.0005"):
    run(config, workdir)
  assert sorted(os.listdir(workdir)) == before  # refused before anything was written
