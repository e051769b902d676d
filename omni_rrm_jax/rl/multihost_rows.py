"""GRPO rows across processes: each samples its share, all decide on the whole.

Each process samples and scores its rows of a round (its consecutive rows of
the global prompt batch, G completions per prompt, so groups never straddle
processes). What GRPO decides from rewards (which groups dynamic sampling
keeps, advantages, metrics) and how the update cuts minibatches are global:
after scoring, `gather_rows` gives every process every row of the round, in
global order, and each process feeds its `process_share` of every global
minibatch to the jitted step. Every process then takes the same decisions
and the update sees the same global arrays for any process count. With one
process nothing moves.

What moves: per-row numbers (completion tokens, log-probs, rewards; prompts
once per group). Object columns (a multimodal prompt's decoded media) stay
where they were made; other processes' rows hold None there, and a process
that trains on such a row rebuilds it from the record (`fill_objects`).
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from omni_rrm_jax.core.multihost import allgather

# Columns equal over a group's G rows: gathered once per group.
GROUP_COLUMNS = ("prompt_ids", "prompt_mask", "index", "valid", "invalid_reason")


def _allgather(tree: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Each leaf of every process, stacked on a new leading process axis."""
  # Booleans travel as bytes (not every collective backend takes them).
  dtypes = {k: v.dtype for k, v in tree.items()}
  sent = {k: v.astype(np.uint8) if v.dtype == bool else v for k, v in tree.items()}
  got = multihost_utils.process_allgather(sent)
  return {k: np.asarray(v).astype(dtypes[k]) for k, v in got.items()}


def gather_rows(batch: Mapping[str, np.ndarray], group_size: int) -> dict[str, np.ndarray]:
  """Every process's rows of a round, concatenated in process (global) order.

  Args:
    batch: this process's rows (the same number on every process), in groups
      of `group_size`; object columns are kept for this process's rows only.
    group_size: G.

  Returns:
    The global batch, the same on every process (object columns: None at
    other processes' rows).
  """
  if jax.process_count() == 1:
    return dict(batch)
  n = len(batch["index"])
  numeric = {k: np.asarray(v)[::group_size] if k in GROUP_COLUMNS else np.asarray(v)
             for k, v in batch.items() if np.asarray(v).dtype != object}
  gathered = _allgather(numeric)
  out = {}
  for k, v in gathered.items():
    v = v.reshape(-1, *v.shape[2:])
    out[k] = np.repeat(v, group_size, axis=0) if k in GROUP_COLUMNS else v
  start = jax.process_index() * n
  for k, v in batch.items():
    if np.asarray(v).dtype == object:
      column = np.full(n * jax.process_count(), None, dtype=object)
      column[start:start + n] = v
      out[k] = column
  return out


def process_share(rows_r: np.ndarray) -> np.ndarray:
  """This process's part of global rows `rows_r`: its consecutive
  len(rows_r) / process_count of them, in process order (as `to_global`
  joins them)."""
  n, rem = divmod(len(rows_r), jax.process_count())
  if rem:
    raise ValueError(f"{len(rows_r)} rows do not split over {jax.process_count()} processes")
  return rows_r[jax.process_index() * n:(jax.process_index() + 1) * n]


def all_rows(x) -> np.ndarray:
  """Every row of a batch-sharded global array, as host numpy on every process."""
  if not isinstance(x, jax.Array) or x.is_fully_addressable:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def fill_objects(column: np.ndarray, rows_r: np.ndarray,
                 rebuild: Callable[[int], object]) -> list:
  """The entries of an object column at rows `rows_r`; a missing one (another
  process's row) is `rebuild(row)`."""
  return [column[r] if column[r] is not None else rebuild(int(r)) for r in rows_r]


def total_counts(counts: Mapping[str, int], names: Sequence[str]) -> dict[str, int]:
  """Sums over processes of counts each process keeps for its own rows (one
  collective); `names` lists every key any process may hold. Zeros are left out."""
  total = allgather([int(counts.get(k, 0)) for k in names]).sum(axis=0)
  return {k: int(v) for k, v in zip(names, total) if v}
