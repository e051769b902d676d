"""Audio in the token pipeline (Qwen2.5-Omni): placeholder expansion, bad files,
frame buckets, worker processes. Host side only: no model is built."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from transformers import AutoTokenizer

from omni_rrm_jax.core.batch_contract import RM_BATCH
from omni_rrm_jax.data.media.config import MediaConfig
from omni_rrm_jax.data.media.encode import encode_media
from omni_rrm_jax.data.media_batching import MediaSpec, media_token_ids
from omni_rrm_jax.data.pipeline import make_dataset
from omni_rrm_jax.synthetic.mixture import mixed_pairs
from omni_rrm_jax.synthetic.corpus import corpus
from omni_rrm_jax.data.tokenize import INVALID_REASONS, ExampleEncoder
from omni_rrm_jax.data.tokenizer_train import train_tiny_tokenizer
from omni_rrm_jax.models.omni_config import OmniHostInputs
from omni_rrm_jax.models.qwen2_5_vl import HostInputs
from omni_rrm_jax.train.task_kind import task_kind
from tests.data.audio_records import tone_pairs
from tests.data.media.media_files import tone, truncate, write_audio

MEDIA_CFG = MediaConfig(image_min_pixels=56 * 56, image_max_pixels=112 * 112,
                        video_min_pixels=56 * 56, video_max_pixels=56 * 56, video_max_frames=4)
PATCH_BUCKETS = (0, 64)
FRAME_BUCKETS = (0, 100, 200)
N_WINDOW = 50  # windows of 100 frames, 50 tokens


def pooled(frames: int) -> int:
  return ((frames - 1) // 2 + 1) // 2


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  """(records by name, tokenizer, omni spec, vision-only spec)."""
  root = tmp_path_factory.mktemp("audio_media")
  clips = tone_pairs(2, 0, str(root), seconds=(0.4, 1.3))  # 40 and 130 frames
  vision = mixed_pairs(2, 1, ("image", "video"), media_root=str(root))
  text = mixed_pairs(1, 1)
  write_audio(root / "long.wav", tone(2.5, 16000), 16000)
  truncate(write_audio(root / "full.wav", tone(1.0, 16000), 16000), root / "cut.wav", 0.5)
  (root / "audio" / "empty.wav").write_bytes(b"")
  tok_dir = tmp_path_factory.mktemp("tok")
  train_tiny_tokenizer(corpus(clips + vision + text), tok_dir, vocab_size=512)
  tok = AutoTokenizer.from_pretrained(str(tok_dir))
  ids = media_token_ids(tok)
  vl = HostInputs(image_token_id=ids["image"], video_token_id=ids["video"],
                  spatial_merge_size=2, window_size=56, patch_size=14, temporal_patch_size=2,
                  tokens_per_second=2.0)
  omni = OmniHostInputs(**dataclasses.asdict(vl) | dict(audio_token_id=ids["audio"],
                                                         position_id_per_seconds=2.0,
                                                         n_window=N_WINDOW))
  spec = MediaSpec(str(root), MEDIA_CFG, omni, max_patches=64, audio_frame_buckets=FRAME_BUCKETS)
  vl_spec = MediaSpec(str(root), MEDIA_CFG, vl, max_patches=64)

  def audio(name, path):
    return dataclasses.replace(clips[0], id=name, media={"images": [], "video": None,
                                                         "audio": path})

  records = {"short": clips[0], "long_ok": clips[1], "image": vision[0], "video": vision[1],
             "text": text[0], "cut_wav": audio("cut_wav", "cut.wav"),
             "empty_wav": audio("empty_wav", "audio/empty.wav"),
             "escape": audio("escape", "../../etc/passwd"),
             "too_long": audio("too_long", "long.wav")}
  return records, tok, spec, vl_spec


def _reason(example) -> str:
  return INVALID_REASONS[int(example["invalid_reason"])]


@pytest.mark.parametrize("kind", ["rm", "sft"])
def test_one_placeholder_per_audio_token(world, kind):
  records, tok, spec, _ = world
  record = records["long_ok"]
  ex = ExampleEncoder(tok, 512, task_kind(kind).batch, media=spec).encode(record)
  assert ex["valid"], _reason(ex)
  ids = np.asarray(ex["chosen"] if kind == "rm" else ex["input_ids"])
  frames = 130  # ceil(1.3 s * 16000 / 160)
  at = np.flatnonzero(ids == spec.placeholder_ids["audio"])
  assert len(at) == pooled(frames) == 32 and (np.diff(at) == 1).all()
  names = media_token_ids(tok)
  assert ids[at[0] - 1] == names["audio_start"] and ids[at[-1] + 1] == names["audio_end"]
  # The clip's own frames, exactly the processor's features under its mask.
  ref = encode_media(record, spec.media_root, spec.config)
  np.testing.assert_array_equal(ex["input_features"],
                                ref["input_features"][0][:, :frames])
  assert ref["feature_attention_mask"].sum() == frames
  # Its layout: two windows (100 + 30 frames), one pooled token per placeholder.
  assert ex["audio_frame_index"].shape == (2, 2 * N_WINDOW)
  assert ex["audio_frame_valid"].sum() == frames
  assert ex["audio_token_valid"].sum(-1).tolist() == [50, 15]
  assert ex["audio_pool_index"].shape == (32, 2)
  index = ex["audio_index"][:len(ids)]
  np.testing.assert_array_equal(index[at], np.arange(32))
  assert (np.delete(index, at) == -1).all() and (ex["media_index"] == -1).all()
  # Audio tokens count on like text, one position each.
  pos = ex["position_ids"][:, :len(ids)]
  np.testing.assert_array_equal(pos, np.broadcast_to(np.arange(len(ids)), pos.shape))


def test_bad_audio_is_invalid_and_counted(world):
  records, tok, spec, vl_spec = world
  enc = ExampleEncoder(tok, 512, RM_BATCH, media=spec)
  expected = {"cut_wav": "bad media", "empty_wav": "bad media", "escape": "bad media",
              "too_long": "media too long", "short": "ok", "image": "ok", "text": "ok"}
  assert {n: _reason(enc.encode(records[n])) for n in expected} == expected
  # A vision-only model cannot read audio at all.
  vl = ExampleEncoder(tok, 512, RM_BATCH, media=vl_spec)
  assert _reason(vl.encode(records["short"])) == "unsupported media"
  assert "input_features" not in vl.encode(records["image"])
  strict = ExampleEncoder(tok, 512, RM_BATCH, media=dataclasses.replace(spec, strict=True))
  with pytest.raises(ValueError, match=r"cut_wav: unreadable audio; cut.wav: truncated"):
    strict.encode(records["cut_wav"])


def test_batches_pad_audio_to_a_frame_bucket(world):
  records, tok, spec, _ = world
  enc = ExampleEncoder(tok, 128, RM_BATCH, media=spec)
  names = ["short", "image", "long_ok", "text"]
  (batch,) = list(make_dataset([records[n] for n in names], enc, batch_size=4, buckets=(128,),
                               pad_id=tok.pad_token_id, seed=0, shuffle=False, num_epochs=1,
                               patch_buckets=PATCH_BUCKETS))
  frames = [40, 0, 130, 0]
  assert batch["input_features"].shape == (4, 128, 200)  # the 200-frame bucket
  assert batch["audio_frame_index"].shape == (4, 2, 100)
  assert batch["audio_token_valid"].shape == (4, 2, 50)
  assert batch["audio_pool_index"].shape == (4, 50, 2)
  np.testing.assert_array_equal(batch["feature_attention_mask"].sum(-1), frames)
  for row, f in enumerate(frames):
    assert not batch["input_features"][row, :, f:].any()
    assert batch["audio_frame_valid"][row].sum() == f
  # Audio placeholders read past the row's 64 / 4 padded vision tokens.
  audio_id = spec.placeholder_ids["audio"]
  for row, f in enumerate(frames):
    at = batch["chosen_input_ids"][row] == audio_id
    np.testing.assert_array_equal(batch["media_index"][row][at], 16 + np.arange(pooled(f)))
  image_at = batch["chosen_input_ids"][1] == spec.placeholder_ids["image"]
  assert (batch["media_index"][1][image_at] < 16).all()
  # Without audio the batch takes the 0 bucket (the audio encoder is skipped) ...
  (plain,) = list(make_dataset([records["image"], records["text"]], enc, batch_size=2,
                               buckets=(128,), pad_id=tok.pad_token_id, seed=0, num_epochs=1,
                               patch_buckets=PATCH_BUCKETS))
  assert plain["input_features"].shape == (2, 128, 0)
  assert plain["audio_pool_index"].shape == (2, 0, 2)
  # ... and a short clip alone the 100 one.
  (short,) = list(make_dataset([records["short"]], enc, batch_size=1, buckets=(128,),
                               pad_id=tok.pad_token_id, seed=0, num_epochs=1,
                               patch_buckets=PATCH_BUCKETS))
  assert short["input_features"].shape == (1, 128, 100)
  assert short["vision_patches"].shape[1] == 0


def test_audio_is_decoded_in_worker_processes(world):
  records, tok, spec, _ = world
  enc = ExampleEncoder(tok, 128, RM_BATCH, media=spec)
  recs = [records[n] for n in ("short", "image", "long_ok", "text", "cut_wav")]
  kw = dict(batch_size=2, buckets=(128,), pad_id=tok.pad_token_id, seed=0, num_epochs=1,
            patch_buckets=PATCH_BUCKETS)

  def by_index(batches):
    return {int(i): (b["input_features"][r], b["media_index"][r], b["invalid_reason"][r])
            for b in batches for r, i in enumerate(b["index"]) if i >= 0}

  local = by_index(make_dataset(recs, enc, **kw))
  workers = by_index(make_dataset(recs, enc, worker_count=1, **kw))
  assert sorted(workers) == sorted(local) == list(range(len(recs)))
  for i, (features, index, reason) in local.items():
    got = workers[i]
    f = int((np.abs(features).sum(0) > 0).sum())
    np.testing.assert_array_equal(got[0][:, :f], features[:, :f])
    np.testing.assert_array_equal(got[1], index)
    assert got[2] == reason
  assert INVALID_REASONS[int(local[4][2])] == "bad media"
