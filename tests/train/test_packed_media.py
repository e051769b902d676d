"""Packed multimodal rows (Qwen2.5-VL, Omni thinker) give the RM rewards, losses and
gradients, and the SFT loss and gradients, of the same examples padded one per row."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from omni_rrm_jax.data.batching import collate
from omni_rrm_jax.data.packing import MediaPacking, collate_packed, segment_key
from omni_rrm_jax.train.task_kind import task_kind
from tests.train.packed_media_rows import (FRAME_BUCKETS, PATCH_BUCKETS, rm_examples,
                                           sft_examples, tiny_model)

CENTER = 0.01
BUCKETS = (64, 128)
LENGTH = 160


def _batches(name: str, examples: list[dict], has_audio: bool):
  kind = task_kind(name)
  frames = FRAME_BUCKETS if has_audio else ()
  padded = collate(examples, kind=kind.batch, batch_size=len(examples), buckets=BUCKETS,
                   pad_id=0, patch_buckets=PATCH_BUCKETS, merge_unit=4,
                   audio_frame_buckets=frames)
  packed = collate_packed(examples, kind=kind.batch, num_rows=4, length=LENGTH, max_segments=4,
                          pad_id=0, media=MediaPacking(PATCH_BUCKETS, 4, frames))
  seg = packed[segment_key(kind.batch.token_fields[0])]
  # Rows really hold several examples, and several examples' media.
  media_rows = [len({int(s) for s in np.unique(seg[r][packed["media_index"][r] >= 0])})
                for r in range(len(seg))]
  assert max(media_rows) > 1, media_rows
  return kind, padded, packed


def _device(kind, batch):
  return {k: jnp.asarray(v) for k, v in kind.batch.select(batch).items()}


def _loss_grads_aux(model, kind, batch):
  """(loss, gradients, the loss's aux: (r_chosen, r_rejected) for rm), one jitted call."""
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  @jax.jit
  def f(p, rest, batch):
    loss_sum, aux = kind.loss(nnx.merge(graphdef, p, rest), batch, CENTER)
    return loss_sum / kind.normalizer(batch), aux

  (loss, aux), grads = jax.value_and_grad(f, has_aux=True)(params, rest, _device(kind, batch))
  return loss, grads, aux


def _assert_same_loss_and_grads(padded_out, packed_out):
  (loss_a, grads_a, _), (loss_b, grads_b, _) = padded_out, packed_out
  np.testing.assert_allclose(loss_b, loss_a, rtol=1e-5, atol=1e-6)
  paths_a = jax.tree_util.tree_flatten_with_path(grads_a)[0]
  for (path, a), b in zip(paths_a, jax.tree.leaves(grads_b)):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6, err_msg=jax.tree_util.keystr(path))
  # The encoders are trained through the packed rows too.
  assert max(float(jnp.abs(a).max()) for p, a in paths_a if "visual" in str(p)) > 1e-4


@pytest.mark.parametrize("family", ["vl", "omni"])
def test_packed_media_pairs_score_and_train_as_padded_ones(family):
  model = tiny_model(family, classifier=True)
  examples = rm_examples(model)
  kind, padded, packed = _batches("rm", examples, family == "omni")
  padded_out = _loss_grads_aux(model, kind, padded)
  packed_out = _loss_grads_aux(model, kind, packed)
  (r_c, r_r), (pr_c, pr_r) = padded_out[2], packed_out[2]
  assert pr_c.shape == packed["valid"].shape
  where = packed["index"] >= 0
  order = packed["index"][where]
  assert sorted(order) == list(range(len(examples)))
  np.testing.assert_allclose(np.asarray(pr_c)[where], np.asarray(r_c)[order], atol=1e-5)
  np.testing.assert_allclose(np.asarray(pr_r)[where], np.asarray(r_r)[order], atol=1e-5)
  _assert_same_loss_and_grads(padded_out, packed_out)


@pytest.mark.parametrize("family", ["vl", "omni"])
def test_packed_media_targets_train_as_padded_ones(family):
  model = tiny_model(family, classifier=False)
  kind, padded, packed = _batches("sft", sft_examples(model), family == "omni")
  np.testing.assert_allclose(float(kind.normalizer(_device(kind, packed))),
                             float(kind.normalizer(_device(kind, padded))))
  _assert_same_loss_and_grads(_loss_grads_aux(model, kind, padded),
                              _loss_grads_aux(model, kind, packed))
