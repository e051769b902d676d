"""GRPO's training prompts in blocks: a pair and its A/B-swapped twin are drawn in one step.

A step whose prompts hold each pair in both orders rewards a verdict that follows
the position as often as it punishes it, so only the responses' content moves the
judge (`grpo.data.shuffle_block`, the demo's default).
"""

from __future__ import annotations

import dataclasses

import pytest
from transformers import AutoTokenizer

from omni_rrm_jax.config.tasks import grpo_config
from omni_rrm_jax.config.validate import problems
from omni_rrm_jax.core.batch_contract import SFT_BATCH
from omni_rrm_jax.data.tokenize import ExampleEncoder
from omni_rrm_jax.data.tokenizer_train import train_tiny_tokenizer
from omni_rrm_jax.rl import rollout
from omni_rrm_jax.synthetic.corpus import corpus
from omni_rrm_jax.synthetic.mixture import mixed_pairs

PAIRS = 12


@pytest.fixture(scope="module")
def twinned(tmp_path_factory):
  """12 text pairs, each followed by its mirror, and an encoder for their prompts."""
  pairs = mixed_pairs(PAIRS, 0)
  records = []
  for r in pairs:
    records += [r, dataclasses.replace(r, id=r.id + "/swap", response_a=r.response_b,
                                       response_b=r.response_a,
                                       label={"A": "B", "B": "A"}[r.label])]
  out = str(tmp_path_factory.mktemp("tok"))
  train_tiny_tokenizer(corpus(records), out, vocab_size=400)
  encoder = ExampleEncoder(AutoTokenizer.from_pretrained(out), 512, SFT_BATCH)
  return records, encoder


def _steps(records, encoder, *, block, batch_size=4, process_count=1, steps=12):
  out = []
  for process in range(process_count):
    it = iter(rollout.make_prompt_dataset(
        records, encoder, recipe="judge", max_prompt_length=512, batch_size=batch_size,
        seed=3, shuffle_block=block, process_index=process, process_count=process_count))
    out.append([[p["index"] for p in next(it)] for _ in range(steps)])
  return out


def test_a_pair_and_its_twin_share_every_step(twinned):
  records, encoder = twinned
  # Two processes of two prompts each: every process's rows are a pair and its twin.
  per_process = _steps(records, encoder, block=2, batch_size=2, process_count=2)
  for rows in per_process:
    for step in rows:
      assert step[0] % 2 == 0 and step[1] == step[0] + 1, step
      assert records[step[1]].id == records[step[0]].id + "/swap"
  # Over 12 steps (two epochs of 24 records), every record is drawn once an epoch,
  # and the second epoch's order is another one.
  first = [i for s in range(6) for rows in per_process for i in rows[s]]
  second = [i for s in range(6, 12) for rows in per_process for i in rows[s]]
  assert sorted(first) == sorted(second) == list(range(2 * PAIRS)) and first != second


def test_without_blocks_twins_are_split(twinned):
  # The control: a shuffle of single records separates most pairs from their twins.
  records, encoder = twinned
  (rows,) = _steps(records, encoder, block=1)
  together = sum(i % 2 == 0 and i + 1 in step for step in rows for i in step)
  assert together < len(rows)  # 24 pairs could be together; few are


def test_a_block_that_does_not_divide_the_step_is_refused(twinned):
  records, encoder = twinned
  with pytest.raises(ValueError, match="shuffle_block 2 must divide"):
    rollout.make_prompt_dataset(records, encoder, recipe="judge", max_prompt_length=512,
                                batch_size=3, seed=0, shuffle_block=2)
  config = grpo_config("judge")
  config.rollout.prompts_per_step = 6
  config.data.shuffle_block = 4
  lines = problems(config, process_count=1, device_count=1)
  assert [line for line in lines if "data.shuffle_block" in line] == [
      "data.shuffle_block=4: must divide the 6 prompts of each process's step "
      "(rollout.prompts_per_step), so that no block is split"], lines
  config.data.shuffle_block = 3  # 6 prompts hold two blocks of 3
  assert not [line for line in problems(config, process_count=1, device_count=1)
              if "shuffle_block" in line]
  # With two processes each holds 3 prompts: a block of 2 would be split.
  config.data.shuffle_block = 2
  assert any("must divide the 3 prompts" in line
             for line in problems(config, process_count=2, device_count=2))
