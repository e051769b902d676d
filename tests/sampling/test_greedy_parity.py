"""Greedy decoding reproduces transformers' `generate(do_sample=False)` token for token."""

import numpy as np
import pytest

import omni_rrm_jax as orj
from omni_rrm_jax.sampling.params import SamplingParams
from omni_rrm_jax.sampling.sampler import generate
from tests.models.hf_fixtures import PAD
from tests.sampling.sharp_model import left_padded_prompts, sharp_qwen2

N = 16


def hf_greedy(folder, ids_bt, mask_bt, eos_ids):
  """transformers' greedy continuation [B, N], padded with PAD after every row stops."""
  import torch
  import transformers
  model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
  model.generation_config.eos_token_id = None  # stop only on the ids passed here
  with torch.no_grad():
    out = model.generate(torch.tensor(ids_bt).long(), attention_mask=torch.tensor(mask_bt).long(),
                         do_sample=False, max_new_tokens=N, pad_token_id=PAD,
                         eos_token_id=list(eos_ids) or None).numpy()
  new = out[:, ids_bt.shape[1]:]
  return np.pad(new, ((0, 0), (0, N - new.shape[1])), constant_values=PAD)


def first_hits(tokens_bn, eos_ids):
  """Per row, the index of the first EOS id, or None."""
  hits = []
  for row in tokens_bn:
    idx = np.flatnonzero(np.isin(row, eos_ids))
    hits.append(int(idx[0]) if idx.size else None)
  return hits


def pick_two_eos_ids(tokens_bn):
  """Two ids such that some rows stop on each (after >= 2 tokens) and some never stop."""
  candidates = sorted(set(tokens_bn.ravel().tolist()))
  for a in candidates:
    for b in candidates:
      if a == b:
        continue
      hits = first_hits(tokens_bn, [a, b])
      by_a = [h for r, h in enumerate(hits) if h is not None and tokens_bn[r, h] == a]
      by_b = [h for r, h in enumerate(hits) if h is not None and tokens_bn[r, h] == b]
      if by_a and by_b and max(by_a + by_b) >= 2 and None in hits:
        return a, b
  raise AssertionError("fixture produces no usable EOS pair; rebuild it with another seed")


@pytest.fixture(scope="module")
def setup():
  folder = sharp_qwen2()
  ids_bt, mask_bt = left_padded_prompts()
  return folder, orj.from_pretrained(folder), ids_bt, mask_bt, hf_greedy(folder, ids_bt, mask_bt, ())


GREEDY = SamplingParams(greedy=True, max_new_tokens=N)


def test_greedy_matches_transformers(setup):
  _, model, ids_bt, mask_bt, ref_bn = setup
  out = generate(model, ids_bt, mask_bt, GREEDY, 0, eos_ids=())
  np.testing.assert_array_equal(np.asarray(out.tokens_bn), ref_bn)
  assert np.asarray(out.mask_bn).all() and np.asarray(out.truncated_b).all()
  assert len(set(map(tuple, ref_bn))) == len(ref_bn)  # rows really differ


def test_greedy_stops_on_any_eos_like_transformers(setup):
  folder, model, ids_bt, mask_bt, free_bn = setup
  eos_ids = pick_two_eos_ids(free_bn)
  ref_bn = hf_greedy(folder, ids_bt, mask_bt, eos_ids)
  out = generate(model, ids_bt, mask_bt, GREEDY, 0, eos_ids=eos_ids, pad_id=PAD)
  tokens_bn, mask_bn = np.asarray(out.tokens_bn), np.asarray(out.mask_bn)
  np.testing.assert_array_equal(tokens_bn, ref_bn)

  hits = first_hits(free_bn, eos_ids)
  for row, hit in enumerate(hits):
    length = N if hit is None else hit + 1  # the EOS token belongs to the completion
    np.testing.assert_array_equal(mask_bn[row], np.arange(N) < length)
    assert out.lengths_b[row] == length
    assert bool(out.truncated_b[row]) == (hit is None)
    assert (tokens_bn[row, length:] == PAD).all()
    assert (np.asarray(out.logprobs_bn)[row, length:] == 0).all()
  assert {None, *range(2, N)} & set(hits)


@pytest.mark.parametrize("params", [
    SamplingParams(top_k=1, max_new_tokens=N),
    SamplingParams(top_p=1e-6, temperature=0.7, max_new_tokens=N),
], ids=["top_k=1", "top_p=1e-6"])
def test_degenerate_filters_equal_greedy(setup, params):
  _, model, ids_bt, mask_bt, ref_bn = setup
  out = generate(model, ids_bt, mask_bt, params, 123, eos_ids=())
  np.testing.assert_array_equal(np.asarray(out.tokens_bn), ref_bn)
