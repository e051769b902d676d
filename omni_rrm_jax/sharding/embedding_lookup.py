"""Embedding lookup with the table split over its vocabulary rows.

  x_bte = embedding_lookup(table_ve, ids_bt)     # inside `activation_sharding(mesh, rules)`

A 152k x 3584 table is 1 GiB in bf16; gathering it whole on every device for
a lookup (or building its full-size gradient before reducing it) costs that
much memory per device. When the rules split the table's `vocab` rows over
mesh axes, the lookup runs per shard instead (`jax.shard_map`):

  1. each device gathers the token ids of the batch rows held by its peers
     on the mesh axes that split both the batch and the vocabulary (small
     int32 arrays);
  2. it looks up the ids that fall in its own rows, zeros for the others;
  3. the partial rows are summed over the vocabulary axes: scattered back
     to the batch rows' owners on the axes shared with the batch
     (`psum_scatter`), then all-reduced over the others (`psum`).

Only activations [B, T, E] move; the table and its gradient (a scatter-add
into the local rows) stay split. Without a mesh, or when the table's rows
are not split, it is a plain `jnp.take`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from omni_rrm_jax.sharding.rules import active_sharding, spec_for


def _axes(entry) -> tuple[str, ...]:
  if entry is None:
    return ()
  return (entry,) if isinstance(entry, str) else tuple(entry)


def embedding_lookup(table_ve: jax.Array, ids_bt: jax.Array) -> jax.Array:
  """Rows of `table_ve` [V, E] at `ids_bt` [B, T]: [B, T, E] in the table's dtype.

  Ids outside [0, V) give zero rows under a split table (and `jnp.take`'s
  clamping otherwise); the models never pass such ids.
  """
  active = active_sharding()
  if active is None or ids_bt.ndim != 2:
    return jnp.take(table_ve, ids_bt, axis=0)
  mesh, rules = active
  table_spec = spec_for(("vocab", "embed"), rules, table_ve.shape, mesh)
  ids_spec = spec_for(("batch", "length"), rules, ids_bt.shape, mesh)
  vocab_axes, batch_axes = _axes(table_spec[0]), _axes(ids_spec[0])
  if not vocab_axes or table_spec[1] is not None or ids_spec[1] is not None:
    # Rows not split (or an unusual layout): the partitioner's own gather.
    return jnp.take(table_ve, ids_bt, axis=0)
  shared = tuple(a for a in batch_axes if a in vocab_axes)  # batch order: block order
  vocab_only = tuple(a for a in vocab_axes if a not in batch_axes)
  rows_per_shard = table_ve.shape[0] // math.prod(mesh.shape[a] for a in vocab_axes)

  def local(table_local_ve, ids_local_bt):
    ids_all_bt = (jax.lax.all_gather(ids_local_bt, shared, axis=0, tiled=True)
                  if shared else ids_local_bt)
    shard = 0
    for a in vocab_axes:  # row-major over the vocabulary's mesh axes, as the spec splits it
      shard = shard * mesh.shape[a] + jax.lax.axis_index(a)
    local_ids_bt = ids_all_bt - shard * rows_per_shard
    hit_bt = (local_ids_bt >= 0) & (local_ids_bt < rows_per_shard)
    x_bte = jnp.take(table_local_ve, jnp.where(hit_bt, local_ids_bt, 0), axis=0)
    # Exactly one shard holds each row, so the sums below add zeros to it.
    x_bte = jnp.where(hit_bt[..., None], x_bte, jnp.zeros((), x_bte.dtype))
    if shared:  # first, so the all-reduce below moves only this device's rows
      x_bte = jax.lax.psum_scatter(x_bte, shared, scatter_dimension=0, tiled=True)
    if vocab_only:
      x_bte = jax.lax.psum(x_bte, vocab_only)
    return x_bte

  batch_entry = ids_spec[0]
  return jax.shard_map(
      local, mesh=mesh,
      in_specs=(PartitionSpec(table_spec[0], None), PartitionSpec(batch_entry, None)),
      out_specs=PartitionSpec(batch_entry, None, None))(table_ve, ids_bt)
