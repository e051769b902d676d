"""Chunked target log-probs equal the plain full-vocabulary ones, without [B, T, V] memory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import omni_rrm_jax as orj
from omni_rrm_jax.models.token_logprobs import chunk_layout, token_logprobs

V, E = 300, 32


def tiny_lm(tie: bool, vocab: int = V, hidden: int = E):
  config = dict(vocab_size=vocab, hidden_size=hidden, intermediate_size=48, num_hidden_layers=1,
                num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tie)
  return orj.from_config("Qwen2ForCausalLM", config, seed=0)


def test_chunk_layout_evens_out_chunks():
  assert chunk_layout(13, 0) == (1, 13)
  assert chunk_layout(13, 13) == (1, 13)
  assert chunk_layout(13, 64) == (1, 13)
  assert chunk_layout(13, 4) == (4, 4)  # 16 slots, 3 padded
  assert chunk_layout(3072, 512) == (6, 512)
  assert chunk_layout(1000, 512) == (2, 500)  # two of 500, not 512 + 488 padded to 512
  with pytest.raises(ValueError, match="logits chunk"):
    chunk_layout(13, -1)


@pytest.mark.parametrize("tie", [True, False])
def test_chunked_equals_plain_values_and_gradients(tie):
  model = tiny_lm(tie)
  graphdef, state = nnx.split(model)
  b, t = 3, 13  # 13 positions: chunk 4 does not divide it
  h_bte = jax.random.normal(jax.random.key(1), (b, t, E))
  targets_bt = jax.random.randint(jax.random.key(2), (b, t), 0, V)
  weight_bt = jax.random.uniform(jax.random.key(3), (b, t))

  def loss(state, h_bte, chunk):
    out = token_logprobs(nnx.merge(graphdef, state).lm_logits, h_bte, targets_bt,
                         chunk=chunk, temperature=0.7)
    # Every output feeds the loss, so every output's gradient path is checked.
    return jnp.sum(weight_bt * out.logp_bt) + 0.3 * jnp.sum(out.log_z_bt), out

  grad = jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True), static_argnums=2)
  (g_state0, g_h0), out0 = grad(state, h_bte, 0)
  (g_state4, g_h4), out4 = grad(state, h_bte, 4)

  # The plain form is the textbook one: log_softmax of the full logits.
  logits_btv = model.lm_logits(h_bte).astype(jnp.float32) / 0.7
  ref_bt = jnp.take_along_axis(jax.nn.log_softmax(logits_btv), targets_bt[..., None], -1)[..., 0]
  np.testing.assert_allclose(out0.logp_bt, ref_bt, atol=1e-5, rtol=0)
  np.testing.assert_array_equal(out0.correct_bt,
                                (jnp.argmax(logits_btv, -1) == targets_bt).astype(jnp.float32))
  for name in ("logp_bt", "log_z_bt", "correct_bt"):
    np.testing.assert_allclose(getattr(out4, name), getattr(out0, name), atol=1e-5, rtol=0,
                               err_msg=name)
  np.testing.assert_allclose(g_h4, g_h0, atol=1e-6, rtol=0)
  flat0 = jax.tree_util.tree_flatten_with_path(g_state0)[0]
  for (path, x0), x4 in zip(flat0, jax.tree.leaves(g_state4)):
    np.testing.assert_allclose(x4, x0, atol=1e-5, rtol=1e-5, err_msg=jax.tree_util.keystr(path))
  # The head's weight gets a real gradient (not zero on both sides).
  head = g_state0["model"]["embed_tokens"]["weight"] if tie else g_state0["lm_head"]["kernel"]
  assert float(jnp.abs(head[...]).max()) > 1e-3


@pytest.mark.parametrize("tie", [True, False])
def test_chunked_loss_never_holds_full_logits(tie):
  b, t, v, e = 2, 1024, 32000, 64
  model = tiny_lm(tie, vocab=v, hidden=e)
  graphdef, state = nnx.split(model)
  h = jax.ShapeDtypeStruct((b, t, e), jnp.float32)
  targets = jax.ShapeDtypeStruct((b, t), jnp.int32)

  def compiled(chunk):
    def loss(state, h_bte, targets_bt):
      out = token_logprobs(nnx.merge(graphdef, state).lm_logits, h_bte, targets_bt, chunk=chunk)
      return -jnp.mean(out.logp_bt)
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1))).lower(state, h, targets).compile()

  full = f"f32[{b},{t},{v}]"
  full_bytes = b * t * v * 4
  plain, chunked = compiled(0), compiled(256)
  assert full in plain.as_text()  # the check below can see the array when it is there
  assert full not in chunked.as_text()
  assert plain.memory_analysis().temp_size_in_bytes > full_bytes
  # One chunk's logits and their gradient, [2, 256, 32000] f32 each, plus small change.
  assert chunked.memory_analysis().temp_size_in_bytes < 0.6 * full_bytes
