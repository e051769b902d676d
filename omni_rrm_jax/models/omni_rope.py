"""Multimodal rotary positions of the Qwen2.5-Omni thinker.

The same three-axis (temporal, height, width) ids as Qwen2.5-VL (`mrope.py`),
with the thinker's own rules, as transformers 5.x applies them:

- temporal ids count `position_id_per_seconds` per second: a video's k-th
  temporal patch sits at trunc(k * seconds_per_grid * position_id_per_seconds)
  (in float32), an image's k-th frame at k * position_id_per_seconds;
- the token after an image or video continues from the largest id the item
  used, plus one (Qwen2.5-VL instead advances by max(h, w));
- audio placeholders count on one id per token, like text;
- with `use_audio_in_video`, a video and the next audio clip share one start
  id. Both are cut into chunks of `position_id_per_seconds *
  seconds_per_chunk` temporal ids and laid out chunk by chunk (video chunk 0,
  audio chunk 0, video chunk 1, ...), each token keeping its own ids. The two
  start tokens before them (vision, audio) share one id, and so do the two
  end tokens after them;
- padding gets id 1 (transformers fills the table with ones).

Like `mrope.get_rope_index`, this needs the token ids and media sizes as
concrete values, so it runs on the host, before `jit`. Only the text-only
rule (`text_position_ids`) is jittable.
"""

from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np

from omni_rrm_jax.models.audio_layout import feat_extract_output_lengths

PAD_POSITION = 1


def text_position_ids(attention_mask, batch: int, length: int):
  """Positions [3, B, T] and rope deltas [B] without images or videos (jittable).

  Real tokens count 0, 1, ... from each row's first real token; padding gets
  `PAD_POSITION`. The deltas are as transformers computes them here: the
  row's largest id, padding included, plus one, minus its real tokens.
  """
  if attention_mask is None:
    position_bt = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
    return jnp.broadcast_to(position_bt, (3, batch, length)), jnp.zeros((batch,), jnp.int32)
  valid_bt = jnp.asarray(attention_mask) == 1
  counted_bt = jnp.cumsum(valid_bt, axis=-1, dtype=jnp.int32)
  position_bt = jnp.where(valid_bt, counted_bt - 1, PAD_POSITION)
  deltas_b = position_bt.max(axis=-1) + 1 - counted_bt[:, -1]
  return jnp.broadcast_to(position_bt, (3, batch, length)), deltas_b


def _text_position_ids_host(attention_mask, batch: int, length: int
                            ) -> tuple[np.ndarray, np.ndarray]:
  """`text_position_ids` in numpy: int32 positions [3, B, T] and deltas [B]."""
  if attention_mask is None:
    position_bt = np.broadcast_to(np.arange(length, dtype=np.int32), (batch, length))
    return np.broadcast_to(position_bt, (3, batch, length)).copy(), np.zeros((batch,), np.int32)
  valid_bt = np.asarray(attention_mask) == 1
  counted_bt = np.cumsum(valid_bt, axis=-1, dtype=np.int32)
  position_bt = np.where(valid_bt, counted_bt - 1, PAD_POSITION).astype(np.int32)
  deltas_b = (position_bt.max(axis=-1) + 1 - counted_bt[:, -1]).astype(np.int32)
  return np.broadcast_to(position_bt, (3, batch, length)).copy(), deltas_b


def temporal_ids(grid_t: int, seconds_per_grid, position_id_per_seconds) -> np.ndarray:
  """trunc(k * seconds_per_grid * position_id_per_seconds) for k < grid_t.

  Float32 and in that order of products, as transformers rounds them.
  """
  k = np.arange(grid_t, dtype=np.float32)
  return ((k * np.float32(seconds_per_grid)) * np.float32(position_id_per_seconds)).astype(
      np.int64)


def grid_positions(t_ids: np.ndarray, grid_thw, spatial_merge_size: int) -> np.ndarray:
  """Ids [3, t * h * w / merge²] of a merged grid, frames at `t_ids`, from 0."""
  h = int(grid_thw[1]) // spatial_merge_size
  w = int(grid_thw[2]) // spatial_merge_size
  t_thw, h_thw, w_thw = np.meshgrid(t_ids, np.arange(h), np.arange(w), indexing="ij")
  return np.stack([t_thw, h_thw, w_thw]).reshape(3, -1)


def chunk_bounds(values: np.ndarray, per_chunk: int) -> list[tuple[int, int]]:
  """[start, end) runs of non-decreasing `values`, cut where they reach a chunk edge.

  As transformers (and its processor) cut them: the n-th cut falls at the
  first value >= n * per_chunk, at most one cut per element, so a value
  that jumps past several edges opens one chunk, and the next cut waits for
  the next edge.
  """
  bounds, start, edge = [], 0, 1
  for i, value in enumerate(np.asarray(values).tolist()):
    if value >= edge * per_chunk:
      bounds.append((start, i))
      start, edge = i, edge + 1
  bounds.append((start, len(values)))
  return bounds


class _Walker:
  """Assigns ids to one row's real tokens at a time; media items are consumed
  in batch order, across rows, as the encoders' outputs are."""

  def __init__(self, images, videos, seconds, audio_lens, use_audio_in_video: bool, *,
               image_token_id, video_token_id, audio_token_id, spatial_merge_size,
               position_id_per_seconds, seconds_per_chunk):
    self.images, self.videos, self.seconds, self.audio_lens = images, videos, seconds, audio_lens
    self.use_audio_in_video = use_audio_in_video
    self.ids = {"image": image_token_id, "video": video_token_id, "audio": audio_token_id}
    self.merge = spatial_merge_size
    self.pps = position_id_per_seconds
    self.per_chunk = int(position_id_per_seconds * seconds_per_chunk)

  def row(self, tokens: np.ndarray, row: int) -> np.ndarray:
    """Ids [3, n] of the n real tokens of row `row`."""
    self.pieces, self.next, self.where = [], 0, f"row {row}"
    kind_of = {v: k for k, v in self.ids.items()}
    media_n = np.isin(tokens, list(self.ids.values()))
    st = 0
    while True:
      found = np.flatnonzero(media_n[st:])
      if not len(found):
        break
      k = st + int(found[0])
      kind = kind_of[int(tokens[k])]
      if kind == "audio":
        self._text(k - st)
        n = self._audio_len(tokens, k)
        self._expect(tokens[k:k + n], ["audio"] * n, "audio clip")
        self._text(n)
        st = k + n
      elif kind == "video" and self.use_audio_in_video:
        st = self._video_with_audio(tokens, st, k)
      else:
        self._text(k - st)
        grid = self._next_item(self.images if kind == "image" else self.videos, kind)
        seconds = 1 if kind == "image" else next(self.seconds)
        piece = grid_positions(temporal_ids(int(grid[0]), seconds, self.pps), grid, self.merge)
        n = piece.shape[1]
        self._expect(tokens[k:k + n], [kind] * n, f"{kind} of grid {tuple(grid.tolist())}")
        self._put(piece + self.next)
        st = k + n
    self._text(len(tokens) - st)
    if not self.pieces:
      return np.zeros((3, 0), np.int64)
    return np.concatenate(self.pieces, axis=1)

  def _video_with_audio(self, tokens: np.ndarray, st: int, k: int) -> int:
    """Ids of a video interleaved with its audio; returns the index after its end tokens."""
    if k - st < 2:
      raise ValueError(f"{self.where}: a video with use_audio_in_video needs its vision and "
                       "audio start tokens before its placeholders")
    if self.per_chunk < 1:
      raise ValueError(f"position_id_per_seconds * seconds_per_chunk = {self.per_chunk} must be "
                       ">= 1 to interleave video and audio")
    self._text(k - st - 2)
    self._put(np.full((3, 2), self.next))  # the vision and audio start tokens share an id
    grid = self._next_item(self.videos, "video")
    video_3n = grid_positions(temporal_ids(int(grid[0]), next(self.seconds), self.pps), grid,
                              self.merge)
    if self.audio_lens is None:
      raise ValueError("use_audio_in_video needs the audio clips' lengths "
                       "(feature_attention_mask)")
    audio_n = int(self._next_item(self.audio_lens, "audio clip"))
    audio_3n = np.broadcast_to(np.arange(audio_n), (3, audio_n))
    video_chunks = chunk_bounds(video_3n[0], self.per_chunk)
    audio_chunks = chunk_bounds(audio_3n[0], self.per_chunk)
    start, kinds = self.next, []
    for video, audio in itertools.zip_longest(video_chunks, audio_chunks):
      for bounds, ids_3n, kind in ((video, video_3n, "video"), (audio, audio_3n, "audio")):
        if bounds is not None:
          self._put(ids_3n[:, bounds[0]:bounds[1]] + start)
          kinds += [kind] * (bounds[1] - bounds[0])
    end = k + len(kinds)
    self._expect(tokens[k:end], kinds, f"video of grid {tuple(grid.tolist())} with its audio "
                 f"interleaved in chunks of {self.per_chunk} ids")
    if end + 2 > len(tokens):
      raise ValueError(f"{self.where}: a video with use_audio_in_video needs its audio and "
                       "vision end tokens after its placeholders")
    self._put(np.full((3, 2), self.next))  # the two end tokens share an id
    return end + 2

  def _audio_len(self, tokens: np.ndarray, k: int) -> int:
    if self.audio_lens is not None:
      return int(self._next_item(self.audio_lens, "audio clip"))
    # Without the clips' lengths, a run of placeholders is one clip.
    rest = tokens[k:] != self.ids["audio"]
    return int(np.argmax(rest)) if rest.any() else len(rest)

  def _next_item(self, items, what: str):
    try:
      return next(items)
    except StopIteration:
      raise ValueError(f"{self.where} has more {what}s than were given") from None

  def _expect(self, tokens: np.ndarray, kinds: list[str], what: str) -> None:
    expected = np.array([self.ids[kind] for kind in kinds], np.int64)
    if len(tokens) != len(expected) or (tokens != expected).any():
      raise ValueError(f"{self.where}: the placeholder tokens of a {what} do not match it "
                       f"({len(expected)} tokens expected)")

  def _text(self, n: int) -> None:
    if n > 0:
      self._put(np.broadcast_to(np.arange(n) + self.next, (3, n)))

  def _put(self, piece_3n: np.ndarray) -> None:
    self.pieces.append(piece_3n)
    # transformers continues from the last piece's largest id, not the row's.
    self.next = int(piece_3n.max()) + 1


def get_rope_index(input_ids, attention_mask=None, *, image_grid_thw=None, video_grid_thw=None,
                   video_second_per_grid=None, audio_feature_lengths=None,
                   use_audio_in_video: bool = False, image_token_id: int, video_token_id: int,
                   audio_token_id: int, spatial_merge_size: int, position_id_per_seconds: float,
                   seconds_per_chunk: float) -> tuple[np.ndarray, np.ndarray]:
  """The thinker's M-RoPE position ids of a batch, as transformers 5.x computes them.

  Each item's placeholders must form one run (a video's interleaved with its
  audio's), as the processor lays them out, between start / end tokens.

  Args:
    input_ids: int [B, T].
    attention_mask: [B, T], 1 for real tokens; all real when None.
    image_grid_thw: int [num_images, 3] patch grids (t, h, w), in order.
    video_grid_thw: int [num_videos, 3].
    video_second_per_grid: [num_videos] seconds per temporal patch (1 when
      None).
    audio_feature_lengths: [num_clips] log-mel frames per clip
      (`feature_attention_mask.sum(-1)`). Needed with `use_audio_in_video`;
      otherwise each run of audio placeholders is taken as one clip.
    use_audio_in_video: every video is interleaved with the next audio clip.
    image_token_id: the image placeholder id.
    video_token_id: the video placeholder id.
    audio_token_id: the audio placeholder id.
    spatial_merge_size: side of the patch block merged into one token.
    position_id_per_seconds: temporal ids per second.
    seconds_per_chunk: interleaving chunk length, in seconds.

  Returns:
    (position ids int32 [3, B, T], rope deltas int32 [B]: the row's largest
    id plus one minus its real tokens, which continues positions during
    generation).
  """
  ids = np.asarray(input_ids)
  b, t = ids.shape
  if image_grid_thw is None and video_grid_thw is None:
    # transformers' rule for this case; audio ids count on like text anyway.
    # In numpy: this runs in the data workers, per example (jnp would compile
    # there once per sequence length).
    return _text_position_ids_host(attention_mask, b, t)
  valid_bt = np.ones((b, t), bool) if attention_mask is None else np.asarray(attention_mask) == 1
  grids = lambda g: iter(np.asarray(g, np.int64).reshape(-1, 3) if g is not None else ())
  seconds = (itertools.repeat(np.float32(1)) if video_second_per_grid is None
             else iter(np.asarray(video_second_per_grid, np.float32).reshape(-1)))
  audio_lens = None
  if audio_feature_lengths is not None:
    _, tokens_a = feat_extract_output_lengths(np.asarray(audio_feature_lengths, np.int64))
    audio_lens = iter(np.asarray(tokens_a).reshape(-1))
  walker = _Walker(grids(image_grid_thw), grids(video_grid_thw), seconds, audio_lens,
                   use_audio_in_video, image_token_id=image_token_id,
                   video_token_id=video_token_id, audio_token_id=audio_token_id,
                   spatial_merge_size=spatial_merge_size,
                   position_id_per_seconds=position_id_per_seconds,
                   seconds_per_chunk=seconds_per_chunk)
  position_3bt = np.full((3, b, t), PAD_POSITION, np.int64)
  deltas_b = np.zeros((b,), np.int64)
  for row in range(b):
    row_3n = walker.row(ids[row][valid_bt[row]], row)
    position_3bt[:, row, valid_bt[row]] = row_3n
    if row_3n.shape[1]:
      deltas_b[row] = row_3n.max() + 1 - row_3n.shape[1]
  for items, what in ((walker.images, "image_grid_thw"), (walker.videos, "video_grid_thw")):
    if next(items, None) is not None:
      raise ValueError(f"{what} has more grids than the batch has placeholder runs")
  return position_3bt.astype(np.int32), deltas_b.astype(np.int32)
