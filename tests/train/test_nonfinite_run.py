"""A tiny RM run whose loss is never finite: stopped at the streak limit, skips counted.

The loss is poisoned in the task kind the loop looks up, so every update is
skipped by `guarded_update` and the streak grows by one per step.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax.numpy as jnp
import pytest

from omni_rrm_jax.train import loop
from omni_rrm_jax.train.checkpointing import Checkpointer
from omni_rrm_jax.train.task_kind import task_kind
from tests.e2e.runs import load_config


@pytest.fixture
def nan_loss(monkeypatch):
  def poisoned_kind(name):
    kind = task_kind(name)

    def loss(model, micro, center_coef, **head):
      loss_sum, aux = kind.loss(model, micro, center_coef, **head)
      return loss_sum * jnp.nan, aux

    return dataclasses.replace(kind, loss=loss)

  monkeypatch.setattr(loop, "task_kind", poisoned_kind)


def _config(**overrides):
  return load_config("rm", **{"train.progress_bar": False, "train.eval_every": 1000,
                              "optim.warmup_steps": 1, "data.synthetic_train": 64,
                              "data.synthetic_eval": 16, "export.at_end": False,
                              "checkpoint.async_save": False, **overrides})


def test_consecutive_nonfinite_steps_stop_at_the_limit_between_log_steps(nan_loss, tmp_path):
  # log_every is past the end of the run: only the per-step check can stop it.
  config = _config(**{"train.num_steps": 12, "train.log_every": 100,
                      "train.max_nonfinite_streak": 3, "checkpoint.every": 1})
  with pytest.raises(FloatingPointError, match=r"^3 consecutive .* last at step 3\)"):
    loop.run(config, str(tmp_path))
  # Stopped while step 4 ran: nothing was saved after the step that reached the limit.
  assert max(Checkpointer(str(tmp_path), save_every=1).all_steps()) == 3


def test_summary_counts_the_updates_skipped_as_nonfinite(nan_loss, tmp_path):
  config = _config(**{"train.num_steps": 4, "train.max_nonfinite_streak": 10})
  summary = loop.run(config, str(tmp_path))
  assert summary["nonfinite_skipped"] == 4 and summary["step"] == 4
  with open(os.path.join(tmp_path, "summary.json"), encoding="utf-8") as f:
    assert json.load(f)["nonfinite_skipped"] == 4
