"""Generation with the Qwen2.5-Omni thinker: images, a video and audio clips in the prompts.

The thinker has no `call_cached` of its own; the sampler and
`multimodal_decode` drive its `TextModel` with the row media
(`media_inputs`: vision and audio tokens concatenated). Prompts are built as
the data pipeline builds them (tests/models/test_omni_rows.py's examples),
transformers gets the processors' flat layout.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from omni_rrm_jax.data.media_batching import collate_media, example_arrays
from omni_rrm_jax.models import multimodal_decode
from omni_rrm_jax.models.decoder import init_cache
from omni_rrm_jax.models.media_inputs import media_inputs
from omni_rrm_jax.sampling.params import SamplingParams
from omni_rrm_jax.sampling.prompts import left_pad, left_pad_media
from omni_rrm_jax.sampling.sampler import generate
from omni_rrm_jax.sampling.scoring import score_completions
from tests.models.test_omni_rows import (FRAME_BUCKETS, PATCH_BUCKETS, example, flat_kwargs,
                                         spec_for)
from tests.models.test_qwen2_5_omni import (PAD, audio, flax_model, hf_model, image, text,
                                            video)

N = 10
STEPS = 4
TOL = 1e-5


@functools.cache
def prompts():
  """(ids [B, T] left-padded, mask, media keys, rows): an image and a clip, a video
  and a clip, a clip alone, text only."""
  rng = np.random.default_rng(1)
  img, vid = (1, 4, 6), (3, 4, 4)
  rows = [
      example(rng, [1] + text(2, 50) + image(img) + text(2, 51) + audio(37) + text(3, 52),
              images=[img], frames=37),
      example(rng, [1] + text(3, 53) + video(vid) + text(1, 54) + audio(20) + text(2, 55),
              video_grid=vid, seconds=1.25, frames=20),
      example(rng, [1] + text(4, 56) + audio(9) + text(2, 57), frames=9),
      example(rng, [1] + text(6, 58)),
  ]
  spec = spec_for(flax_model())
  ids_bt, mask_bt = left_pad([ids for ids, _ in rows], PAD, multiple=8)
  collated = collate_media([example_arrays(ids, m, spec) for ids, m in rows],
                           length=ids_bt.shape[1], patch_buckets=PATCH_BUCKETS, merge_unit=4,
                           audio_frame_buckets=FRAME_BUCKETS)
  media = left_pad_media(collated, [len(ids) for ids, _ in rows])
  return ids_bt, mask_bt, media, rows


def test_greedy_matches_transformers():
  import torch
  ids_bt, mask_bt, media, rows = prompts()
  out = generate(flax_model(), ids_bt, mask_bt, SamplingParams(greedy=True, max_new_tokens=N),
                 0, eos_ids=(), media=media)
  flat = {k: torch.tensor(v) for k, v in flat_kwargs(rows).items()}
  with torch.no_grad():
    ref = hf_model()[0].generate(
        input_ids=torch.tensor(ids_bt).long(), attention_mask=torch.tensor(mask_bt).long(),
        **flat, do_sample=False, max_new_tokens=N, pad_token_id=PAD, eos_token_id=None)
  tokens_bn = np.asarray(out.tokens_bn)
  np.testing.assert_array_equal(tokens_bn, ref[:, ids_bt.shape[1]:].numpy())
  assert len(set(map(tuple, tokens_bn))) == len(rows)


def test_cached_decode_equals_full_forward():
  ids_bt, mask_bt, media, rows = prompts()
  b, t = ids_bt.shape
  new_bn = np.random.RandomState(3).randint(3, 80, size=(b, STEPS)).astype(np.int32)
  full_ids = np.concatenate([ids_bt, new_bn], axis=1)
  full_mask = np.concatenate([mask_bt, np.ones_like(new_bn)], axis=1)
  positions = multimodal_decode.extend_positions(
      jnp.moveaxis(jnp.asarray(media["position_ids"]), 1, 0), jnp.asarray(mask_bt), STEPS)
  model = flax_model()
  ref_btv = np.asarray(model(full_ids, attention_mask=full_mask, position_ids=positions,
                             **flat_kwargs(rows)).logits)
  graphdef, state = nnx.split(model)
  device_media = {k: jnp.asarray(v) for k, v in media.items() if k != "vision_grid_thw"}

  @jax.jit
  def step(state, cache, ids, mask, media):
    m = nnx.merge(graphdef, state)
    out = multimodal_decode.call_cached(m, cache, ids, mask,
                                        **(media_inputs(m, media) if media else {}))
    return out.logits, out.cache

  cache = init_cache(model.model.cfg, b, t + STEPS)
  logits_btv, cache = step(state, cache, jnp.asarray(ids_bt), jnp.asarray(mask_bt),
                           device_media)
  real = mask_bt.astype(bool)
  np.testing.assert_allclose(np.asarray(logits_btv)[real], ref_btv[:, :t][real], atol=TOL,
                             rtol=0)
  for i in range(STEPS):
    logits_btv, cache = step(state, cache, jnp.asarray(new_bn[:, i:i + 1]), None, None)
    np.testing.assert_allclose(np.asarray(logits_btv)[:, 0], ref_btv[:, t + i], atol=TOL, rtol=0)


def test_sampled_logprobs_rescore_with_the_audio():
  ids_bt, mask_bt, media, _ = prompts()
  g = 2
  out = generate(flax_model(), ids_bt, mask_bt, SamplingParams(max_new_tokens=N, num_samples=g),
                 5, eos_ids=(), media=media)
  rep = lambda x: np.repeat(x, g, axis=0)  # noqa: E731
  scores = score_completions(flax_model(), rep(ids_bt), rep(mask_bt), out.tokens_bn,
                             out.mask_bn, media=media, rows_per_example=g)
  np.testing.assert_allclose(np.asarray(scores), np.asarray(out.logprobs_bn), atol=TOL, rtol=0)
  # Without the first clip's features the first prompt's samples score differently.
  silent = dict(media, input_features=np.where(np.arange(len(ids_bt))[:, None, None] == 0, 0.0,
                                               media["input_features"]))
  moved = score_completions(flax_model(), rep(ids_bt), rep(mask_bt), out.tokens_bn, out.mask_bn,
                            media=silent, rows_per_example=g)
  diff_b = np.abs(np.asarray(moved) - np.asarray(out.logprobs_bn)).max(axis=1)
  assert (diff_b[:g] > 1e-3).all() and (diff_b[g:] < TOL).all()
