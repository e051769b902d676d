"""A per-epoch shuffle whose consecutive chunks each hold one group (e.g. one modality).

Mixed-modality batches pad every row to the longest one: a 30-token text pair
in the same batch as an 80-token audio pair costs as much as the audio pair,
and every batch pays for the vision and the audio encoders. Drawing each
global batch from one modality lets the bucketed collate pad text batches to
the text length and skip the encoders a batch does not use. This is the
"group by modality" sampling that multimodal trainers use for the same reason.

`BlockShuffle` keeps blocks of consecutive records together instead: a pair and
its A/B-swapped twin share a batch (`data.shuffle_block`).

The order is a pure function of (seed, epoch), so an iterator state that holds
the position resumes exactly, in any worker process.
"""

from __future__ import annotations

from typing import Hashable, Sequence

import grain
import numpy as np


def grouped_order(groups: np.ndarray, chunk: int, seed: int, epoch: int) -> np.ndarray:
  """One epoch's order of the indices 0..len(groups)-1, in single-group chunks.

  Each group's indices are shuffled and cut into chunks of `chunk`; what is
  left of every group (fewer than `chunk` each) is shuffled together into
  mixed chunks; the chunks are shuffled. A final remainder of fewer than
  `chunk` indices is dropped, so every epoch starts on a chunk boundary (a
  different remainder each epoch).

  Args:
    groups: an integer group id per index.
    chunk: indices per chunk (the global batch size).
    seed: shuffle seed.
    epoch: the epoch; each is shuffled anew.

  Returns:
    int64 indices, a multiple of `chunk` long.
  """
  rng = np.random.default_rng([seed, epoch])
  chunks, rest = [], []
  for g in np.unique(groups):
    members = rng.permutation(np.flatnonzero(groups == g))
    full = len(members) // chunk * chunk
    chunks.extend(members[i:i + chunk] for i in range(0, full, chunk))
    rest.append(members[full:])
  rest = rng.permutation(np.concatenate(rest))
  full = len(rest) // chunk * chunk
  chunks.extend(rest[i:i + chunk] for i in range(0, full, chunk))
  if not chunks:
    return np.zeros((0,), np.int64)
  return np.concatenate([chunks[i] for i in rng.permutation(len(chunks))]).astype(np.int64)


class _EpochOrder(grain.MapDataset):
  """A per-epoch reordering of `parent`: `_order(epoch)` gives the epoch's indices.

  Like Grain's shuffle, an index past the end selects a later epoch (so
  `repeat` after it reshuffles every epoch); an order is a pure function of
  (seed, epoch), so an iterator state that holds the position resumes exactly,
  in any worker process.
  """

  def __init__(self, parent: grain.MapDataset, length: int):
    super().__init__(parent)
    self._length = length
    self._epoch, self._cached = -1, None

  def _order(self, epoch: int) -> np.ndarray:
    raise NotImplementedError

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    epoch, position = divmod(int(index), self._length)
    if epoch != self._epoch:
      self._cached, self._epoch = self._order(epoch), epoch
    return self._parent[int(self._cached[position])]


class GroupedShuffle(_EpochOrder):
  """Shuffles `parent` per epoch so that each run of `chunk` elements is one group.

  One epoch is `len(parent) // chunk * chunk` elements long.
  """

  def __init__(self, parent: grain.MapDataset, keys: Sequence[Hashable], *, chunk: int,
               seed: int):
    if len(keys) != len(parent):
      raise ValueError(f"{len(keys)} group keys for {len(parent)} elements")
    if chunk < 1:
      raise ValueError(f"chunk must be positive, got {chunk}")
    super().__init__(parent, len(parent) // chunk * chunk)
    ids = {k: i for i, k in enumerate(sorted(set(keys), key=str))}
    self._groups = np.asarray([ids[k] for k in keys], np.int64)
    self._chunk, self._seed = chunk, seed
    if self._length == 0:
      raise ValueError(f"{len(parent)} elements do not fill one batch of {chunk}")

  def _order(self, epoch: int) -> np.ndarray:
    return grouped_order(self._groups, self._chunk, self._seed, epoch)

  def __str__(self) -> str:
    return f"GroupedShuffle(chunk={self._chunk}, seed={self._seed})"


class BlockShuffle(_EpochOrder):
  """A per-epoch shuffle of `parent` in blocks of `block` consecutive elements,
  each block kept whole and in its order (e.g. a pair followed by its A/B-swapped
  twin, so both land in one batch when `block` divides the batch size)."""

  def __init__(self, parent: grain.MapDataset, *, block: int, seed: int):
    if block < 1:
      raise ValueError(f"block must be positive, got {block}")
    if len(parent) % block:
      raise ValueError(f"{len(parent)} records are not whole blocks of {block} "
                       "(data.shuffle_block)")
    super().__init__(parent, len(parent))
    self._block, self._seed = block, seed

  def _order(self, epoch: int) -> np.ndarray:
    blocks = np.random.default_rng([self._seed, epoch]).permutation(self._length // self._block)
    return (blocks[:, None] * self._block + np.arange(self._block)).reshape(-1)

  def __str__(self) -> str:
    return f"BlockShuffle(block={self._block}, seed={self._seed})"
