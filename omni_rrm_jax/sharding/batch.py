"""Host batches -> global arrays sharded over the mesh's batch axes."""

from __future__ import annotations

from typing import Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

from omni_rrm_jax.sharding.rules import DEFAULT_RULES, Rules, spec_for

# Host-side bookkeeping that never goes to the devices.
HOST_ONLY = ("invalid_reason", "truncated", "modality", "index", "vision_grid_thw")


def to_global(batch: Mapping[str, np.ndarray], mesh: Mesh | None,
              rules: Rules = DEFAULT_RULES) -> dict[str, jax.Array]:
  """Places this process's rows of a batch into global arrays.

  Each process passes its own rows; the global batch is their concatenation
  in process order, sharded by the `batch` logical axis. Every key is
  row-aligned (media included: each row carries its own patches), so every
  key is split by its leading axis alike.
  """
  out = {}
  for key, value in batch.items():
    if key in HOST_ONLY:
      continue
    if mesh is None:
      out[key] = jax.device_put(value)
      continue
    axes = ("batch",) + ("length",) * (value.ndim - 1)
    global_shape = (value.shape[0] * jax.process_count(), *value.shape[1:])
    sharding = NamedSharding(mesh, spec_for(axes, rules, global_shape, mesh))
    out[key] = jax.make_array_from_process_local_data(sharding, value, global_shape)
  return out
