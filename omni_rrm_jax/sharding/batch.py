"""Host batches -> global arrays sharded over the mesh's batch axes."""

from __future__ import annotations

from typing import Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

from omni_rrm_jax.core.batch_contract import HOST_ONLY
from omni_rrm_jax.core.multihost import check_same
from omni_rrm_jax.sharding.rules import DEFAULT_RULES, Rules, spec_for


def to_global(batch: Mapping[str, np.ndarray], mesh: Mesh | None,
              rules: Rules = DEFAULT_RULES) -> dict[str, jax.Array]:
  """Places this process's rows of a batch into global arrays.

  Each process passes its own rows; the global batch is their concatenation
  in process order, sharded by the `batch` logical axis. Every key is
  row-aligned (media included: each row carries its own patches), so every
  key is split by its leading axis alike.
  """
  if mesh is not None and jax.process_count() > 1:
    # A process that pads to other buckets would make XLA hang or mix rows:
    # one integer's collective turns that into a clear error.
    check_same(" ".join(f"{k}{tuple(v.shape)}:{v.dtype}" for k, v in sorted(batch.items())
                        if k not in HOST_ONLY), "the shapes of this step's batch")
  out = {}
  for key, value in batch.items():
    if key in HOST_ONLY:
      continue
    if mesh is None:
      out[key] = jax.device_put(value)
      continue
    axes = ("batch",) + ("length",) * (value.ndim - 1)
    global_shape = (value.shape[0] * jax.process_count(), *value.shape[1:])
    spec = spec_for(axes, rules, global_shape, mesh)
    if jax.process_count() > 1 and (len(spec) == 0 or spec[0] is None):
      # Too few rows to split over the batch's mesh axes: the array is
      # replicated, so every process must hold all of it.
      from jax.experimental import multihost_utils
      value = np.asarray(multihost_utils.process_allgather(value, tiled=True))
    sharding = NamedSharding(mesh, spec)
    out[key] = jax.make_array_from_process_local_data(sharding, value, global_shape)
  return out


def host_rows(x) -> np.ndarray:
  """This process's rows of a batch-sharded array, as host numpy, in the order
  `to_global` took them (a fully addressable array comes back whole)."""
  if not isinstance(x, jax.Array) or x.is_fully_addressable:
    return np.asarray(x)
  blocks = {s.index[0].start or 0: s.data for s in x.addressable_shards}
  return np.concatenate([np.asarray(blocks[k]) for k in sorted(blocks)])
