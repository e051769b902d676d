"""Numerical parity with transformers (fp32, max |diff| <= 1e-4), and round trips."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import omni_rrm_jax as orj
from tests.models.hf_fixtures import CASES, padded_batch, saved_model, torch_outputs

TOL = 1e-4


def _valid(logits, mask):
  return logits[mask.astype(bool)] if logits.ndim == 3 else logits


@pytest.mark.parametrize("case", sorted(CASES))
def test_logits_match_transformers(case, tmp_path):
  folder = saved_model(case)
  ids, mask = padded_batch(length=12)
  ref = torch_outputs(folder, ids, mask)
  model = orj.from_pretrained(folder)
  out = np.asarray(model(jnp.asarray(ids), attention_mask=jnp.asarray(mask)).logits)
  assert out.shape == ref.shape
  np.testing.assert_allclose(_valid(out, mask), _valid(ref, mask), atol=TOL, rtol=0)

  # Our export, loaded by transformers, gives the same numbers again.
  orj.save_pretrained(model, str(tmp_path / "export"))
  ref2 = torch_outputs(str(tmp_path / "export"), ids, mask)
  np.testing.assert_allclose(_valid(ref2, mask), _valid(ref, mask), atol=1e-5, rtol=0)


def test_explicit_position_ids_match(tmp_path):
  """Left padding with positions counted from the first real token (as generate does)."""
  folder = saved_model("llama_lm_llama3")
  ids, mask = padded_batch(seed=3)
  pos = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
  ref = torch_outputs(folder, ids, mask, position_ids=pos)
  model = orj.from_pretrained(folder)
  out = np.asarray(model(jnp.asarray(ids), attention_mask=jnp.asarray(mask),
                         position_ids=jnp.asarray(pos)).logits)
  np.testing.assert_allclose(_valid(out, mask), _valid(ref, mask), atol=TOL, rtol=0)


@pytest.mark.parametrize("case", ["qwen2_lm_tied_linear", "qwen3_lm_yarn", "llama_lm_llama3",
                                  "llama_lm_dynamic"])
def test_rope_scaling_changes_the_numbers(case):
  """The parity cases are sensitive to the scaling: dropping it moves logits past the tolerance.

  (The dynamic case runs 12 tokens past its max_position_embeddings=8, so its
  NTK scaling is active.)
  """
  folder = saved_model(case)
  ids, mask = padded_batch(length=12)
  model = orj.from_pretrained(folder)
  out = np.asarray(model(jnp.asarray(ids), attention_mask=jnp.asarray(mask)).logits)
  theta = dict(orj.from_pretrained(folder).cfg.rope)["rope_theta"]
  unscaled = orj.from_pretrained(folder, rope_parameters={"rope_type": "default",
                                                          "rope_theta": theta})
  out2 = np.asarray(unscaled(jnp.asarray(ids), attention_mask=jnp.asarray(mask)).logits)
  assert np.abs(out - out2)[mask.astype(bool)].max() > 10 * TOL


def test_classifier_pools_last_non_pad_token():
  folder = saved_model("qwen2_cls")
  ids, mask = padded_batch()
  model = orj.from_pretrained(folder)
  out = model(jnp.asarray(ids), attention_mask=jnp.asarray(mask))
  assert out.logits.shape == (3, 1)
  # The score of a right-padded row equals the score of the same row cut at its end.
  n = int(mask[1].sum())
  alone = model(jnp.asarray(ids[1:2, :n]), attention_mask=jnp.asarray(mask[1:2, :n]))
  np.testing.assert_allclose(np.asarray(out.logits[1]), np.asarray(alone.logits[0]), atol=1e-5)


def test_sharded_export_has_index_and_reloads(tmp_path):
  folder = saved_model("qwen2_lm")
  model = orj.from_pretrained(folder)
  out_dir = tmp_path / "sharded"
  orj.save_pretrained(model, str(out_dir), max_shard_bytes=20_000)
  index = json.loads((out_dir / "model.safetensors.index.json").read_text())
  shards = set(index["weight_map"].values())
  assert len(shards) > 1 and all((out_dir / s).exists() for s in shards)
  ids, mask = padded_batch()
  reloaded = orj.from_pretrained(str(out_dir))
  a = model(jnp.asarray(ids), attention_mask=jnp.asarray(mask)).logits
  b = reloaded(jnp.asarray(ids), attention_mask=jnp.asarray(mask)).logits
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  np.testing.assert_allclose(_valid(torch_outputs(str(out_dir), ids, mask), mask),
                             _valid(np.asarray(a), mask), atol=TOL, rtol=0)


def test_tokenizer_files_are_copied(tmp_path):
  folder = saved_model("qwen2_lm")
  src = tmp_path / "src"
  model = orj.from_pretrained(folder)
  orj.save_pretrained(model, str(src))
  (src / "tokenizer_config.json").write_text('{"model_max_length": 7}')
  reloaded = orj.from_pretrained(str(src))
  orj.save_pretrained(reloaded, str(tmp_path / "dst"))
  assert (tmp_path / "dst" / "tokenizer_config.json").read_text() == '{"model_max_length": 7}'


def test_bf16_compute_with_fp32_master_weights():
  folder = saved_model("qwen3_lm_tied")
  ids, mask = padded_batch()
  ref = np.asarray(orj.from_pretrained(folder)(jnp.asarray(ids), attention_mask=jnp.asarray(mask)).logits)
  model = orj.from_pretrained(folder, dtype="bfloat16", param_dtype="float32")
  leaves = jax.tree.leaves(jax.tree.map(lambda x: x, __import__("flax").nnx.state(model)))
  assert all(x.dtype == jnp.float32 for x in leaves)
  out = model(jnp.asarray(ids), attention_mask=jnp.asarray(mask)).logits
  assert out.dtype == jnp.bfloat16
  err = np.abs(np.asarray(out, np.float32) - ref)[mask.astype(bool)]
  # bf16 has an 8-bit mantissa: close to fp32, but not equal.
  assert 0 < err.max() < 0.05 * np.abs(ref).max() + 0.05
