"""The Grain input pipeline: records -> tokens -> bucketed batches, per process.

  records (validated, bad ones skipped and counted when read)
    -> seeded global shuffle, reshuffled each epoch (optionally in chunks of
       one global batch per modality: `grouped_shuffle`)
    -> global batches (batch size x processes), this process's rows of each
    -> encode (chat template, left truncation of the prompt;
       media decoded, placeholders expanded, layout/positions) [worker processes]
    -> pad to the batch's buckets: length, patch count, audio frames
       [worker processes with one process; with several, the main process,
       after agreeing on the global batch's buckets (one small collective)]

Batches are formed before the worker processes split the stream (each worker
builds whole batches), so the batch order does not depend on the worker count,
and before the processes take their rows, so a global batch holds the same
records, padded to the same buckets, for any process count. With one process
a worker hands over finished batches: one set of arrays per batch crosses the
process boundary (in shared memory when large, `MIN_SHARED_MEMORY_BYTES`),
not one per record.

The iterator's state (`get_state` / `set_state`) is small and exact, so a
checkpoint holding it resumes the stream at the same example.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any, Callable, Sequence

import grain
import numpy as np

from omni_rrm_jax.data.batching import batch_needs, collate
from omni_rrm_jax.data.grouped_shuffle import BlockShuffle, GroupedShuffle
from omni_rrm_jax.data.packing import (MediaPacking, PackSpec, collate_packed, packed_needs,
                                       rows_for)
from omni_rrm_jax.data.records import PreferenceRecord
from omni_rrm_jax.data.tokenize import ExampleEncoder, as_arrays

log = logging.getLogger(__name__)

# Read-ahead of the encoding steps, per process (and per worker when
# `worker_count` > 0). Grain's own defaults, 16 threads and 500 batches, hold
# 16 batches in encoding at once and up to 500 encoded ones: many GB with
# media or very long records. Each thread encodes one batch at a time.
READ_THREADS = 2  # batches encoded at once
READ_BUFFER_BATCHES = 4  # batches encoded ahead of the one consumed
# Arrays smaller than this travel from the workers pickled with their batch;
# larger ones in a shared-memory block of their own. A block costs a few
# system calls on each side (create, map, unlink), more than copying a small
# array; Grain's default (0) gives every array its own block.
MIN_SHARED_MEMORY_BYTES = 1 << 16


class _Tag(grain.transforms.MapWithIndex):
  """Pairs each record with its index in the data set (before shuffling)."""

  def map_with_index(self, index: int, record: PreferenceRecord):
    return index, record


class _Share(grain.transforms.Map):
  """This process's rows of a global batch of tagged records.

  A process whose share is empty (the short last batch of a finite pass)
  gets the batch's first record as a filler, marked to be dropped, so that
  every process builds a batch, of the same shape, at every step.
  """

  def __init__(self, process_index: int, rows: int):
    self.start, self.rows = process_index * rows, rows

  def map(self, tagged_rows):
    share = list(tagged_rows[self.start:self.start + self.rows])
    return share if share else [(-1, tagged_rows[0][1])]


class _Encode(grain.transforms.Map):
  """Encodes a list of tagged records (a picklable step: workers get a copy).

  With `collate_step`, the encoded rows leave as one padded batch (the
  step runs where the encoding does: in the workers, if any).
  """

  def __init__(self, encoder: ExampleEncoder, collate_step: "_Collate | None" = None):
    self.encoder, self.collate_step = encoder, collate_step

  def map(self, tagged_rows) -> list[dict[str, Any]] | dict[str, np.ndarray]:
    out = []
    for index, record in tagged_rows:
      example = {**as_arrays(self.encoder.encode(record)), "index": index}
      if index < 0:
        example.update(valid=False, truncated=False, invalid_reason=0)
      out.append(example)
    return out if self.collate_step is None else self.collate_step.map(out)


class _Collate(grain.transforms.Map):
  """Pads encoded rows into one batch whose buckets every process agrees on.

  Without `agree` (one process) it runs inside `_Encode`, in the workers;
  with it, in the main process after the workers, because agreeing is a
  collective (a vector's element-wise maximum over processes).
  """

  def __init__(self, agree: Callable[[np.ndarray], np.ndarray] | None,
               pack: PackSpec | None = None, **collate_kw):
    self.agree, self.pack, self.collate_kw = agree, pack, collate_kw

  def map(self, examples: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    if self.pack is not None:
      return self._packed(examples)
    needs = batch_needs(examples, self.collate_kw["kind"])
    if self.agree is not None:
      needs = self.agree(needs)
    return collate(examples, global_needs=needs, **self.collate_kw)

  def _packed(self, examples: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    kind, spec, kw = self.collate_kw["kind"], self.pack, self.collate_kw
    media = (MediaPacking(kw["patch_buckets"], kw["merge_unit"], kw["audio_frame_buckets"])
             if kw["patch_buckets"] else None)
    needs = packed_needs(examples, kind, spec, media)
    if self.agree is not None:
      needs = self.agree(needs)
    return collate_packed(examples, kind=kind, num_rows=rows_for(int(needs[0]), spec.row_multiple),
                          length=spec.length, max_segments=spec.max_segments,
                          pad_id=kw["pad_id"], media=media, global_needs=needs)


PARENT_POLL_S = 1.0  # how often a worker checks that the process that started it lives


def exit_when_parent_dies(poll_s: float = PARENT_POLL_S) -> threading.Thread:
  """Ends this process (exit status 1) once the process that started it is gone.

  A daemon thread compares `os.getppid()` with its value at the call: when the
  parent dies, the child is re-parented (to init or a subreaper) and the value
  changes. Polling, rather than Linux's `PR_SET_PDEATHSIG`, because that signal
  follows the thread that forked the child, not the process, and works on
  Linux only.
  """
  parent = os.getppid()

  def watch():
    while True:
      time.sleep(poll_s)
      if os.getppid() != parent:
        os._exit(1)  # no cleanup to run: the queues' reader is gone

  thread = threading.Thread(target=watch, name="exit-when-parent-dies", daemon=True)
  thread.start()
  return thread


def leave_stop_signals_to_the_parent(worker_index: int, worker_count: int) -> None:
  """Grain worker start-up: SIGTERM and SIGINT ignored in the worker, and the
  worker ends when the main process does.

  A scheduler's preemption and a terminal's Ctrl-C signal the whole process
  group. The main process turns the signal into a checkpoint and a clean stop,
  and stops its workers itself (Grain sets their stop event, then kills what
  is left); a worker that died of the signal instead could leave a half-written
  batch in its queue, on which the main process's close then blocks forever.
  A main process that cannot stop them (killed by the kernel's out-of-memory
  killer, or by SIGKILL) would leave its workers running, each holding its
  imports and buffers (~3 GiB for the main job's); they exit within
  `PARENT_POLL_S` of it instead.
  """
  del worker_index, worker_count
  for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, signal.SIG_IGN)
  exit_when_parent_dies()


def prefetch_in_workers(it: grain.IterDataset, worker_count: int,
                        buffer_size: int | None = None) -> grain.IterDataset:
  """`it.mp_prefetch` over `worker_count` processes (none: `it` itself)."""
  if worker_count <= 0:
    return it
  # Grain's worker processes read absl flags; outside `main` (tests, notebooks)
  # nobody parsed them, so take the defaults.
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  buffer = {} if buffer_size is None else {"per_worker_buffer_size": buffer_size}
  options = grain.multiprocessing.MultiprocessingOptions(num_workers=worker_count, **buffer)
  it = grain.experimental.WithOptionsIterDataset(
      it, grain.experimental.DatasetOptions(min_shm_size=MIN_SHARED_MEMORY_BYTES))
  return it.mp_prefetch(options, worker_init_fn=leave_stop_signals_to_the_parent)


def make_dataset(records: Sequence[PreferenceRecord], encoder: ExampleEncoder, *,
                 batch_size: int, buckets: Sequence[int], pad_id: int, seed: int,
                 shuffle: bool = True, num_epochs: int | None = None,
                 worker_count: int = 0, worker_buffer_size: int = 2,
                 process_index: int = 0, process_count: int = 1,
                 patch_buckets: Sequence[int] = (),
                 audio_frame_buckets: Sequence[int] = (),
                 group_by_modality: bool = False,
                 pack: PackSpec | None = None,
                 agree: Callable[[np.ndarray], np.ndarray] | None = None,
                 read_threads: int = READ_THREADS,
                 read_buffer_size: int = READ_BUFFER_BATCHES,
                 shuffle_block: int = 1) -> grain.IterDataset:
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
      With one process (no `agree`) they also pad the batches.
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
    shuffle_block: with `shuffle`, shuffle blocks of this many consecutive
      records, each kept whole and in order: with a `batch_size` it divides,
      a block never straddles two batches or two processes (2: each pair
      followed by its A/B-swapped twin, `synthetic/omni.py`).
    pack: pack several examples per row (see `data.packing`; with media,
      a row holds at most the largest patch and frame bucket): each batch
      of `batch_size` examples becomes `pack.row_multiple * k` rows of
      `pack.length` tokens with segment ids, k the fewest that hold this
      batch (agreed between processes, with the rows' patch and frame needs).
    agree: with several processes, a collective that returns the
      element-wise maximum of a small int vector over processes
      (`core.multihost.agree_max`); each batch's (length, patch, frame)
      buckets are then those of the whole global batch.
    read_threads: threads that encode batches ahead of the consumer; peak
      host memory grows with this times one batch's encoding cost.
    read_buffer_size: batches encoded ahead of the consumer. With 0 (or
      `read_threads=0`) each batch is encoded when asked for, in the
      caller's thread.
  """
  if process_count > 1 and agree is None:
    raise ValueError("several processes need `agree` to pad their rows to common buckets")
  if not records:
    raise ValueError("the data set is empty (every record was skipped?)")
  if max(buckets) < encoder.max_length:
    raise ValueError(f"largest bucket {max(buckets)} < max_length {encoder.max_length}")
  merge_unit = 1
  if pack is not None:
    if pack.length < encoder.max_length:
      raise ValueError(f"packed rows of {pack.length} tokens cannot hold an example of "
                       f"max_length {encoder.max_length}")
    if batch_size % pack.row_multiple:
      raise ValueError(f"batch_size {batch_size} is not a multiple of the packed rows' "
                       f"multiple {pack.row_multiple}")
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
  global_rows = batch_size * process_count
  if shuffle and shuffle_block > 1:
    if group_by_modality:
      raise ValueError("data.shuffle_block > 1 and data.group_by_modality cannot be combined")
    if batch_size % shuffle_block:
      raise ValueError(f"data.shuffle_block {shuffle_block} must divide each process's batch "
                       f"of {batch_size} rows")
    ds = BlockShuffle(ds, block=shuffle_block, seed=seed)
  elif shuffle and group_by_modality:
    ds = GroupedShuffle(ds, [r.modality for r in records], chunk=global_rows, seed=seed)
  elif shuffle:
    ds = ds.shuffle(seed=seed)
  if num_epochs != 1:
    ds = ds.repeat(num_epochs)
  # One plan for all processes: the stream is cut into global batches first,
  # then each process takes its rows of each, so every process has the same
  # number of batches and a global batch holds the same records for any
  # process count.
  ds = ds.batch(global_rows, drop_remainder=False, batch_fn=list)
  collate_step = _Collate(agree, kind=encoder.kind, batch_size=batch_size,
                          buckets=tuple(buckets), pad_id=pad_id,
                          patch_buckets=tuple(patch_buckets), merge_unit=merge_unit,
                          audio_frame_buckets=tuple(audio_frame_buckets), pack=pack)
  # One process pads its batches where it encodes them; several agree on the
  # buckets first, a collective only the main process can join.
  in_workers = agree is None
  ds = ds.map(_Share(process_index, batch_size))
  ds = ds.map(_Encode(encoder, collate_step if in_workers else None))
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads,
                                             prefetch_buffer_size=read_buffer_size))
  it = prefetch_in_workers(it, worker_count, worker_buffer_size)
  return it if in_workers else it.map(collate_step)
