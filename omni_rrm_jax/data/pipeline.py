"""The Grain input pipeline: records -> tokens -> bucketed batches, per process.

  records (validated, bad ones skipped and counted when read)
    -> seeded global shuffle, reshuffled each epoch (optionally in chunks of
       one global batch per modality: `grouped_shuffle`)
    -> this process's share of the stream (multi-host: disjoint, interleaved)
    -> encode (chat template, left truncation of the prompt;
       media decoded, placeholders expanded, layout/positions) [worker processes]
    -> batch + pad to a bucketed length (patch count, audio frames) [workers]

Batches are formed before the worker processes split the stream (each worker
builds whole batches), so the batch order does not depend on the worker count.

The iterator's state (`get_state` / `set_state`) is small and exact, so a
checkpoint holding it resumes the stream at the same example.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Sequence

import grain

from omni_rrm_jax.data.batching import collate
from omni_rrm_jax.data.grouped_shuffle import GroupedShuffle
from omni_rrm_jax.data.records import PreferenceRecord
from omni_rrm_jax.data.tokenize import ExampleEncoder, as_arrays

log = logging.getLogger(__name__)


class _Tag(grain.transforms.MapWithIndex):
  """Pairs each record with its index in the data set (before shuffling)."""

  def map_with_index(self, index: int, record: PreferenceRecord):
    return index, record


class _Encode(grain.transforms.Map):
  """A picklable map step (worker processes receive a copy)."""

  def __init__(self, encoder: ExampleEncoder):
    self.encoder = encoder

  def map(self, tagged) -> dict[str, Any]:
    index, record = tagged
    return {**as_arrays(self.encoder.encode(record)), "index": index}


def _ensure_absl_flags_parsed() -> None:
  # Grain's worker processes read absl flags; outside `main` (tests, notebooks)
  # nobody parsed them, so take the defaults.
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def make_dataset(records: Sequence[PreferenceRecord], encoder: ExampleEncoder, *,
                 batch_size: int, buckets: Sequence[int], pad_id: int, seed: int,
                 shuffle: bool = True, num_epochs: int | None = None,
                 worker_count: int = 0, worker_buffer_size: int = 2,
                 process_index: int = 0, process_count: int = 1,
                 patch_buckets: Sequence[int] = (),
                 audio_frame_buckets: Sequence[int] = (),
                 group_by_modality: bool = False) -> grain.IterDataset:
  """A Grain dataset of padded batches for this process.

  Args:
    records: the whole (validated) data set; every process passes the same.
    encoder: turns a record into token arrays.
    batch_size: rows per batch on this process (global batch / processes).
    buckets: allowed padded sequence lengths (the largest must cover the
      encoder's `max_length`).
    pad_id: the token id used for padding.
    seed: shuffle seed; with `num_epochs`, each epoch is shuffled anew.
    shuffle: shuffle the records (False for evaluation).
    num_epochs: passes over the data; None repeats forever.
    worker_count: worker processes for encoding and batching (0: in-process).
      Workers take whole batches in turn; the stream is the same for any count.
    worker_buffer_size: batches each worker prepares ahead.
    process_index: this process's index (`jax.process_index()`).
    process_count: number of processes (`jax.process_count()`).
    patch_buckets: allowed padded patch counts per row, for an encoder with
      media (multiples of merge_size²; the largest must cover its
      `max_patches`; 0 lets batches without media skip the vision encoder).
    audio_frame_buckets: allowed padded log-mel frame counts per row, for an
      encoder whose model reads audio (default: its media spec's; the
      largest must cover the spec's `max_audio_frames`; 0 lets batches
      without audio skip the audio encoder).
    group_by_modality: with `shuffle`, draw each global batch
      (`batch_size * process_count` rows) from one modality, so it pads to
      that modality's lengths and skips the encoders it does not use. Rows
      left over per modality share mixed batches; each epoch drops fewer than
      one global batch of them (different ones every epoch).
  """
  if not records:
    raise ValueError("the data set is empty (every record was skipped?)")
  if max(buckets) < encoder.max_length:
    raise ValueError(f"largest bucket {max(buckets)} < max_length {encoder.max_length}")
  merge_unit = 1
  if encoder.media is not None:
    merge_unit = encoder.media.merge_unit
    if not patch_buckets or max(patch_buckets) < encoder.media.max_patches:
      raise ValueError(f"patch_buckets {tuple(patch_buckets)} must reach the encoder's "
                       f"max_patches {encoder.media.max_patches}")
    if any(b % merge_unit for b in patch_buckets):
      raise ValueError(f"patch_buckets {tuple(patch_buckets)} must be multiples of "
                       f"merge_size² = {merge_unit}")
    audio_frame_buckets = tuple(audio_frame_buckets) or encoder.media.audio_frame_buckets
    if encoder.media.has_audio and (not audio_frame_buckets or max(audio_frame_buckets)
                                    < encoder.media.max_audio_frames):
      raise ValueError(f"audio_frame_buckets {tuple(audio_frame_buckets)} must reach the "
                       f"encoder's max_audio_frames {encoder.media.max_audio_frames}")
  ds = grain.MapDataset.source(list(records)).map_with_index(_Tag())
  if shuffle and group_by_modality:
    ds = GroupedShuffle(ds, [r.modality for r in records], chunk=batch_size * process_count,
                        seed=seed)
  elif shuffle:
    ds = ds.shuffle(seed=seed)
  if num_epochs != 1:
    ds = ds.repeat(num_epochs)
  if process_count > 1:
    ds = ds[process_index::process_count]
  ds = ds.map(_Encode(encoder)).batch(
      batch_size, drop_remainder=False,
      batch_fn=functools.partial(collate, kind=encoder.kind, batch_size=batch_size,
                                 buckets=tuple(buckets), pad_id=pad_id,
                                 patch_buckets=tuple(patch_buckets), merge_unit=merge_unit,
                                 audio_frame_buckets=tuple(audio_frame_buckets)))
  it = ds.to_iter_dataset()
  if worker_count > 0:
    _ensure_absl_flags_parsed()
    it = it.mp_prefetch(grain.multiprocessing.MultiprocessingOptions(
        num_workers=worker_count, per_worker_buffer_size=worker_buffer_size))
  return it
