"""Generation with image and video prompts: transformers parity, the KV cache, the encoders.

A tiny Qwen2.5-VL with peaked logits (`sharp_vl_model.py`) gets left-padded
prompts whose media come as the data pipeline makes them (row-aligned patch
buffers, layouts, M-RoPE positions, media index); transformers gets the same
pixels with its processors' flat layout.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import omni_rrm_jax as orj
from omni_rrm_jax.models import multimodal_decode
from omni_rrm_jax.models.decoder import init_cache
from omni_rrm_jax.models.media_inputs import media_inputs
from omni_rrm_jax.models.qwen2_5_vl import Qwen2_5_VLForConditionalGeneration
from omni_rrm_jax.sampling.params import SamplingParams
from omni_rrm_jax.sampling.sampler import compile_count, generate
from omni_rrm_jax.sampling.scoring import score_completions
from tests.models.test_qwen2_5_vl import IMAGE, PAD, VIDEO
from tests.sampling.sharp_vl_model import (Prompt, batch, hf_inputs, media, media_spec, sharp_vl,
                                           text)

N = 12
TOL = 1e-5
GREEDY = SamplingParams(greedy=True, max_new_tokens=N)
PATCHES = (128,)


@functools.cache
def model():
  return orj.from_pretrained(sharp_vl())


@functools.cache
def spec():
  return media_spec(model().cfg)


def image_prompts(seed: int = 0) -> list[Prompt]:
  """Three rows of different image sizes and text lengths (so different left padding)."""
  a, b, c = (1, 8, 12), (1, 4, 4), (1, 6, 10)
  return [Prompt([1] + text(3, 1) + media(IMAGE, a) + text(4, 2), images=(a,), seed=seed),
          Prompt([1] + text(2, 3) + media(IMAGE, b) + text(1, 4), images=(b,), seed=seed + 1),
          Prompt([1] + text(5, 5) + media(IMAGE, c) + text(2, 6), images=(c,), seed=seed + 2)]


def video_prompts() -> list[Prompt]:
  """A video ending the prompt whose temporal ids (0, 2, 5 at 1.25 s a patch) run past
  its spatial extent, so the prompt's largest position is not its last one and
  generation must continue from the last; an image plus a slow video; a text-only row."""
  v1, v2, img = (3, 4, 8), (2, 4, 4), (1, 4, 6)
  return [Prompt([1] + text(3, 7) + media(VIDEO, v1), videos=(v1,), seconds=(1.25,), seed=3),
          Prompt([1] + text(2, 8) + media(IMAGE, img) + text(2, 9) + media(VIDEO, v2)
                 + text(3, 10), images=(img,), videos=(v2,), seconds=(0.75,), seed=5),
          Prompt([1] + text(9, 11))]


def hf_greedy(prompts, ids_bt, mask_bt) -> np.ndarray:
  import torch
  import transformers
  hf = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(sharp_vl()).eval()
  hf.generation_config.eos_token_id = None
  with torch.no_grad():
    out = hf.generate(**hf_inputs(prompts, ids_bt, mask_bt), do_sample=False, max_new_tokens=N,
                      pad_token_id=PAD)
  return out[:, ids_bt.shape[1]:].numpy()


@pytest.mark.parametrize("kind", ["image", "video"])
def test_greedy_with_media_matches_transformers(kind):
  prompts = image_prompts() if kind == "image" else video_prompts()
  ids_bt, mask_bt, media_b = batch(prompts, spec(), PATCHES)
  out = generate(model(), ids_bt, mask_bt, GREEDY, 0, eos_ids=(), media=media_b)
  tokens_bn = np.asarray(out.tokens_bn)
  np.testing.assert_array_equal(tokens_bn, hf_greedy(prompts, ids_bt, mask_bt))
  assert len(set(map(tuple, tokens_bn))) == len(prompts)  # rows really differ
  if kind == "image":
    # Every row reads its pixels: other images under the same prompts move its log-probs.
    _, _, other = batch(image_prompts(seed=10), spec(), PATCHES)
    changed = generate(model(), ids_bt, mask_bt, GREEDY, 0, eos_ids=(), media=other)
    moved_b = np.abs(np.asarray(changed.logprobs_bn) - np.asarray(out.logprobs_bn)).max(axis=1)
    assert (moved_b > 1e-3).all()


STEPS = 5


@pytest.mark.parametrize("path", ["method", "generic"])
def test_cached_decode_equals_full_forward(path):
  """Prefill + decode steps through the cache give the logits of one full forward over
  the same tokens, media through the host-grid path, positions as `generate` places them."""
  prompts = video_prompts()
  ids_bt, mask_bt, media_b = batch(prompts, spec(), PATCHES)
  b, t = ids_bt.shape
  new_bn = np.random.RandomState(0).randint(3, 80, size=(b, STEPS)).astype(np.int32)
  full_ids = np.concatenate([ids_bt, new_bn], axis=1)
  full_mask = np.concatenate([mask_bt, np.ones_like(new_bn)], axis=1)
  positions = multimodal_decode.extend_positions(
      jnp.moveaxis(jnp.asarray(media_b["position_ids"]), 1, 0), jnp.asarray(mask_bt), STEPS)
  hf_kw = hf_inputs(prompts, ids_bt, mask_bt)
  pixel_kw = {k: np.asarray(hf_kw[k]) for k in ("pixel_values", "pixel_values_videos",
                                                  "image_grid_thw", "video_grid_thw",
                                                  "second_per_grid_ts")}
  ref_btv = np.asarray(nnx.jit(lambda m, pos: m(full_ids, attention_mask=full_mask,
                                                position_ids=pos, **pixel_kw).logits)(
      model(), positions))
  graphdef, state = nnx.split(model())
  device_media = {k: jnp.asarray(v) for k, v in media_b.items() if k != "vision_grid_thw"}

  @jax.jit
  def step(state, cache, ids, mask, media):
    m = nnx.merge(graphdef, state)
    kw = media_inputs(m, media) if media else {}
    if path == "method":
      out = m.call_cached(cache, ids, mask, **kw)
    else:
      out = multimodal_decode.call_cached(m, cache, ids, mask, **kw)
    return out.logits, out.cache

  cache = init_cache(model().model.cfg, b, t + STEPS + 2)
  logits_btv, cache = step(state, cache, jnp.asarray(ids_bt), jnp.asarray(mask_bt),
                           device_media)
  real = mask_bt.astype(bool)
  np.testing.assert_allclose(np.asarray(logits_btv)[real], ref_btv[:, :t][real], atol=TOL,
                             rtol=0)
  for i in range(STEPS):
    logits_btv, cache = step(state, cache, jnp.asarray(new_bn[:, i:i + 1]), None, None)
    np.testing.assert_allclose(np.asarray(logits_btv)[:, 0], ref_btv[:, t + i], atol=TOL, rtol=0)
  np.testing.assert_array_equal(np.asarray(cache.next_position_b),
                                np.asarray(positions)[0, :, -1] + 1)
  # Row 0's video outruns the text after it: continuing from the largest
  # position instead would be a different (and here wrong) rule.
  prompt_3bt = np.asarray(positions)[:, :, :t]
  assert prompt_3bt[:, 0].max() > prompt_3bt[0, 0, -1]


def test_encoders_run_once_per_prompt_and_samples_share_them(monkeypatch):
  """With G samples per prompt the vision encoder sees the B prompts (once per call), and
  sample g of prompt b reads prompt b's media: greedy rows equal the G=1 rows repeated.
  Same text, different images per prompt, so features repeated in the wrong order (or
  encoded per sample and mismatched) change the tokens."""
  shared_text = [1] + text(4, 12)
  grids = [(1, 8, 12), (1, 6, 10), (1, 8, 8)]
  prompts = [Prompt(shared_text + media(IMAGE, g) + text(3, 13), images=(g,), seed=20 + i)
             for i, g in enumerate(grids)]
  ids_bt, mask_bt, media_b = batch(prompts, spec(), PATCHES)
  single = np.asarray(generate(model(), ids_bt, mask_bt, GREEDY, 0, eos_ids=(),
                               media=media_b).tokens_bn)
  assert len(set(map(tuple, single))) == len(prompts)

  seen_rows, calls = [], []
  original = Qwen2_5_VLForConditionalGeneration.encode_vision_rows

  def counted(self, pixel_values_bnd, layout_b):
    seen_rows.append(pixel_values_bnd.shape[0])  # at trace time
    jax.debug.callback(lambda: calls.append(1))  # at run time
    return original(self, pixel_values_bnd, layout_b)

  monkeypatch.setattr(Qwen2_5_VLForConditionalGeneration, "encode_vision_rows", counted)
  g = 3  # a params value no other test compiles, so this call traces afresh
  out = generate(model(), ids_bt, mask_bt, SamplingParams(greedy=True, max_new_tokens=N,
                                                          num_samples=g),
                 0, eos_ids=(), media=media_b)
  tokens_bn = np.asarray(out.tokens_bn)
  jax.effects_barrier()
  assert seen_rows == [len(prompts)] and calls == [1]
  np.testing.assert_array_equal(tokens_bn, np.repeat(single, g, axis=0))


def test_sampling_with_media_is_reproducible_and_scores_as_sampled():
  prompts = image_prompts()
  ids_bt, mask_bt, media_b = batch(prompts, spec(), PATCHES)
  params = SamplingParams(temperature=1.0, max_new_tokens=N, num_samples=2)
  first = generate(model(), ids_bt, mask_bt, params, 7, eos_ids=(5,), media=media_b)
  again = generate(model(), ids_bt, mask_bt, params, 7, eos_ids=(5,), media=media_b)
  other = generate(model(), ids_bt, mask_bt, params, 8, eos_ids=(5,), media=media_b)
  for field in ("tokens_bn", "logprobs_bn", "mask_bn"):
    np.testing.assert_array_equal(np.asarray(getattr(first, field)),
                                  np.asarray(getattr(again, field)))
  assert (np.asarray(first.tokens_bn) != np.asarray(other.tokens_bn)).any()

  g = params.num_samples
  rep = lambda x: np.repeat(x, g, axis=0)  # noqa: E731
  sampled = np.asarray(first.logprobs_bn)
  per_prompt = score_completions(model(), rep(ids_bt), rep(mask_bt), first.tokens_bn,
                                 first.mask_bn, media=media_b, rows_per_example=g)
  np.testing.assert_allclose(np.asarray(per_prompt), sampled, atol=TOL, rtol=0)
  per_row = score_completions(model(), rep(ids_bt), rep(mask_bt), first.tokens_bn,
                              first.mask_bn, media={k: rep(v) for k, v in media_b.items()})
  np.testing.assert_allclose(np.asarray(per_row), sampled, atol=TOL, rtol=0)
  # Scoring without the images is far off: the check above sees the media.
  blind = score_completions(model(), rep(ids_bt), rep(mask_bt), first.tokens_bn, first.mask_bn)
  assert np.abs(np.asarray(blind) - sampled).max() > 100 * TOL


def test_new_images_of_the_same_bucketed_shapes_reuse_the_compiled_sampler():
  ids_bt, mask_bt, media_b = batch(image_prompts(), spec(), PATCHES, multiple=48)
  generate(model(), ids_bt, mask_bt, GREEDY, 0, eos_ids=(), media=media_b)
  before = compile_count()
  d, e = (1, 4, 8), (1, 10, 6)
  others = [Prompt([1] + text(6, 14) + media(IMAGE, d) + text(2, 15), images=(d,), seed=30),
            Prompt([1] + media(IMAGE, e) + text(1, 16), images=(e,), seed=31),
            Prompt([1] + text(8, 17), seed=32)]
  ids2, mask2, media2 = batch(others, spec(), PATCHES, multiple=48)
  assert ids2.shape == ids_bt.shape
  generate(model(), ids2, mask2, GREEDY, 0, eos_ids=(), media=media2)
  assert compile_count() == before


def test_media_must_match_the_prompts():
  ids_bt, mask_bt, media_b = batch(image_prompts(), spec(), PATCHES)
  with pytest.raises(ValueError, match="match the left-padded prompts"):
    generate(model(), ids_bt[:, 1:], mask_bt[:, 1:], GREEDY, 0, eos_ids=(), media=media_b)
  text_model = orj.from_config("Qwen2ForCausalLM", dict(
      vocab_size=101, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
      num_attention_heads=4, num_key_value_heads=2), seed=0)
  with pytest.raises(ValueError, match="no vision encoder"):
    generate(text_model, ids_bt, mask_bt, GREEDY, 0, eos_ids=(), media=media_b)
