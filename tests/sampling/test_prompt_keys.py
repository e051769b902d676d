"""With per-prompt keys a prompt's samples do not depend on its batch.

GRPO's evaluation batches its held-out prompts by the training batch size;
with one key per batch, the same prompt drew other completions when the
batching changed, so two runs' step-0 rewards differed. Keyed by prompt, a
prompt draws the same completions alone, among other prompts, or at another row.
"""

import numpy as np
import pytest

import omni_rrm_jax as orj
from omni_rrm_jax.sampling.params import SamplingParams
from omni_rrm_jax.sampling.sampler import generate
from tests.sampling.sharp_model import left_padded_prompts, sharp_qwen2

PARAMS = SamplingParams(temperature=1.0, max_new_tokens=8, num_samples=3)


@pytest.fixture(scope="module")
def model():
  return orj.from_pretrained(sharp_qwen2())


def _samples(model, ids, mask, rows, keys=None, seed=7):
  out = generate(model, ids[rows], mask[rows], PARAMS, seed, eos_ids=(),
                 prompt_keys=None if keys is None else np.asarray(keys)[rows])
  g = PARAMS.num_samples
  tokens = np.asarray(out.tokens_bn).reshape(len(rows), g, -1)
  logps = np.asarray(out.logprobs_bn).reshape(len(rows), g, -1)
  return tokens, logps


def test_a_prompt_draws_the_same_samples_in_any_batch(model):
  ids, mask = left_padded_prompts(seed=3, pads=(0, 0, 0, 0))
  keys = [40, 41, 42, 43]  # e.g. the records' indices
  full_t, full_l = _samples(model, ids, mask, [0, 1, 2, 3], keys)
  alone_t, alone_l = _samples(model, ids, mask, [2], keys)
  moved_t, moved_l = _samples(model, ids, mask, [2, 0], keys)  # prompt 2 now at row 0
  np.testing.assert_array_equal(alone_t[0], full_t[2])
  np.testing.assert_array_equal(moved_t[0], full_t[2])
  np.testing.assert_array_equal(moved_t[1], full_t[0])
  np.testing.assert_allclose(alone_l[0], full_l[2], atol=1e-5, rtol=0)
  # Samples of one prompt differ from each other, and another key draws others.
  assert (full_t[2] != full_t[2][:1]).any()
  other_t, _ = _samples(model, ids, mask, [2], [0, 0, 99, 0])
  assert (other_t[0] != full_t[2]).any()


def test_without_keys_the_draw_follows_the_row(model):
  # The control: one key per batch gives prompt 2 other samples at another row.
  ids, mask = left_padded_prompts(seed=3, pads=(0, 0, 0, 0))
  full_t, _ = _samples(model, ids, mask, [0, 1, 2, 3])
  alone_t, _ = _samples(model, ids, mask, [2])
  assert (alone_t[0] != full_t[2]).any()


def test_one_key_per_prompt_is_required(model):
  ids, mask = left_padded_prompts(seed=3, pads=(0, 0))
  with pytest.raises(ValueError, match="one key per prompt"):
    generate(model, ids, mask, PARAMS, 0, eos_ids=(), prompt_keys=np.arange(3))
