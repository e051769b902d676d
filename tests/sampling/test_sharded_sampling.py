"""Sampling on a 2x2x2 (data x fsdp x tensor) mesh equals single-device sampling."""

import jax
import numpy as np
from jax.sharding import NamedSharding

import omni_rrm_jax as orj
from omni_rrm_jax.sampling.params import SamplingParams
from omni_rrm_jax.sampling.sampler import generate
from omni_rrm_jax.sampling.scoring import score_completions
from omni_rrm_jax.sharding.mesh import make_mesh
from omni_rrm_jax.sharding.rules import DEFAULT_RULES, spec_for
from tests.sampling.sharp_model import left_padded_prompts, sharp_qwen2


def test_sharded_greedy_and_scores_match_single_device():
  assert jax.device_count() == 8, "tests/conftest.py must force 8 host devices"
  mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  ids_bt, mask_bt = left_padded_prompts()  # 8 rows: the batch splits over data x fsdp
  params = SamplingParams(greedy=True, max_new_tokens=16)
  single = generate(orj.from_pretrained(sharp_qwen2()), ids_bt, mask_bt, params, 0, eos_ids=(5,))

  model = orj.from_pretrained(sharp_qwen2(), mesh=mesh)
  batch = NamedSharding(mesh, spec_for(("batch", "length"), DEFAULT_RULES, ids_bt.shape, mesh))
  ids, mask = jax.device_put(ids_bt, batch), jax.device_put(mask_bt, batch)
  out = generate(model, ids, mask, params, 0, eos_ids=(5,), mesh=mesh)
  np.testing.assert_array_equal(np.asarray(out.tokens_bn), np.asarray(single.tokens_bn))
  np.testing.assert_array_equal(np.asarray(out.mask_bn), np.asarray(single.mask_bn))
  np.testing.assert_allclose(np.asarray(out.logprobs_bn), np.asarray(single.logprobs_bn),
                             atol=1e-5, rtol=0)
  assert 0 < int(np.asarray(out.truncated_b).sum()) < len(ids_bt)
  scores = score_completions(model, ids, mask, out.tokens_bn, out.mask_bn, mesh=mesh)
  np.testing.assert_allclose(np.asarray(scores), np.asarray(out.logprobs_bn), atol=1e-5, rtol=0)


def test_sharded_group_sampling_matches_single_device():
  """G samples per prompt: the shared prefill's repeated cache rows stay with their
  prompt's samples on a mesh (2 prompts per data shard, 4 sample rows)."""
  mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  ids_bt, mask_bt = left_padded_prompts()
  params = SamplingParams(temperature=1.0, max_new_tokens=6, num_samples=2)
  single = generate(orj.from_pretrained(sharp_qwen2()), ids_bt, mask_bt, params, 3, eos_ids=())
  model = orj.from_pretrained(sharp_qwen2(), mesh=mesh)
  batch = NamedSharding(mesh, spec_for(("batch", "length"), DEFAULT_RULES, ids_bt.shape, mesh))
  ids, mask = jax.device_put(ids_bt, batch), jax.device_put(mask_bt, batch)
  out = generate(model, ids, mask, params, 3, eos_ids=(), mesh=mesh)
  np.testing.assert_array_equal(np.asarray(out.tokens_bn), np.asarray(single.tokens_bn))
  np.testing.assert_allclose(np.asarray(out.logprobs_bn), np.asarray(single.logprobs_bn),
                             atol=1e-5, rtol=0)
