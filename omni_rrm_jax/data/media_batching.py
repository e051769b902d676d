"""Media in token sequences and batches: placeholders, per-row patch buffers, padding.

A multimodal example becomes, next to its token ids:

  vision_patches   float32 [n, C*T*P*P]  its images' then its video's patches,
                                         concatenated as the processor does
  vision_perm / vision_frame / vision_window  int32 [n], vision_position [n, 2],
  vision_unperm    int32 [n / merge²]    the encoder's window layout of them
  vision_grid_thw  int32 [k, 3]          one (t, h, w) per item (host only)
  position_ids     int32 [3, L]          M-RoPE ids of the (longest) sequence
  media_index      int32 [L]             which of the example's merged vision
                                         tokens fills each placeholder, -1 else

and, for a model with an audio encoder (Qwen2.5-Omni; a record has at most
one clip):

  input_features   float32 [mel, f]      the clip's f log-mel frames (f = 0
                                         without audio)
  audio_frame_index / audio_frame_valid [c, W], audio_token_valid [c, N],
  audio_pool_index int32 [p, 2]          the audio encoder's window layout
  audio_index      int32 [L]             which of the clip's p tokens fills
                                         each audio placeholder, -1 else

`collate_media` pads them into row-aligned batch arrays: patches to the
smallest bucketed count N that holds the batch's largest example
([B, N, C*T*P*P]), audio frames likewise to a frame bucket F
([B, mel, F], with C = ceil(F / W) windows and P = C * N / 2 outputs a
row), sequences to the batch's length T; `audio_index` is folded into
`media_index`, pointing past the row's N / merge² (padded) vision tokens, so
the encoders' outputs concatenate as [vision | audio]. Keeping each row's
media in its own row (rather than one flat buffer for the batch) is what lets
the batch axis be sharded, split into micro-batches and assembled across
hosts like every other key; the price is padding every row to the batch's
largest media. The compiled shapes depend only on (T, N, F), all bucketed, so
a new set of image sizes or clip lengths in the same buckets reuses the
compiled step.

What is model-specific (the window layouts, token counts and M-RoPE
positions) comes from a `ModelHostInputs` object that the training code
passes in (`models.qwen2_5_vl.HostInputs`, `models.omni_config.OmniHostInputs`);
this module never imports the models.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Protocol, Sequence

import numpy as np

from omni_rrm_jax.core.buckets import bucket_size
from omni_rrm_jax.data.media.config import MediaConfig
from omni_rrm_jax.data.media.encode import encode_media
from omni_rrm_jax.data.records import PreferenceRecord

# Placeholder spellings: the tiny tokenizer's (Qwen2.5-Omni style), then Qwen2.5-VL's
# (and Qwen2-Audio's for the audio delimiters).
PLACEHOLDER_NAMES = {
    "image": ("<|IMAGE|>", "<|image_pad|>"),
    "video": ("<|VIDEO|>", "<|video_pad|>"),
    "audio": ("<|AUDIO|>", "<|audio_pad|>"),
    "vision_start": ("<|vision_bos|>", "<|vision_start|>"),
    "vision_end": ("<|vision_eos|>", "<|vision_end|>"),
    "audio_start": ("<|audio_bos|>", "<|audio_start|>"),
    "audio_end": ("<|audio_eos|>", "<|audio_end|>"),
}
VISION_FIELDS = ("perm", "position", "frame", "window", "unperm")
# The audio layout's fields and their dtypes.
AUDIO_FIELDS = {"frame_index": np.int32, "frame_valid": bool, "token_valid": bool,
                "pool_index": np.int32}


class ModelHostInputs(Protocol):
  """What the data pipeline needs to know about a multimodal model (host side).

  A model with an audio encoder (`audio_token_id` not None) also has
  `num_mel_bins`, `audio_tokens(frames) -> int`, `audio_layout(frames) ->
  {"frame_index", "frame_valid", "token_valid", "pool_index"}` and takes
  `audio_frames` (frames per clip) in `position_ids`.
  """
  image_token_id: int
  video_token_id: int
  audio_token_id: int | None
  spatial_merge_size: int
  patch_size: int
  temporal_patch_size: int

  def vision_layout(self, grid_thw) -> dict[str, np.ndarray]:
    """{"perm", "position", "frame", "window", "unperm"} of one example's grids."""

  def position_ids(self, input_ids_t, image_grid_thw=None, video_grid_thw=None,
                   second_per_grid_ts=None) -> np.ndarray:
    """Rotary position ids [3, T] of one unpadded sequence."""


def media_token_ids(tokenizer) -> dict[str, int]:
  """The tokenizer's ids of the media placeholders and vision delimiters it has."""
  vocab = tokenizer.get_vocab()
  out = {}
  for what, names in PLACEHOLDER_NAMES.items():
    for name in names:
      if name in vocab:
        out[what] = vocab[name]
        break
  return out


@dataclasses.dataclass(frozen=True)
class MediaSpec:
  """How an `ExampleEncoder` turns a record's media into model inputs.

  Attributes:
    media_root: the directory record media paths are relative to.
    config: preprocessing constants and memory limits.
    model: the model's host-side hooks (`ModelHostInputs`); picklable.
    max_patches: the largest patch bucket; an example with more patches is
      invalid ("media too long").
    strict: a bad media file stops the pipeline (with file and reason)
      instead of marking the example invalid.
    audio_frame_buckets: allowed padded log-mel frame counts of a row's
      audio clip (models with an audio encoder; 0 for batches without
      audio). A clip longer than the largest is invalid ("media too long";
      `config.max_audio_seconds` cuts clips instead).
  """
  media_root: str
  config: MediaConfig
  model: Any
  max_patches: int
  strict: bool = False
  audio_frame_buckets: tuple[int, ...] = ()

  def __post_init__(self):
    c, m = self.config, self.model
    for name, ours, theirs in (("patch_size", c.patch_size, m.patch_size),
                               ("merge_size", c.merge_size, m.spatial_merge_size),
                               ("temporal_patch_size", c.temporal_patch_size,
                                m.temporal_patch_size)):
      if ours != theirs:
        raise ValueError(f"media config {name}={ours} does not match the model's {theirs}")
    if self.max_patches % self.merge_unit:
      raise ValueError(f"max_patches {self.max_patches} is not a multiple of merge_size² "
                       f"= {self.merge_unit}")
    if self.has_audio and c.feature_size != m.num_mel_bins:
      raise ValueError(f"media config feature_size={c.feature_size} does not match the "
                       f"model's num_mel_bins {m.num_mel_bins}")

  @property
  def max_audio_frames(self) -> int:
    """The longest clip an example may have, in log-mel frames."""
    return max(self.audio_frame_buckets, default=0) if self.has_audio else 0

  @property
  def has_audio(self) -> bool:
    """Whether the model reads audio (has an audio placeholder)."""
    return getattr(self.model, "audio_token_id", None) is not None

  @property
  def merge_unit(self) -> int:
    return self.config.merge_size ** 2

  def processor_files(self) -> dict[str, dict[str, Any]]:
    """This preprocessing as Hugging Face processor files, for an export."""
    return self.config.to_preprocessor_configs(audio=self.has_audio)

  @property
  def patch_dim(self) -> int:
    c = self.config
    return 3 * c.temporal_patch_size * c.patch_size ** 2

  @property
  def placeholder_ids(self) -> dict[str, int]:
    """Placeholder id of each media kind the model reads."""
    ids = {"image": self.model.image_token_id, "video": self.model.video_token_id}
    if self.has_audio:
      ids["audio"] = self.model.audio_token_id
    return ids

  def unsupported(self, record: PreferenceRecord) -> list[str]:
    """Media kinds of `record` the model cannot read (audio, for a vision-only model)."""
    return ["audio"] if record.media.get("audio") and not self.has_audio else []


@dataclasses.dataclass(frozen=True)
class DecodedMedia:
  """One example's decoded media and how many tokens each item becomes.

  Attributes:
    patches: float32 [n, C*T*P*P], images first, then the video.
    image_grid_thw: int [num_images, 3].
    video_grid_thw: int [num_videos, 3].
    second_per_grid_ts: float32 [num_videos].
    tokens: placeholder id -> token count of each item of that kind, in order.
    audio_features: float32 [mel, f], the audio clip's f log-mel frames
      (f = 0 without audio).
  """
  patches: np.ndarray
  image_grid_thw: np.ndarray
  video_grid_thw: np.ndarray
  second_per_grid_ts: np.ndarray
  tokens: dict[int, list[int]]
  audio_features: np.ndarray | None = None

  @property
  def audio_frames(self) -> int:
    return 0 if self.audio_features is None else int(self.audio_features.shape[1])

  @property
  def grid_thw(self) -> np.ndarray:
    return np.concatenate([self.image_grid_thw, self.video_grid_thw]).astype(np.int32)

  @property
  def num_tokens(self) -> int:
    return sum(sum(v) for v in self.tokens.values())


def decode_media(record: PreferenceRecord, spec: MediaSpec) -> DecodedMedia:
  """Decodes a record's media (raises `BadRecord` for a bad or escaping file)."""
  arrays = encode_media(record, os.fspath(spec.media_root), spec.config)
  none = np.zeros((0, 3), np.int64)
  image_grids = arrays.get("image_grid_thw", none)
  video_grids = arrays.get("video_grid_thw", none)
  patches = [arrays[k] for k in ("pixel_values", "pixel_values_videos") if k in arrays]
  unit = spec.merge_unit
  ids = spec.placeholder_ids
  tokens = {ids["image"]: [int(g.prod()) // unit for g in image_grids],
            ids["video"]: [int(g.prod()) // unit for g in video_grids]}
  audio = _no_audio(spec)
  if spec.has_audio:
    tokens[ids["audio"]] = []
    if "input_features" in arrays:
      # Only the clip's own frames travel on (the chunk's padding is the
      # collate step's business, to a frame bucket).
      frames_f = arrays["feature_attention_mask"][0].astype(bool)
      audio = np.ascontiguousarray(arrays["input_features"][0][:, frames_f], np.float32)
      tokens[ids["audio"]] = [spec.model.audio_tokens(audio.shape[1])]
  return DecodedMedia(
      patches=(np.concatenate(patches) if patches
               else np.zeros((0, spec.patch_dim), np.float32)),
      image_grid_thw=image_grids, video_grid_thw=video_grids,
      second_per_grid_ts=arrays.get("second_per_grid_ts", np.zeros((0,), np.float32)),
      tokens=tokens, audio_features=audio)


def _no_audio(spec: MediaSpec) -> np.ndarray | None:
  return np.zeros((spec.config.feature_size, 0), np.float32) if spec.has_audio else None


def no_media(spec: MediaSpec) -> DecodedMedia:
  """The `DecodedMedia` of a text-only record."""
  ids = spec.placeholder_ids
  return DecodedMedia(np.zeros((0, spec.patch_dim), np.float32), np.zeros((0, 3), np.int64),
                      np.zeros((0, 3), np.int64), np.zeros((0,), np.float32),
                      {token: [] for token in ids.values()}, _no_audio(spec))


def count_placeholders(ids: Sequence[int], spec: MediaSpec) -> dict[int, int]:
  """How many times each placeholder id occurs in `ids`."""
  array = np.asarray(ids)
  return {token: int((array == token).sum()) for token in spec.placeholder_ids.values()}


def expand_placeholders(ids: Sequence[int], remaining: dict[int, list[int]]) -> list[int]:
  """Each placeholder id -> as many copies as its item has tokens.

  Args:
    ids: token ids with one placeholder per media item.
    remaining: placeholder id -> token counts of the items not yet placed;
      consumed in order, so calls on consecutive pieces continue the count.
  """
  out: list[int] = []
  for token in ids:
    counts = remaining.get(token)
    if counts is None:
      out.append(token)
    else:
      out.extend([token] * counts.pop(0))
  return out


def example_arrays(ids: Sequence[int], media: DecodedMedia, spec: MediaSpec) -> dict[str, Any]:
  """The per-example media keys (module docstring) for a sequence with expanded placeholders."""
  ids_t = np.asarray(ids, np.int32)
  index_t = np.full(ids_t.shape, -1, np.int32)
  offset = 0
  for token in (spec.model.image_token_id, spec.model.video_token_id):
    at = np.flatnonzero(ids_t == token)
    index_t[at] = offset + np.arange(len(at), dtype=np.int32)
    offset += sum(media.tokens.get(token, []))
  layout = spec.model.vision_layout(media.grid_thw)
  audio_kw = {"audio_frames": [media.audio_frames]} if media.audio_frames else {}
  out = {
      "vision_patches": media.patches.astype(np.float32),
      **{f"vision_{f}": np.asarray(layout[f], np.int32) for f in VISION_FIELDS},
      "vision_grid_thw": media.grid_thw,
      "position_ids": np.asarray(spec.model.position_ids(
          ids_t, media.image_grid_thw, media.video_grid_thw, media.second_per_grid_ts,
          **audio_kw), np.int32),
      "media_index": index_t,
  }
  if spec.has_audio:
    audio_index_t = np.full(ids_t.shape, -1, np.int32)
    at = np.flatnonzero(ids_t == spec.model.audio_token_id)
    audio_index_t[at] = np.arange(len(at), dtype=np.int32)
    audio_layout = spec.model.audio_layout(media.audio_frames)
    out.update({
        "input_features": media.audio_features.astype(np.float32),
        **{f"audio_{f}": np.asarray(audio_layout[f], AUDIO_FIELDS[f]) for f in AUDIO_FIELDS},
        "audio_index": audio_index_t,
    })
  return out


def invalid_arrays(spec: MediaSpec) -> dict[str, Any]:
  """Media keys of an invalid example (a one-token sequence without media)."""
  return example_arrays([0], no_media(spec), spec)


def _pad_rows(rows: Sequence[np.ndarray], length: int, fill) -> np.ndarray:
  """Stacks [n_i, ...] arrays into [B, length, ...]; `fill` is a value or "identity"."""
  first = rows[0]
  out = np.zeros((len(rows), length, *first.shape[1:]), first.dtype)
  if fill == "identity":
    out[:] = np.arange(length, dtype=first.dtype).reshape(length, *([1] * (first.ndim - 1)))
  else:
    out[:] = fill
  for i, row in enumerate(rows):
    out[i, :len(row)] = row
  return out


def collate_media(examples: Sequence[dict[str, Any]], *, length: int,
                  patch_buckets: Sequence[int], merge_unit: int,
                  audio_frame_buckets: Sequence[int] = (), min_patches: int = 0,
                  min_frames: int = 0, extra_windows: int = 0) -> dict[str, np.ndarray]:
  """Row-aligned media batch arrays of encoded examples.

  Padded patches are zeros; their layout keeps them out of every real window
  and frame (id -1) and in place (identity permutations), so the encoder's
  output for real patches does not depend on the padding. Padded sequence
  positions get M-RoPE id 0 (as transformers gives padding) and media index -1.

  Args:
    examples: encoded examples carrying the media keys of `example_arrays`.
    length: the batch's padded sequence length T.
    patch_buckets: allowed padded patch counts N (multiples of merge_unit; 0
      allowed for batches without media).
    merge_unit: patches per merged token.
    audio_frame_buckets: allowed padded frame counts F of examples with
      audio keys (0 allowed for batches without audio).
    min_patches / min_frames: pad to at least the buckets holding these
      (another process's rows of the same global batch may need them).
    extra_windows: audio windows added to each row's bucket (`collate_audio`;
      rows holding several clips, `merge_row_media`).

  Returns:
    vision_patches [B, N, D], vision_perm / vision_frame / vision_window
    [B, N], vision_position [B, N, 2], vision_unperm [B, N / merge_unit],
    position_ids [B, 3, T] (rows first, like every batch key), media_index
    [B, T], and vision_grid_thw [B, K, 3] (zeros past each row's K items;
    host only); with audio also the keys of `collate_audio`.
  """
  n = bucket_size(max(min_patches, *(len(ex["vision_patches"]) for ex in examples)),
                  patch_buckets, "patch")
  rows = lambda key: [np.asarray(ex[key]) for ex in examples]  # noqa: E731
  positions = [np.asarray(ex["position_ids"]).T for ex in examples]  # [L, 3]: pad along L
  items = max(1, max(len(ex["vision_grid_thw"]) for ex in examples))
  batch = {
      "vision_patches": _pad_rows(rows("vision_patches"), n, 0.0),
      "vision_perm": _pad_rows(rows("vision_perm"), n, "identity"),
      "vision_position": _pad_rows(rows("vision_position"), n, 0),
      "vision_frame": _pad_rows(rows("vision_frame"), n, -1),
      "vision_window": _pad_rows(rows("vision_window"), n, -1),
      "vision_unperm": _pad_rows(rows("vision_unperm"), n // merge_unit, "identity"),
      "position_ids": _pad_rows(positions, length, 0).transpose(0, 2, 1),
      "media_index": _pad_rows(rows("media_index"), length, -1),
      "vision_grid_thw": _pad_rows([g.reshape(-1, 3) for g in rows("vision_grid_thw")], items, 0),
  }
  if "audio_index" in examples[0]:
    if not audio_frame_buckets:
      raise ValueError("examples carry audio keys but no audio_frame_buckets were configured")
    batch.update(collate_audio(examples, frame_buckets=audio_frame_buckets,
                               min_frames=min_frames, extra_windows=extra_windows))
    # Audio tokens come after the row's (padded) vision tokens.
    audio_bt = _pad_rows(rows("audio_index"), length, -1)
    batch["media_index"] = np.where(audio_bt >= 0, n // merge_unit + audio_bt,
                                    batch["media_index"]).astype(np.int32)
  return batch


def collate_audio(examples: Sequence[dict[str, Any]], *, frame_buckets: Sequence[int],
                  min_frames: int = 0, extra_windows: int = 0) -> dict[str, np.ndarray]:
  """Row-aligned audio batch arrays, frames padded to the smallest bucket F.

  The window and output axes follow from F alone (C = ceil(F / W) windows,
  P = C * N // 2 outputs, at least the pooled tokens of F frames), so the
  shapes depend on the bucket only. A row of k clips (packed rows) may need
  up to k - 1 windows more than its frames fill (each clip's last window is
  partial): `extra_windows` adds them to C. Padded frames are zeros outside every
  window; padded windows are fully masked (index 0, valid False); padded
  outputs pool token 0 and are never read by a placeholder. (`audio_index`
  is left to `collate_media`, which folds it into `media_index`.)

  Returns:
    input_features [B, mel, F], feature_attention_mask int32 [B, F],
    audio_frame_index int32 / audio_frame_valid bool [B, C, W],
    audio_token_valid bool [B, C, N], audio_pool_index int32 [B, P, 2].
  """
  first = examples[0]
  w, n = first["audio_frame_index"].shape[1], first["audio_token_valid"].shape[1]
  frames = [int(np.asarray(ex["input_features"]).shape[1]) for ex in examples]
  f = bucket_size(max(min_frames, *frames), frame_buckets, "audio frame")
  c = -(-f // w) + (extra_windows if f else 0)
  p = c * n // 2
  rows = lambda key: [np.asarray(ex[key]) for ex in examples]  # noqa: E731
  features = _pad_rows([x.T for x in rows("input_features")], f, 0.0).transpose(0, 2, 1)
  return {
      "input_features": np.ascontiguousarray(features, np.float32),
      "feature_attention_mask": (np.arange(f)[None, :] < np.asarray(frames)[:, None]).astype(
          np.int32),
      "audio_frame_index": _pad_rows(rows("audio_frame_index"), c, 0),
      "audio_frame_valid": _pad_rows(rows("audio_frame_valid"), c, False),
      "audio_token_valid": _pad_rows(rows("audio_token_valid"), c, False),
      "audio_pool_index": _pad_rows(rows("audio_pool_index"), p, 0),
  }


def media_size(example: dict[str, Any]) -> tuple[int, int]:
  """(vision patches, audio frames) of an encoded example's media."""
  frames = int(np.asarray(example["input_features"]).shape[1]) if "audio_index" in example else 0
  return len(example["vision_patches"]), frames


def merge_row_media(examples: Sequence[dict[str, Any]], starts: Sequence[int],
                    length: int) -> dict[str, Any]:
  """The media keys of one packed row holding `examples`, as one example's.

  Example j's sequence starts at slot `starts[j]` of the row's `length`
  slots. Its patches (then its audio frames) follow those of the examples
  before it, and its layout indices are shifted to match: patch order,
  frame, window and merged-token ids for vision; frame, window and token
  indices for audio. So the towers see each image, video frame and clip on
  its own, exactly as without packing (windows and frames never span two
  items), and each placeholder reads its own item's tokens. The M-RoPE ids
  and the media index of each example are placed at its slots, unchanged
  but for the offsets: every segment keeps the positions it has alone.

  Returns:
    The keys of `example_arrays` (and `grid_thw` for the host), with
    `position_ids` [3, length] and `media_index` (and `audio_index`) [length].
  """
  position_3l = np.zeros((3, length), np.int32)
  index_l = np.full((length,), -1, np.int32)
  patches, grids, fields = [], [], {f: [] for f in VISION_FIELDS}
  n0 = m0 = frame0 = window0 = 0
  for ex, start in zip(examples, starts):
    pos = np.asarray(ex["position_ids"])
    index = np.asarray(ex["media_index"])
    position_3l[:, start:start + pos.shape[1]] = pos
    index_l[start:start + len(index)] = np.where(index >= 0, index + m0, -1)
    n = len(ex["vision_patches"])
    patches.append(np.asarray(ex["vision_patches"], np.float32))
    grids.append(np.asarray(ex["vision_grid_thw"]).reshape(-1, 3))
    frame, window = np.asarray(ex["vision_frame"]), np.asarray(ex["vision_window"])
    fields["perm"].append(np.asarray(ex["vision_perm"]) + n0)
    fields["position"].append(np.asarray(ex["vision_position"]).reshape(-1, 2))
    fields["frame"].append(frame + frame0)
    fields["window"].append(window + window0)
    fields["unperm"].append(np.asarray(ex["vision_unperm"]) + m0)
    n0, m0 = n0 + n, m0 + len(ex["vision_unperm"])
    if n:
      frame0, window0 = frame0 + int(frame.max()) + 1, window0 + int(window.max()) + 1
  out = {"vision_patches": np.concatenate(patches),
         **{f"vision_{f}": np.concatenate(v).astype(np.int32) for f, v in fields.items()},
         "vision_grid_thw": np.concatenate(grids), "position_ids": position_3l,
         "media_index": index_l}
  if "audio_index" in examples[0]:
    out.update(_merge_row_audio(examples, starts, length))
  return out


def _merge_row_audio(examples: Sequence[dict[str, Any]], starts: Sequence[int],
                     length: int) -> dict[str, Any]:
  """The audio keys of `merge_row_media`: clips concatenated along time."""
  index_l = np.full((length,), -1, np.int32)
  features, frame_index, frame_valid, token_valid, pool = [], [], [], [], []
  f0 = c0 = p0 = 0
  tokens = examples[0]["audio_token_valid"].shape[1]
  for ex, start in zip(examples, starts):
    index = np.asarray(ex["audio_index"])
    index_l[start:start + len(index)] = np.where(index >= 0, index + p0, -1)
    valid = np.asarray(ex["audio_frame_valid"], bool)
    features.append(np.asarray(ex["input_features"], np.float32))
    frame_index.append(np.where(valid, np.asarray(ex["audio_frame_index"]) + f0, 0))
    frame_valid.append(valid)
    token_valid.append(np.asarray(ex["audio_token_valid"], bool))
    pool.append(np.asarray(ex["audio_pool_index"]).reshape(-1, 2) + c0 * tokens)
    f0 += features[-1].shape[1]
    c0 += len(valid)
    p0 += len(pool[-1])
  return {"input_features": np.concatenate(features, axis=1),
          "audio_frame_index": np.concatenate(frame_index).astype(np.int32),
          "audio_frame_valid": np.concatenate(frame_valid),
          "audio_token_valid": np.concatenate(token_valid),
          "audio_pool_index": np.concatenate(pool).astype(np.int32),
          "audio_index": index_l}
