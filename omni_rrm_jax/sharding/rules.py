"""Logical axis names -> mesh axes.

Modules name every parameter and main activation dimension with a logical axis
(`batch`, `length`, `embed`, `heads`, ...). One table, held in the config, maps
those names to mesh axes. This file turns names into `PartitionSpec`s and
applies activation constraints while a mesh is active.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MeshAxes = str | tuple[str, ...] | None
Rules = Sequence[tuple[str, MeshAxes]]

# Fully-sharded data parallel on `fsdp`, tensor parallel on `tensor`, batch over
# both data axes. Logical names absent from the table are replicated.
# `vocab` takes `fsdp` too: the embedding table [vocab, embed] is then split over
# its rows on every axis (its lookup stays local, `sharding/embedding_lookup.py`),
# while a head [embed, vocab] keeps `fsdp` on `embed` (each mesh axis once per
# array, first dimension first).
DEFAULT_RULES: tuple[tuple[str, MeshAxes], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("embed", "fsdp"),
    ("vocab", ("tensor", "fsdp")),
    ("mlp", "tensor"),
    ("q_heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("labels", None),
    ("norm", None),
    # The vision and audio towers shard like the text decoder (about 1.3B
    # parameters in a 7B thinker: replicated, they would take 5 GiB a device).
    ("vision_embed", "fsdp"),
    ("vision_mlp", "tensor"),
    ("vision_heads", "tensor"),
    ("audio_embed", "fsdp"),
    ("audio_mlp", "tensor"),
    ("audio_heads", "tensor"),
    ("layers", None),  # the leading axis of stacked (scanned) layer parameters
)


def spec_for(logical_axes: Sequence[str | None] | None, rules: Rules,
             shape: Sequence[int] | None = None,
             mesh: Mesh | None = None) -> PartitionSpec:
  """The `PartitionSpec` for one array given its logical axis names.

  A mesh axis is used at most once per array (first dimension wins), and when
  `shape` and `mesh` are given a dimension that the mesh axes do not divide is
  left replicated rather than failing at placement time.
  """
  if logical_axes is None:
    return PartitionSpec()
  table = dict(rules)
  used: set[str] = set()
  out = []
  for i, name in enumerate(logical_axes):
    axes = table.get(name) if name is not None else None
    if axes is None:
      out.append(None)
      continue
    axes = (axes,) if isinstance(axes, str) else tuple(axes)
    axes = tuple(a for a in axes if a not in used)
    if mesh is not None:
      axes = tuple(a for a in axes if a in mesh.shape and mesh.shape[a] > 1)
    if shape is not None and mesh is not None and axes:
      size = int(np.prod([mesh.shape[a] for a in axes]))
      if shape[i] % size:
        axes = ()
    used.update(axes)
    out.append(axes[0] if len(axes) == 1 else (axes or None))
  return PartitionSpec(*out)


# The mesh and rules in force while tracing, for activation constraints.
_ACTIVE: contextvars.ContextVar[tuple[Mesh, Rules] | None] = contextvars.ContextVar(
    "omni_rrm_jax_sharding", default=None)


@contextlib.contextmanager
def activation_sharding(mesh: Mesh | None, rules: Rules = DEFAULT_RULES) -> Iterator[None]:
  """Within this context, `constrain` pins activations to the mesh."""
  token = _ACTIVE.set((mesh, tuple(rules)) if mesh is not None else None)
  try:
    yield
  finally:
    _ACTIVE.reset(token)


def active_sharding() -> tuple[Mesh, Rules] | None:
  """The (mesh, rules) of the enclosing `activation_sharding`, or None."""
  return _ACTIVE.get()


def constrain(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
  """`with_sharding_constraint` by logical names; a no-op without a mesh."""
  active = _ACTIVE.get()
  if active is None:
    return x
  mesh, rules = active
  spec = spec_for(logical_axes, rules, x.shape, mesh)
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def rules_from_config(table: Mapping[str, MeshAxes] | Rules | None) -> Rules:
  """Accepts a dict (as ml-collections holds it) or a sequence of pairs."""
  if table is None:
    return DEFAULT_RULES
  if isinstance(table, Mapping):
    items = table.items()
  else:
    items = table
  out = []
  for name, axes in items:
    if isinstance(axes, list):
      axes = tuple(axes)
    out.append((name, axes))
  return tuple(out)
