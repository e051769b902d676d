"""`attention=` reaches the decoder layers, and each setting keeps parity and decoding."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

import omni_rrm_jax as orj
from omni_rrm_jax.models.config import DecoderConfig
from omni_rrm_jax.models.architectures import get_architecture
from omni_rrm_jax.models.factory import from_config, hf_config_for
from omni_rrm_jax.sampling.params import SamplingParams
from omni_rrm_jax.sampling.sampler import generate
from tests.models.hf_fixtures import PAD, padded_batch, saved_model, torch_outputs

TOL = 1e-4  # the parity tests' tolerance against transformers


@pytest.fixture(scope="module")
def folder():
  # GQA, a sliding-window layer and a batch with left and right padding.
  return saved_model("qwen2_lm_sliding")


@pytest.mark.parametrize("attention", ["xla", "flash", "blockwise", "cpu_fused"])
def test_logits_match_transformers_and_the_reference(folder, attention):
  ids, mask = padded_batch(length=12)
  ref_torch = torch_outputs(folder, ids, mask)
  reference = orj.from_pretrained(folder)
  model = orj.from_pretrained(folder, attention=attention)
  assert all(layer.self_attn.implementation == attention for layer in model.model.layers)
  run = lambda m: np.asarray(m(jnp.asarray(ids), attention_mask=jnp.asarray(mask)).logits)  # noqa: E731
  out, out_ref = run(model), run(reference)
  valid = mask.astype(bool)
  np.testing.assert_allclose(out[valid], ref_torch[valid], atol=TOL, rtol=0)
  # Every position, padding included (a fully masked left-pad query too).
  np.testing.assert_allclose(out, out_ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("attention", ["flash", "blockwise", "cpu_fused"])
def test_cached_greedy_decoding_matches_the_reference(folder, attention):
  """Prefill over left-padded prompts, then one-token steps over the cache."""
  ids, mask = padded_batch(seed=1, length=8)
  ids, mask = ids[[0, 2]], mask[[0, 2]]  # a full row and a left-padded one
  params = SamplingParams(greedy=True, max_new_tokens=4)
  outs = {a: generate(orj.from_pretrained(folder, attention=a), ids, mask, params, 0,
                      eos_ids=(2,), pad_id=PAD) for a in ("reference", attention)}
  np.testing.assert_array_equal(np.asarray(outs[attention].tokens_bn),
                                np.asarray(outs["reference"].tokens_bn))
  np.testing.assert_allclose(np.asarray(outs[attention].logprobs_bn),
                             np.asarray(outs["reference"].logprobs_bn), atol=1e-5, rtol=0)


def test_setting_reaches_every_text_decoder():
  text = dict(vocab_size=101, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
              num_attention_heads=4, num_key_value_heads=2)
  model = from_config("Qwen2ForCausalLM", text, attention="xla")
  assert {layer.self_attn.implementation for layer in model.model.layers} == {"xla"}
  mm_text = dict(text, rope_parameters={"rope_type": "default", "rope_theta": 1e4,
                                        "mrope_section": [1, 1, 2]})
  vision = dict(depth=1, hidden_size=32, intermediate_size=40, num_heads=4, patch_size=2,
                temporal_patch_size=2, spatial_merge_size=2, window_size=8,
                out_hidden_size=32, fullatt_block_indexes=[0])
  audio = dict(d_model=32, encoder_layers=1, encoder_attention_heads=4, encoder_ffn_dim=64,
               output_dim=32)
  for name, hf in [
      ("Qwen2_5_VLForConditionalGeneration",
       dict(text_config=mm_text, vision_config=vision, image_token_id=90, video_token_id=91)),
      ("Qwen2_5OmniThinkerForConditionalGeneration",
       dict(text_config=mm_text, vision_config=vision, audio_config=audio,
            image_token_index=90, video_token_index=91, audio_token_index=92))]:
    arch = get_architecture(name)
    assert arch.make_config(hf_config_for(name, hf)).text.attention == "reference"
    assert arch.make_config(hf_config_for(name, hf), attention="flash").text.attention == "flash"


def test_unknown_setting_is_one_clear_error():
  cfg = DecoderConfig(vocab_size=8, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=4)
  assert cfg.attention == "reference"
  with pytest.raises(ValueError, match="attention 'fast' is not one of reference, xla, cudnn, "
                                       "flash, blockwise, cpu_fused"):
    dataclasses.replace(cfg, attention="fast")
