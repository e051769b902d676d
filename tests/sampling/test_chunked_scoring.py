"""Completion log-probs with a chunked vocabulary head equal the full log-softmax ones."""

import jax
import jax.numpy as jnp
import numpy as np

import omni_rrm_jax as orj
from omni_rrm_jax.sampling.scoring import score_completions

TINY = dict(vocab_size=80, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
            num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)


def test_chunked_scores_equal_full_log_softmax():
  model = orj.from_config("Qwen2ForCausalLM", TINY, seed=1)
  rng = np.random.default_rng(0)
  b, p, n = 3, 4, 7  # 7 completion positions: chunks of 3 leave a padded remainder
  prompt_mask = np.array([[1, 1, 1, 1], [0, 1, 1, 1], [0, 0, 1, 1]], np.int32)
  prompt_ids = np.where(prompt_mask > 0, rng.integers(1, 80, size=(b, p)), 0).astype(np.int32)
  completion_mask = (np.arange(n)[None] < np.array([7, 3, 5])[:, None]).astype(np.int32)
  completion_ids = rng.integers(1, 80, size=(b, n)).astype(np.int32)
  args = (prompt_ids, prompt_mask, completion_ids, completion_mask)
  plain = np.asarray(score_completions(model, *args, temperature=0.7))
  chunked = np.asarray(score_completions(model, *args, temperature=0.7, logits_chunk=3))

  # Reference: the full forward's logits, position t predicting token t + 1.
  ids = jnp.concatenate([prompt_ids, completion_ids], axis=1)
  mask = jnp.concatenate([prompt_mask, completion_mask], axis=1)
  positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
  logits = model(ids, attention_mask=mask, position_ids=positions).logits[:, p - 1:-1] / 0.7
  logp = jnp.take_along_axis(jax.nn.log_softmax(logits), completion_ids[..., None], -1)[..., 0]
  reference = np.where(completion_mask > 0, np.asarray(logp), 0.0)
  np.testing.assert_allclose(plain, reference, atol=2e-5, rtol=0)
  np.testing.assert_allclose(chunked, plain, atol=2e-5, rtol=0)
  assert (chunked[completion_mask == 0] == 0).all() and (chunked[completion_mask > 0] < 0).all()
