"""What the training loop reads: the held-out set's data workers
(`data.eval_worker_count`, apart from training's), the SFT examples that
`model.target_logits` leaves out, and the logged share of time spent waiting
for batches.

Each evaluation during training reads the held-out set anew, so with workers it
starts new worker processes each time; a small set decodes faster in the main
process. The spy records the worker count the loop asks for and builds the
dataset in-process, so the tests start no processes.
"""

from __future__ import annotations

import json
import time

import pytest

from omni_rrm_jax.assembly.inputs import eval_worker_count
from omni_rrm_jax.config import tasks
from omni_rrm_jax.train import loop
from tests.e2e.runs import load_config


@pytest.mark.parametrize("workers,eval_workers,expected", [(2, -1, 2), (2, 0, 0), (0, 3, 3)])
def test_eval_worker_count_defaults_to_the_training_workers(workers, eval_workers, expected):
  c = tasks.rm_config()
  assert c.data.eval_worker_count == -1
  c.data.update(worker_count=workers, eval_worker_count=eval_workers)
  assert eval_worker_count(c.data) == expected


@pytest.mark.parametrize("eval_workers,expected", [(0, 0), (-1, 2)])
def test_the_training_loop_reads_its_held_out_set_with_the_eval_workers(
    monkeypatch, tmp_path, eval_workers, expected):
  asked = []  # (split, worker_count) per dataset the loop builds
  real = loop.make_dataset

  def spy(records, encoder, **kw):
    asked.append(("eval" if kw.get("num_epochs") == 1 else "train", kw["worker_count"]))
    return real(records, encoder, **{**kw, "worker_count": 0})

  monkeypatch.setattr(loop, "make_dataset", spy)
  config = load_config("rm", **{
      "train.progress_bar": False, "train.num_steps": 2, "train.eval_every": 1,
      "optim.warmup_steps": 1,
      "data.synthetic_train": 32, "data.synthetic_eval": 8, "data.worker_count": 2,
      "data.eval_worker_count": eval_workers, "export.at_end": False,
      "checkpoint.async_save": False})
  summary = loop.run(config, str(tmp_path))
  assert sorted(asked) == [("eval", expected), ("train", 2)]
  assert summary["eval"]["num_pairs"] == 8  # the held-out set was read, in-process


def test_sft_examples_past_target_logits_are_skipped_and_counted(tmp_path):
  config = load_config("sft", **{
      "train.progress_bar": False, "train.num_steps": 2, "optim.warmup_steps": 1,
      "data.synthetic_train": 16, "data.synthetic_eval": 4, "model.target_logits": 1,
      "export.at_end": False, "checkpoint.async_save": False})
  summary = loop.run(config, str(tmp_path))
  inputs = summary["inputs"]
  assert inputs["examples"] > 0 and inputs["invalid"] == {"target too long": inputs["examples"]}


def test_a_slow_input_pipeline_shows_in_the_logged_data_wait(monkeypatch, tmp_path):
  real = loop.make_dataset

  class Slow:  # every training batch arrives 0.3 s late
    def __init__(self, dataset):
      self.dataset = dataset

    def __iter__(self):
      return self

    def __next__(self):
      time.sleep(0.3)
      return next(self.it)

    def get_state(self):
      return self.it.get_state()

    def set_state(self, state):
      self.it.set_state(state)

    def close(self):
      self.it.close()

  def slow_train(records, encoder, **kw):
    dataset = real(records, encoder, **kw)
    if kw.get("num_epochs") == 1:
      return dataset
    slow = Slow(dataset)
    slow.it = iter(dataset)
    return slow

  config = load_config("rm", **{
      "train.progress_bar": False, "train.num_steps": 8, "train.log_every": 4,
      "train.eval_every": 100, "optim.warmup_steps": 1, "data.synthetic_train": 64,
      "data.synthetic_eval": 8, "export.at_end": False, "checkpoint.async_save": False})
  fast = tmp_path / "fast"
  loop.run(config, str(fast))
  monkeypatch.setattr(loop, "make_dataset", slow_train)
  loop.run(config, str(tmp_path / "slow"))
  shares = {}
  for name in ("fast", "slow"):
    rows = [json.loads(line) for line in open(tmp_path / name / "metrics.jsonl")]
    shares[name] = [r["data_wait_fraction"] for r in rows if r.get("split") == "train"]
  # The second interval of each run (the first holds the compilation).
  assert len(shares["slow"]) == 2 and shares["slow"][1] > 0.6 > 0.3 > shares["fast"][1]
