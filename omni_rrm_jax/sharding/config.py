"""Default mesh and logical-axis-rule settings shared by every task config."""

from __future__ import annotations

import ml_collections

from omni_rrm_jax.sharding.rules import DEFAULT_RULES


def mesh_config(data: int = -1, fsdp: int = 1, tensor: int = 1) -> ml_collections.ConfigDict:
  """`config.mesh`: sizes of the (data, fsdp, tensor) axes; one may be -1."""
  return ml_collections.ConfigDict({"data": data, "fsdp": fsdp, "tensor": tensor})


def rules_config() -> ml_collections.ConfigDict:
  """`config.rules`: logical axis -> mesh axis (a name, a list of names, or None)."""
  return ml_collections.ConfigDict(
      {name: (list(axes) if isinstance(axes, tuple) else axes) for name, axes in DEFAULT_RULES})
