"""LoRA adapters: numerics, sharding axes, merged and PEFT exports against transformers / peft."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from omni_rrm_jax.models import lora
from omni_rrm_jax.models.hf_save import save_pretrained
from omni_rrm_jax.models.peft_save import save_peft_adapter
from omni_rrm_jax.models.pretrained import from_pretrained
from tests.models.hf_fixtures import padded_batch, saved_model

TOL = 1e-5


def _adapted(case: str, rank: int = 4, alpha: float = 8.0):
  """(base model, adapted model) of a saved case, the adapters' B random and nonzero."""
  src = saved_model(case)
  model = from_pretrained(src)
  lora.apply_lora(model, rank=rank, alpha=alpha, seed=1)
  for i, (_, layer) in enumerate(sorted(lora.adapted_layers(model).items(), key=str)):
    shape = layer.lora.b.get_value().shape
    layer.lora.b.set_value(0.05 * jax.random.normal(jax.random.key(i), shape))
  return from_pretrained(src), model


def _valid(logits, mask):
  return logits[mask.astype(bool)] if logits.ndim == 3 else logits


def test_adapter_is_the_low_rank_update_of_its_kernel():
  base, model = _adapted("qwen2_lm")
  ids, mask = padded_batch()
  layers = lora.adapted_layers(model)
  assert {str(p[-1]) for p in layers} == set(lora.LINEAR_LAYERS)
  assert len(layers) == 7 * 2  # 2 decoder layers
  # By hand: W + (alpha / rank) A B, folded into a copy of the base.
  for path, layer in layers.items():
    target = base
    for key in path:
      target = target[key] if isinstance(key, int) else getattr(target, key)
    a, b = np.asarray(layer.lora.a.get_value()), np.asarray(layer.lora.b.get_value())
    w = np.asarray(target.kernel.get_value())
    target.kernel.set_value(w + 2.0 * np.tensordot(a, b, axes=1))
  ours = np.asarray(model(ids, attention_mask=mask).logits)
  by_hand = np.asarray(base(ids, attention_mask=mask).logits)
  np.testing.assert_allclose(_valid(ours, mask), _valid(by_hand, mask), atol=TOL, rtol=0)


def test_zero_b_equals_base_and_without_adapters_is_the_base():
  src = saved_model("qwen2_lm")
  base = from_pretrained(src)
  ids, mask = padded_batch()
  ref = np.asarray(base(ids, attention_mask=mask).logits)
  lora.apply_lora(base, rank=2, alpha=4.0)
  np.testing.assert_array_equal(np.asarray(base(ids, attention_mask=mask).logits), ref)
  _, model = _adapted("qwen2_lm")
  graphdef, state = nnx.split(model)
  adapted = np.asarray(model(ids, attention_mask=mask).logits)
  assert np.abs(adapted - ref).max() > 1e-2  # the adapters do change the outputs
  off = nnx.merge(graphdef, lora.without_adapters(state))(ids, attention_mask=mask).logits
  np.testing.assert_array_equal(np.asarray(off), ref)


def test_adapters_keep_the_logical_axes_of_their_layer():
  _, model = _adapted("qwen2_lm")
  layer = model.model.layers[0].self_attn.q_proj
  assert layer.kernel.get_metadata()["logical_axes"] == ("embed", "q_heads", "head_dim")
  assert layer.lora.a.get_metadata()["logical_axes"] == ("embed", None)
  assert layer.lora.b.get_metadata()["logical_axes"] == (None, "q_heads", "head_dim")
  o_proj = model.model.layers[0].self_attn.o_proj
  assert o_proj.lora.a.get_metadata()["logical_axes"] == ("q_heads", "head_dim", None)
  assert isinstance(layer.lora.a, nnx.LoRAParam)


def test_unknown_target_is_one_error_naming_the_linear_layers():
  model = from_pretrained(saved_model("qwen2_lm"))
  with pytest.raises(ValueError, match=r"lora.targets \['qproj'\].*known: down_proj, gate_proj"):
    lora.apply_lora(model, rank=2, alpha=4.0, targets=("q_proj", "qproj"))
  with pytest.raises(ValueError, match="rank must be >= 1"):
    lora.apply_lora(model, rank=0, alpha=4.0)


@pytest.mark.parametrize("case", ["qwen2_lm", "qwen2_cls"])
def test_merged_and_peft_exports_reload_with_equal_logits(case, tmp_path):
  import peft
  import torch
  import transformers
  auto = (transformers.AutoModelForCausalLM if case.endswith("lm")
          else transformers.AutoModelForSequenceClassification)
  src = saved_model(case)
  _, model = _adapted(case)
  if case.endswith("cls"):  # the score head trains fully: a changed head must travel too
    model.score.kernel.set_value(model.score.kernel.get_value() * 1.5)
  ids, mask = padded_batch()
  ours = _valid(np.asarray(model(ids, attention_mask=mask).logits), mask)
  save_pretrained(model, str(tmp_path / "merged"))
  save_peft_adapter(model, str(tmp_path / "adapter"), base_model_path=src)
  with torch.no_grad():
    merged = auto.from_pretrained(str(tmp_path / "merged")).eval()
    merged_logits = merged(torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    peft_model = peft.PeftModel.from_pretrained(auto.from_pretrained(src).eval(),
                                                str(tmp_path / "adapter")).eval()
    peft_logits = peft_model(input_ids=torch.tensor(ids),
                             attention_mask=torch.tensor(mask)).logits.numpy()
  np.testing.assert_allclose(_valid(merged_logits, mask), ours, atol=TOL, rtol=0)
  np.testing.assert_allclose(_valid(peft_logits, mask), ours, atol=TOL, rtol=0)
  # The merged folder is a plain model: no adapter tensors, the base's names.
  from safetensors.numpy import load_file
  assert set(load_file(str(tmp_path / "merged" / "model.safetensors"))) == set(
      load_file(f"{src}/model.safetensors"))
  names = set(load_file(str(tmp_path / "adapter" / "adapter_model.safetensors")))
  assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in names
  assert ("base_model.model.score.weight" in names) == case.endswith("cls")


def test_merge_leaves_the_adapted_model_as_it_was():
  _, model = _adapted("qwen2_lm")
  ids, mask = padded_batch()
  before = np.asarray(model(ids, attention_mask=mask).logits)
  merged = lora.merge_lora(model)
  assert not lora.adapted_layers(merged) and lora.adapted_layers(model)
  np.testing.assert_array_equal(np.asarray(model(ids, attention_mask=mask).logits), before)
  np.testing.assert_allclose(np.asarray(merged(ids, attention_mask=jnp.asarray(mask)).logits),
                             before, atol=TOL, rtol=0)


def test_dropout_only_inside_its_block_and_per_key():
  _, model = _adapted("qwen2_lm")
  ids, mask = padded_batch()
  plain = np.asarray(model(ids, attention_mask=mask).logits)
  for _, layer in lora.adapted_layers(model).items():
    layer.lora.dropout = 0.5
  np.testing.assert_array_equal(np.asarray(model(ids, attention_mask=mask).logits), plain)
  with lora.lora_dropout(jax.random.key(0)):
    a = np.asarray(model(ids, attention_mask=mask).logits)
    a_again = np.asarray(model(ids, attention_mask=mask).logits)
  with lora.lora_dropout(jax.random.key(1)):
    b = np.asarray(model(ids, attention_mask=mask).logits)
  np.testing.assert_array_equal(a, a_again)
  assert np.abs(a - plain).max() > 1e-3 and np.abs(a - b).max() > 1e-3
