"""Media in the token pipeline: placeholder expansion, truncation, bad files, bucketed batches."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image
from transformers import AutoTokenizer

from omni_rrm_jax.core.batch_contract import RM_BATCH
from omni_rrm_jax.data.bad_records import BadRecordCounter
from omni_rrm_jax.data.media.config import MediaConfig
from omni_rrm_jax.data.media_batching import MediaSpec, media_token_ids
from omni_rrm_jax.data.pipeline import make_dataset
from omni_rrm_jax.data.readers import read_records
from omni_rrm_jax.data.records import to_json
from omni_rrm_jax.synthetic.mixture import mixed_pairs
from omni_rrm_jax.synthetic.corpus import corpus
from omni_rrm_jax.data.templates import rm_messages
from omni_rrm_jax.data.tokenize import INVALID_REASONS, ExampleEncoder
from omni_rrm_jax.data.tokenizer_train import train_tiny_tokenizer
from omni_rrm_jax.models.qwen2_5_vl import HostInputs
from omni_rrm_jax.train.task_kind import task_kind
from tests.data.media.media_files import tone, truncate, write_audio

MEDIA_CFG = MediaConfig(image_min_pixels=56 * 56, image_max_pixels=112 * 112,
                        video_min_pixels=56 * 56, video_max_pixels=56 * 56, video_max_frames=4)
PATCH_BUCKETS = (0, 32, 64)
MERGE_UNIT = 4


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  """(media root, records by name, tokenizer, media spec) with good and bad files."""
  root = tmp_path_factory.mktemp("media")
  good = mixed_pairs(6, 3, ("image", "video"), media_root=str(root))  # image, video, image, ...
  text = mixed_pairs(2, 3)
  (root / "images" / "zero.png").write_bytes(b"")
  (root / "videos" / "junk.mp4").write_bytes(np.random.default_rng(0).bytes(3000))
  wav = write_audio(root / "say.wav", tone(1.0, 16000), 16000)
  truncate(wav, root / "cut.wav", 0.5)
  tok_dir = tmp_path_factory.mktemp("tok")
  train_tiny_tokenizer(corpus(good + text) + ["the cat sat on the mat"] * 20, tok_dir,
                       vocab_size=512)
  tok = AutoTokenizer.from_pretrained(str(tok_dir))
  ids = media_token_ids(tok)
  host = HostInputs(image_token_id=ids["image"], video_token_id=ids["video"],
                    spatial_merge_size=2, window_size=56, patch_size=14, temporal_patch_size=2,
                    tokens_per_second=2.0)
  spec = MediaSpec(str(root), MEDIA_CFG, host, max_patches=max(PATCH_BUCKETS))
  base = good[0]

  def bad(name, **media):
    return dataclasses.replace(base, id=name, media={"images": [], "video": None, "audio": None,
                                                     **media},
                               modality="audio" if "audio" in media else base.modality)

  records = {
      "image": good[0], "video": good[1], "image2": good[2], "image3": good[4],
      "text": text[0],
      "zero_png": bad("zero_png", images=["images/zero.png"]),
      "junk_mp4": dataclasses.replace(bad("junk_mp4", video="videos/junk.mp4"),
                                      modality="video"),
      "cut_wav": bad("cut_wav", audio="cut.wav"),
      "escape": bad("escape", images=["../../etc/passwd"]),
      "stray": dataclasses.replace(text[1], prompt="Look: <|IMAGE|> what colour?"),
  }
  return root, records, tok, spec


def _reason(example) -> str:
  return INVALID_REASONS[int(example["invalid_reason"])]


@pytest.mark.parametrize("kind", ["rm", "sft"])
@pytest.mark.parametrize("name", ["image", "video"])
def test_one_placeholder_per_merged_patch(world, kind, name):
  _, records, tok, spec = world
  ex = ExampleEncoder(tok, 512, task_kind(kind).batch, media=spec).encode(records[name])
  assert ex["valid"], _reason(ex)
  ids = np.asarray(ex["chosen"] if kind == "rm" else ex["input_ids"])
  grid = ex["vision_grid_thw"]
  assert grid.shape == (1, 3) and (name == "video") == (grid[0, 0] > 1)
  token = spec.placeholder_ids[name]
  expected = int(grid.prod()) // MERGE_UNIT
  at = np.flatnonzero(ids == token)
  assert len(at) == expected and (np.diff(at) == 1).all()  # one contiguous run
  ids_map = media_token_ids(tok)
  assert ids[at[0] - 1] == ids_map["vision_start"] and ids[at[-1] + 1] == ids_map["vision_end"]
  # The run reads the example's merged tokens in order; nothing else reads any.
  index = ex["media_index"][:len(ids)]
  np.testing.assert_array_equal(index[at], np.arange(expected))
  assert (np.delete(index, at) == -1).all()
  assert len(ex["vision_patches"]) == grid.prod() == len(ex["vision_perm"])
  assert ex["vision_patches"].shape[1] == spec.patch_dim
  # Positions: text counts up to the run, the run is a grid, and text goes on
  # from its start plus its larger merged side.
  pos = ex["position_ids"]
  start = at[0]
  assert pos.shape[0] == 3 and (pos[:, :start] == np.arange(start)).all()
  assert pos[1, at].max() - pos[1, at].min() == grid[0, 1] // 2 - 1
  assert (pos[:, at[-1] + 1] == start + max(grid[0, 1:]) // 2).all()


def test_truncation_cuts_the_text_and_keeps_media_whole(world):
  _, records, tok, spec = world
  long = dataclasses.replace(records["image"], prompt="the cat sat on the mat. " * 40
                             + records["image"].prompt)
  full = ExampleEncoder(tok, 4096, RM_BATCH, media=spec).encode(long)
  ex = ExampleEncoder(tok, 96, RM_BATCH, media=spec).encode(long)
  assert ex["valid"] and ex["truncated"] and not full["truncated"]
  assert max(len(ex["chosen"]), len(ex["rejected"])) == 96
  token = spec.placeholder_ids["image"]
  n_media = int(ex["vision_grid_thw"].prod()) // MERGE_UNIT
  assert (np.asarray(ex["chosen"]) == token).sum() == n_media
  assert ex["chosen"][-12:] == full["chosen"][-12:]  # the response survives whole
  # The media are in the framing before the text: the cut is after them, in the text.
  media_end = int(np.flatnonzero(np.asarray(ex["chosen"]) == token)[-1])
  assert ex["chosen"][:media_end + 2] == full["chosen"][:media_end + 2]

  # When the media tokens themselves do not fit, the example is invalid, not cut:
  # here everything but the media would fit (the text may be cut to nothing).
  rec = records["image"]
  enc = ExampleEncoder(tok, 4096, RM_BATCH, media=spec)
  whole = enc.encode(rec)
  content = len(enc.prompt_pieces(rm_messages(rec, "")[:-1]).content)
  needed = max(len(whole["chosen"]), len(whole["rejected"])) - content
  tight = ExampleEncoder(tok, needed - 1, RM_BATCH, media=spec).encode(rec)
  assert not tight["valid"] and _reason(tight) == "media too long"
  assert ExampleEncoder(tok, needed, RM_BATCH, media=spec).encode(rec)["valid"]
  few_patches = dataclasses.replace(spec, max_patches=4)
  assert _reason(ExampleEncoder(tok, 4096, RM_BATCH, media=few_patches).encode(rec)) == (
      "media too long")


def test_bad_media_is_invalid_and_counted(world):
  _, records, tok, spec = world
  enc = ExampleEncoder(tok, 512, RM_BATCH, media=spec)
  expected = {"zero_png": "bad media", "junk_mp4": "bad media", "escape": "bad media",
              "cut_wav": "unsupported media", "stray": "media token mismatch", "image": "ok",
              "text": "ok"}
  names = list(expected)
  ds = make_dataset([records[n] for n in names], enc, batch_size=4, buckets=(512,),
                    pad_id=tok.pad_token_id, seed=0, shuffle=False, num_epochs=1,
                    patch_buckets=PATCH_BUCKETS)
  seen = {}
  for batch in ds:
    for row, index in enumerate(batch["index"]):
      if index >= 0:
        seen[names[index]] = INVALID_REASONS[int(batch["invalid_reason"][row])]
        assert bool(batch["valid"][row]) == (seen[names[index]] == "ok")
  assert seen == expected


def test_bad_media_is_fatal_in_strict_mode(world):
  _, records, tok, spec = world
  enc = ExampleEncoder(tok, 512, RM_BATCH, media=dataclasses.replace(spec, strict=True))
  with pytest.raises(ValueError, match=r"zero_png: unreadable image; images/zero.png: empty "
                                       r"file \(strict mode"):
    enc.encode(records["zero_png"])


def test_reader_skips_an_escaping_path_and_counts_it(world, tmp_path):
  root, records, _, _ = world
  path = tmp_path / "mixed.jsonl"
  rows = [to_json(records[n]) for n in ("image", "escape", "video")]
  path.write_text("\n".join(rows) + "\n")
  counter = BadRecordCounter()
  kept = list(read_records(path, counter=counter, media_root=root))
  assert [r.id for r in kept] == [records["image"].id, records["video"].id]
  assert counter.skipped == {"media path escapes media root": 1}


def test_batches_pad_media_per_row_to_a_patch_bucket(world):
  _, records, tok, spec = world
  enc = ExampleEncoder(tok, 128, RM_BATCH, media=spec)
  ds = make_dataset([records[n] for n in ("image", "video", "text")], enc, batch_size=4,
                    buckets=(64, 128), pad_id=tok.pad_token_id, seed=0, shuffle=False,
                    num_epochs=1, patch_buckets=PATCH_BUCKETS)
  (batch,) = list(ds)
  real = [int(np.prod(g, axis=-1).sum()) for g in batch["vision_grid_thw"]]
  n = batch["vision_patches"].shape[1]
  assert n == min(b for b in PATCH_BUCKETS if b >= max(real))
  t = batch["chosen_input_ids"].shape[1]
  assert batch["position_ids"].shape == (4, 3, t) and batch["media_index"].shape == (4, t)
  assert batch["vision_unperm"].shape == (4, n // MERGE_UNIT)
  for row, count in enumerate(real):
    # Padding patches are zeros, stay in place, and sit in no real frame or window.
    assert not batch["vision_patches"][row, count:].any()
    np.testing.assert_array_equal(batch["vision_perm"][row, count:], np.arange(count, n))
    assert (batch["vision_frame"][row, count:] == -1).all()
    assert (batch["vision_window"][row, count:] == -1).all()
    assert (batch["vision_frame"][row, :count] >= 0).all()
    assert sorted(batch["vision_perm"][row, :count]) == list(range(count))
  assert batch["index"][3] == -1  # the filler row
  # A text-only batch skips the vision encoder (bucket 0).
  (text_batch,) = list(make_dataset([records["text"]], enc, batch_size=2, buckets=(64, 128),
                                    pad_id=tok.pad_token_id, seed=0, num_epochs=1,
                                    patch_buckets=PATCH_BUCKETS))
  assert text_batch["vision_patches"].shape == (2, 0, spec.patch_dim)
  assert (text_batch["media_index"] == -1).all()


def test_media_is_decoded_in_worker_processes(world):
  _, records, tok, spec = world
  enc = ExampleEncoder(tok, 128, RM_BATCH, media=spec)
  recs = [records[n] for n in ("image", "video", "image2", "image3", "text")]
  kw = dict(batch_size=2, buckets=(128,), pad_id=tok.pad_token_id, seed=0, num_epochs=1,
            patch_buckets=PATCH_BUCKETS)

  def by_index(batches):
    out = {}
    for b in batches:
      for row, index in enumerate(b["index"]):
        if index >= 0:
          out[int(index)] = (b["vision_patches"][row], b["media_index"][row],
                             b["position_ids"][row])
    return out

  local = by_index(make_dataset(recs, enc, **kw))
  workers = by_index(make_dataset(recs, enc, worker_count=1, **kw))
  assert sorted(workers) == sorted(local) == list(range(len(recs)))
  for i, (patches, index, pos) in local.items():
    got = workers[i]
    count = len(np.flatnonzero(index >= 0))
    np.testing.assert_array_equal(got[1], index)
    np.testing.assert_array_equal(got[2], pos)
    real = int((np.abs(patches).sum(-1) > 0).sum())
    np.testing.assert_array_equal(got[0][:real], patches[:real])
    assert count == real // MERGE_UNIT


def test_synthetic_media_pairs_are_seeded_and_readable(tmp_path):
  a = mixed_pairs(4, 7, ("image", "video"), media_root=str(tmp_path / "a"), prefix="x")
  b = mixed_pairs(4, 7, ("image", "video"), media_root=str(tmp_path / "b"), prefix="x")
  assert [to_json(r) for r in a] == [to_json(r) for r in b]
  assert [r.modality for r in a] == ["image", "video", "image", "video"]
  for r in a:
    assert r.label in ("A", "B") and json.loads(r.rationale)["better"] == r.label
    chosen = r.response_a if r.label == "A" else r.response_b
    assert chosen.lower().rstrip(".").split()[-1] in r.rationale
  with pytest.raises(ValueError, match="a media_root is required"):
    mixed_pairs(1, 0, ("image",))
  # Every image size is a multiple of the 28-pixel resize factor: drawn as decoded.
  for r in a:
    if r.modality == "image":
      width, height = Image.open(tmp_path / "a" / r.media["images"][0]).size
      assert width % 28 == 0 and height % 28 == 0


def test_records_without_media_keep_the_text_path(world):
  _, records, tok, spec = world
  plain = ExampleEncoder(tok, 128, RM_BATCH).encode(records["image"])
  assert "vision_patches" not in plain  # text models see one placeholder token per item
  assert plain["chosen"].count(spec.placeholder_ids["image"]) == 1
