"""`scan_layers=True`: stacked decoder layers run with `nnx.scan` compute what the layer list does.

Every comparison loads the same Hugging Face folder twice, as a list of layers
and stacked, so the two hold the same weights; values are compared per layer
under the checkpoint's tensor names (`hf_weights.layer_paths`).
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file

import omni_rrm_jax as orj
from omni_rrm_jax.models import hf_weights
from omni_rrm_jax.models.architectures import get_architecture
from omni_rrm_jax.models.decoder import init_cache
from omni_rrm_jax.models.factory import hf_config_for
from omni_rrm_jax.models.lora import apply_lora, merge_lora
from omni_rrm_jax.models.peft_save import peft_tensors
from omni_rrm_jax.models.pretrained import from_pretrained
from omni_rrm_jax.sampling.params import SamplingParams
from omni_rrm_jax.sampling.sampler import generate
from tests.models.hf_fixtures import padded_batch, saved_model, torch_outputs

TOL = 1e-5  # scanned vs unscanned: the same fp32 math, reassociated at most
PARITY_TOL = 1e-4  # against transformers, as tests/models/test_parity.py


def _pair(case: str, remat: bool = False):
  folder = saved_model(case)
  return (from_pretrained(folder, remat=remat),
          from_pretrained(folder, remat=remat, scan_layers=True))


def per_layer(state: nnx.State) -> dict[str, np.ndarray]:
  """Every array of `state` by its checkpoint name, stacked layers split per layer."""
  out = {}
  for path, variable in nnx.to_flat_state(state):
    value = np.asarray(variable.get_value())
    for layer_path, index in hf_weights.layer_paths(path, variable.get_metadata(), value.shape):
      out[hf_weights.hf_name(layer_path)] = value if index is None else value[index]
  return out


def _assert_same_arrays(got: dict, want: dict, atol: float, relative: bool = False) -> None:
  """Equal names and values; with `relative`, `atol` is relative to each tensor's largest
  magnitude (fp32 rounding of gradients in the hundreds)."""
  assert sorted(got) == sorted(want)
  for name in want:
    scale = max(1.0, float(np.abs(want[name]).max())) if relative else 1.0
    np.testing.assert_allclose(got[name], want[name], atol=atol * scale, rtol=0, err_msg=name)


def test_scanned_parameters_are_stacked_on_a_replicated_layers_axis():
  plain, scanned = _pair("qwen2_lm")
  kernel = scanned.model.layers.self_attn.q_proj.kernel
  assert kernel.get_value().shape == (2, 32, 4, 8)
  assert kernel.get_metadata()["logical_axes"] == ("layers", "embed", "q_heads", "head_dim")
  assert isinstance(plain.model.layers, nnx.List)
  _assert_same_arrays(per_layer(nnx.state(scanned, nnx.Param)),
                      per_layer(nnx.state(plain, nnx.Param)), atol=0)


# The default run keeps one case per branch of the scanned stack: one window for
# every layer (qwen3_lm_tied, with qk-norm and tied embeddings), a sliding and a
# full layer (qwen2_lm_sliding, with q/k/v biases; again under remat) and a
# classifier head (qwen2_cls). Plain Qwen2 layers (a subset of
# qwen2_lm_sliding's weights, with qwen3_lm_tied's single mask), Llama layers
# (rotary tables are built outside the stack) and a second remat case take the
# same paths: slow.
_SAME_PATH = pytest.mark.slow


@pytest.mark.parametrize("case,remat", [
    ("qwen3_lm_tied", False), ("qwen2_lm_sliding", False), ("qwen2_cls", False),
    ("qwen2_lm_sliding", True),
    pytest.param("qwen2_lm", False, marks=_SAME_PATH),
    pytest.param("llama_lm_llama3", False, marks=_SAME_PATH),
    pytest.param("qwen3_lm_tied", True, marks=_SAME_PATH)])
def test_logits_and_gradients_equal_the_layer_list(case, remat):
  ids, mask = padded_batch()
  ids, mask = jnp.asarray(ids), jnp.asarray(mask)
  grads, logits = {}, {}
  for name, model in zip(("plain", "scanned"), _pair(case, remat)):
    graphdef, params = nnx.split(model, nnx.Param)

    def loss(params, graphdef=graphdef):
      out = nnx.merge(graphdef, params)(ids, attention_mask=mask).logits
      return jnp.sum(jnp.sin(out)), out  # a loss that weighs every logit differently

    (_, logits[name]), grads[name] = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
  valid = np.asarray(mask, bool)
  if logits["plain"].ndim == 3:
    np.testing.assert_allclose(np.asarray(logits["scanned"])[valid],
                               np.asarray(logits["plain"])[valid], atol=TOL, rtol=0)
  else:
    np.testing.assert_allclose(logits["scanned"], logits["plain"], atol=TOL, rtol=0)
  _assert_same_arrays(per_layer(grads["scanned"]), per_layer(grads["plain"]), atol=TOL,
                      relative=True)


@pytest.mark.parametrize("case", ["qwen3_lm_tied", "qwen2_lm_sliding"])
def test_cached_greedy_decoding_equals_the_layer_list(case):
  ids, mask = padded_batch(length=8)
  # Left-padded prompts, as the sampler takes them.
  ids = np.stack([np.concatenate([r[m == 0], r[m == 1]]) for r, m in zip(ids, mask)])
  mask = np.sort(mask, axis=1)
  plain, scanned = _pair(case)
  cache = init_cache(scanned.cfg, 3, 8)
  # [L, B, K, D, S]: keys with their slots last, values [L, B, K, S, D].
  assert cache.k_bkds.shape == (2, 3, 2, 8 if case != "qwen3_lm_tied" else 16, 8)
  assert cache.v_bksd.shape == (2, 3, 2, 8, 8 if case != "qwen3_lm_tied" else 16)
  params = SamplingParams(greedy=True, max_new_tokens=6)
  outs = [generate(m, ids, mask, params, 0, eos_ids=(2,)) for m in (plain, scanned)]
  np.testing.assert_array_equal(np.asarray(outs[1].tokens_bn), np.asarray(outs[0].tokens_bn))
  np.testing.assert_allclose(np.asarray(outs[1].logprobs_bn), np.asarray(outs[0].logprobs_bn),
                             atol=TOL, rtol=0)


def test_hf_round_trip_through_a_scanned_model(tmp_path):
  case = "qwen2_lm_sliding"
  folder = saved_model(case)
  scanned = from_pretrained(folder, scan_layers=True)
  out = orj.save_pretrained(scanned, str(tmp_path / "out"))
  original = load_file(os.path.join(folder, "model.safetensors"))
  written = load_file(os.path.join(out, "model.safetensors"))
  assert sorted(written) == sorted(original)
  for name, tensor in original.items():
    np.testing.assert_array_equal(written[name], tensor, err_msg=name)
  with open(os.path.join(out, "config.json")) as f:
    assert json.load(f)["num_hidden_layers"] == 2
  ids, mask = padded_batch()
  ours = np.asarray(scanned(jnp.asarray(ids), attention_mask=jnp.asarray(mask)).logits)
  theirs = torch_outputs(out, ids, mask)
  valid = mask.astype(bool)
  np.testing.assert_allclose(ours[valid], theirs[valid], atol=PARITY_TOL, rtol=0)


def _adapted_pair(case: str):
  """A list-of-layers model and a scanned one with the same (non-zero) adapters."""
  plain, scanned = _pair(case)
  for model in (plain, scanned):
    apply_lora(model, rank=2, alpha=4.0, targets=("q_proj", "v_proj", "down_proj"))
  rng = np.random.default_rng(0)
  for path, variable in nnx.to_flat_state(nnx.state(plain, nnx.LoRAParam)):
    variable.set_value(jnp.asarray(rng.normal(0, 0.3, variable.get_value().shape), jnp.float32))
  # Copy the list's adapters into the stacked ones, layer by layer.
  by_name = per_layer(nnx.state(plain, nnx.LoRAParam))
  for path, variable in nnx.to_flat_state(nnx.state(scanned, nnx.LoRAParam)):
    value = variable.get_value()
    parts = hf_weights.layer_paths(path, variable.get_metadata(), value.shape)
    assert parts[0][1] is not None, "adapters of stacked layers are stacked"
    variable.set_value(jnp.stack([by_name[hf_weights.hf_name(p)] for p, _ in parts]))
  return plain, scanned


def test_lora_on_scanned_layers_equals_lora_on_the_layer_list():
  plain, scanned = _adapted_pair("qwen2_cls")
  adapter = scanned.model.layers.self_attn.q_proj.lora
  assert adapter.a.get_value().shape == (2, 32, 2)
  assert adapter.a.get_metadata()["logical_axes"] == ("layers", "embed", None)
  ids, mask = (jnp.asarray(x) for x in padded_batch())
  want = np.asarray(plain(ids, attention_mask=mask).logits)
  base = np.asarray(from_pretrained(saved_model("qwen2_cls"))(ids, attention_mask=mask).logits)
  assert np.abs(want - base).max() > 1e-3  # the adapters change the output
  np.testing.assert_allclose(np.asarray(scanned(ids, attention_mask=mask).logits), want,
                             atol=TOL, rtol=0)
  # Merged: the same kernels, and the same outputs as the adapted model.
  merged_plain, merged_scanned = merge_lora(plain), merge_lora(scanned)
  _assert_same_arrays(per_layer(nnx.state(merged_scanned, nnx.Param)),
                      per_layer(nnx.state(merged_plain, nnx.Param)), atol=TOL)
  np.testing.assert_allclose(np.asarray(merged_scanned(ids, attention_mask=mask).logits), want,
                             atol=TOL, rtol=0)
  # PEFT adapter folder: the same tensors, targets and settings.
  t_scan, targets_scan, settings_scan = peft_tensors(scanned)
  t_plain, targets_plain, settings_plain = peft_tensors(plain)
  assert targets_scan == targets_plain and settings_scan == settings_plain
  _assert_same_arrays(t_scan, t_plain, atol=0)


def _abstract(layers: int, *, scan: bool, remat: bool = False):
  arch = get_architecture("Qwen2ForCausalLM")
  hf = hf_config_for(arch.name, dict(vocab_size=64, hidden_size=32, intermediate_size=48,
                                     num_hidden_layers=layers, num_attention_heads=4,
                                     num_key_value_heads=2))
  cfg = arch.make_config(hf, scan_layers=scan, remat=remat)
  return nnx.eval_shape(lambda: arch.module(cfg, rngs=nnx.Rngs(0)))


def test_the_scanned_program_does_not_grow_with_depth():
  ids = jnp.zeros((1, 8), jnp.int32)
  sizes = {}
  for scan in (False, True):
    for layers in (2, 6):
      graphdef, params = nnx.split(_abstract(layers, scan=scan), nnx.Param)
      jaxpr = jax.make_jaxpr(lambda p, g=graphdef: nnx.merge(g, p)(ids).logits)(params)
      sizes[scan, layers] = len(jaxpr.jaxpr.eqns)
  assert sizes[True, 2] == sizes[True, 6]
  assert sizes[False, 6] > sizes[False, 2]


@pytest.mark.parametrize("remat", [True, False])
def test_remat_wraps_the_scanned_layer_body(remat):
  from tests.models.test_remat import _count_checkpoints
  graphdef, params = nnx.split(_abstract(4, scan=True, remat=remat), nnx.Param)
  ids = jnp.zeros((1, 8), jnp.int32)
  grad = jax.grad(lambda p: jnp.sum(nnx.merge(graphdef, p)(ids).logits))
  assert _count_checkpoints(jax.make_jaxpr(grad)(params).jaxpr) == (1 if remat else 0)


def test_a_frozen_single_layer_is_refused_with_scanned_layers():
  from omni_rrm_jax.config.tasks import rm_config
  from omni_rrm_jax.config.validate import problems
  c = rm_config()
  c.model.scan_layers = True
  c.model.freeze = ("model.layers.0",)
  lines = problems(c, process_count=1, device_count=8)
  assert any(line.startswith("model.freeze=") and "scan_layers" in line for line in lines)


def _omni_pair():
  from tests.models.test_qwen2_5_omni import hf_model
  folder = hf_model()[1]
  return from_pretrained(folder), from_pretrained(folder, scan_layers=True)


def test_omni_thinker_text_decoder_scanned_equals_the_layer_list(tmp_path):
  from tests.models.test_qwen2_5_omni import batch, text
  plain, scanned = _omni_pair()
  assert scanned.model.layers.mlp.up_proj.kernel.get_value().shape[0] == 2
  ids, mask = batch([[1] + text(11, 0), [1] + text(6, 1)], side="left")
  logits = [np.asarray(nnx.jit(lambda m: m(ids, attention_mask=mask).logits)(m))
            for m in (plain, scanned)]
  valid = mask.astype(bool)
  np.testing.assert_allclose(logits[1][valid], logits[0][valid], atol=TOL, rtol=0)
  # Export: the same files as from the layer list.
  a = load_file(os.path.join(orj.save_pretrained(plain, str(tmp_path / "a")),
                             "model.safetensors"))
  b = load_file(os.path.join(orj.save_pretrained(scanned, str(tmp_path / "b")),
                             "model.safetensors"))
  _assert_same_arrays(b, a, atol=0)


@pytest.mark.slow
def test_omni_thinker_scanned_with_media_and_cached_decoding():
  from tests.models.test_qwen2_5_omni import AUDIO, batch, image, media_kwargs, text
  plain, scanned = _omni_pair()
  grid = (1, 8, 12)
  rows = [[1] + text(3, 2) + image(grid) + text(2, 3) + [AUDIO] * 5 + text(2, 4),
          [1] + text(6, 5)]
  ids, mask = batch(rows, side="left")
  _, host_kw, array_kw = media_kwargs(images=[grid], audio_frames=[20], seed=1)
  logits = [np.asarray(m(ids, attention_mask=mask, **host_kw, **array_kw).logits)
            for m in (plain, scanned)]
  valid = mask.astype(bool)
  np.testing.assert_allclose(logits[1][valid], logits[0][valid], atol=TOL, rtol=0)
  # Cached greedy decoding through the multimodal path of the sampler.
  params = SamplingParams(greedy=True, max_new_tokens=4)
  outs = [generate(m, ids[1:], mask[1:], params, 0, eos_ids=(2,)) for m in (plain, scanned)]
  np.testing.assert_array_equal(np.asarray(outs[1].tokens_bn), np.asarray(outs[0].tokens_bn))


def test_scanned_parameters_are_born_sharded_with_the_layers_axis_replicated():
  from omni_rrm_jax.sharding.mesh import make_mesh
  mesh = make_mesh({"data": 1, "fsdp": 4, "tensor": 2})
  loaded = orj.from_pretrained(saved_model("qwen2_lm"), mesh=mesh, scan_layers=True)
  initialised = orj.from_config("Qwen2ForCausalLM", dict(
      vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
      num_attention_heads=4, num_key_value_heads=2), mesh=mesh, scan_layers=True)
  for model in (loaded, initialised):
    kernel = model.model.layers.mlp.gate_proj.kernel.get_value()
    assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
  # Each layer draws its own initial weights.
  kernel = np.asarray(initialised.model.layers.mlp.gate_proj.kernel.get_value())
  assert kernel.shape[0] == 3 and not np.allclose(kernel[0], kernel[1])
