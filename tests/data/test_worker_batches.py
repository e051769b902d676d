"""Batches padded in the worker processes: the same stream for any worker count, exact resume.

With one process the workers encode and pad whole batches (media arrays
crossing to the main process in shared memory, small ones pickled). These
tests hold that to the pipeline's guarantees: the same seed gives the same
batches with 0 or 2 workers as padding in the main process does, an
iterator restored mid-epoch continues with the batches an uninterrupted run
gives next, and a corrupt file is one counted invalid row, wherever the
batch was built.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from transformers import AutoTokenizer

from omni_rrm_jax.core.batch_contract import RM_BATCH
from omni_rrm_jax.data.media.config import MediaConfig
from omni_rrm_jax.data.media_batching import MediaSpec, media_token_ids
from omni_rrm_jax.data.pipeline import make_dataset
from omni_rrm_jax.data.tokenize import INVALID_REASONS, ExampleEncoder
from omni_rrm_jax.data.tokenizer_train import train_tiny_tokenizer
from omni_rrm_jax.models.qwen2_5_vl import HostInputs
from omni_rrm_jax.synthetic.corpus import corpus
from omni_rrm_jax.synthetic.mixture import mixed_pairs

MEDIA_CFG = MediaConfig(image_min_pixels=56 * 56, image_max_pixels=112 * 112,
                        video_min_pixels=56 * 56, video_max_pixels=56 * 56, video_max_frames=4)
BATCH = 4
# 8 good records and a corrupt one, repeated: batches run across epoch ends.
RECORDS = 9
STEPS = 7  # 28 rows: three epochs and one row
BAD_MEDIA = INVALID_REASONS.index("bad media")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  """(records, media encoder, make_dataset keywords)."""
  root = tmp_path_factory.mktemp("worker_batches")
  good = mixed_pairs(8, 7, ("image", "video"), media_root=str(root))
  (root / "images" / "zero.png").write_bytes(b"")
  bad = dataclasses.replace(good[0], id="zero_png",
                            media={"images": ["images/zero.png"], "video": None, "audio": None})
  tok_dir = tmp_path_factory.mktemp("tok")
  train_tiny_tokenizer(corpus(good) + ["the cat sat on the mat"] * 20, tok_dir, vocab_size=512)
  tok = AutoTokenizer.from_pretrained(str(tok_dir))
  ids = media_token_ids(tok)
  host = HostInputs(image_token_id=ids["image"], video_token_id=ids["video"],
                    spatial_merge_size=2, window_size=56, patch_size=14, temporal_patch_size=2,
                    tokens_per_second=2.0)
  encoder = ExampleEncoder(tok, 128, RM_BATCH, media=MediaSpec(str(root), MEDIA_CFG, host,
                                                               max_patches=64))
  kw = dict(batch_size=BATCH, buckets=(64, 128), pad_id=tok.pad_token_id,
            patch_buckets=(0, 32, 64))
  return good[:4] + [bad] + good[4:], encoder, kw


def _take(it, n: int) -> list[dict[str, np.ndarray]]:
  return [next(it) for _ in range(n)]


def _assert_same(got: list[dict[str, np.ndarray]], want: list[dict[str, np.ndarray]]) -> None:
  assert len(got) == len(want)
  for step, (g, w) in enumerate(zip(got, want)):
    assert sorted(g) == sorted(w), step
    for key in w:
      assert g[key].dtype == w[key].dtype, (step, key)
      np.testing.assert_array_equal(g[key], w[key], err_msg=f"batch {step}, {key}")


@pytest.fixture(scope="module")
def reference(world):
  """`STEPS` batches, padded in the main process after the encoding.

  (The path of several processes, which agree on buckets before padding; a
  pass-through `agree` takes it with one.)
  """
  records, encoder, kw = world
  return _take(iter(make_dataset(records, encoder, seed=5, agree=lambda needs: needs, **kw)),
               STEPS)


def _rows(batches, key: str) -> np.ndarray:
  return np.concatenate([b[key] for b in batches])


def test_reference_stream_is_reshuffled_and_counts_the_bad_file(world, reference):
  records, encoder, kw = world
  # Repeats count the index on (epoch e's record i: e * RECORDS + i).
  index = _rows(reference, "index") % RECORDS
  reason = _rows(reference, "invalid_reason")
  valid = _rows(reference, "valid")
  epochs = [slice(e * RECORDS, (e + 1) * RECORDS) for e in range(3)]
  for epoch in epochs:
    assert sorted(index[epoch]) == list(range(RECORDS))
    assert (reason[epoch] == BAD_MEDIA).sum() == 1 and valid[epoch].sum() == RECORDS - 1
  assert (index[epochs[0]] != index[epochs[1]]).any()  # each epoch has its own order
  other = _take(iter(make_dataset(records, encoder, seed=6, **kw)), STEPS)
  assert (_rows(other, "index") % RECORDS != index).any()


@pytest.mark.parametrize("workers", [0, 2])
def test_same_seed_same_batches_and_mid_epoch_resume(world, reference, workers):
  records, encoder, kw = world
  it = iter(make_dataset(records, encoder, seed=5, worker_count=workers, **kw))
  head = _take(it, 2)  # stop inside the first epoch
  state = it.get_state()
  tail = _take(it, len(reference) - 2)
  if workers:
    it.close()
  _assert_same(head + tail, reference)

  resumed = iter(make_dataset(records, encoder, seed=5, worker_count=workers, **kw))
  resumed.set_state(state)
  _assert_same(_take(resumed, len(tail)), tail)
  if workers:
    resumed.close()
