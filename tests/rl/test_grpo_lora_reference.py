"""GRPO with LoRA: the KL reference is the policy's base with the adapters off, not a copy."""

import jax
import numpy as np
import optax
from flax import nnx

from omni_rrm_jax.models import lora
from omni_rrm_jax.rl.grpo_loop import kl_reference
from omni_rrm_jax.sampling.scoring import score_completions
from omni_rrm_jax.train.state import init_train_state
from omni_rrm_jax.train.trainable import trainable_filter
from tests.train.fixtures import tiny_model


def _sequences(seed=0, b=4, p=6, n=5):
  rng = np.random.default_rng(seed)
  prompt = rng.integers(3, 64, (b, p))
  prompt_mask = np.ones((b, p), np.int32)
  prompt_mask[1, :2] = 0  # left padding
  completion = rng.integers(3, 64, (b, n))
  completion_mask = np.ones((b, n), np.int32)
  completion_mask[2, 3:] = 0
  return prompt, prompt_mask, completion, completion_mask


def test_reference_is_the_base_model_and_shares_its_weights():
  base = tiny_model("sft")
  seqs = _sequences()
  base_logp = np.asarray(score_completions(base, *seqs))
  policy = tiny_model("sft")  # the same weights (same seed), then adapted and trained a bit
  lora.apply_lora(policy, rank=4, alpha=8.0)
  for i, (_, layer) in enumerate(sorted(lora.adapted_layers(policy).items(), key=str)):
    layer.lora.b.set_value(0.1 * jax.random.normal(jax.random.key(i),
                                                   layer.lora.b.get_value().shape))
  graphdef, state = init_train_state(policy, optax.adam(1e-3),
                                     trainable=trainable_filter(lora=True))
  policy_logp = np.asarray(score_completions((graphdef, state.model_state()), *seqs))
  assert np.abs(policy_logp - base_logp).max() > 1e-3  # the adapters matter
  ref = kl_reference(graphdef, state, None)
  np.testing.assert_allclose(np.asarray(score_completions(ref, *seqs)), base_logp,
                             atol=1e-6, rtol=0)
  # No second copy: every base array of the reference is the policy's own buffer.
  ref_flat = dict(nnx.to_flat_state(ref[1]))
  for path, variable in nnx.to_flat_state(state.frozen):
    assert ref_flat[path].get_value() is variable.get_value(), path
