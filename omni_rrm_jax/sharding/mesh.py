"""Device meshes built from config."""

from __future__ import annotations

from typing import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

MESH_AXES = ("data", "fsdp", "tensor")


def mesh_shape(axis_sizes: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
  """Resolves one `-1` entry so that the mesh covers all devices.

  Args:
    axis_sizes: size per mesh axis, in `MESH_AXES` order; at most one is -1.
    num_devices: number of devices the mesh must span.

  Returns:
    The mesh shape as a tuple in `MESH_AXES` order.
  """
  unknown = [k for k in axis_sizes if k not in MESH_AXES]
  if unknown:
    raise ValueError(f"unknown mesh axes {unknown}; the mesh axes are {list(MESH_AXES)}")
  sizes = [int(axis_sizes.get(a, 1)) for a in MESH_AXES]
  free = [i for i, s in enumerate(sizes) if s == -1]
  if len(free) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
  known = int(np.prod([s for s in sizes if s != -1]))
  if free:
    if num_devices % known:
      raise ValueError(
          f"mesh {dict(zip(MESH_AXES, sizes))} does not divide {num_devices} devices")
    sizes[free[0]] = num_devices // known
  if int(np.prod(sizes)) != num_devices:
    raise ValueError(
        f"mesh {dict(zip(MESH_AXES, sizes))} has {int(np.prod(sizes))} devices, "
        f"but {num_devices} are available")
  return tuple(sizes)


def make_mesh(axis_sizes: Mapping[str, int] | None = None,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds a (data, fsdp, tensor) mesh with explicit `axis_types`.

  Args:
    axis_sizes: e.g. `{"data": -1, "fsdp": 1, "tensor": 1}` (the default:
      pure data parallelism over every device).
    devices: the devices to use; all devices by default.

  Returns:
    A `jax.sharding.Mesh` whose axes are all `AxisType.Auto`, so that the
    logical sharding rules steer XLA's partitioner.
  """
  axis_sizes = dict(axis_sizes or {"data": -1})
  devices = list(devices) if devices is not None else jax.devices()
  shape = mesh_shape(axis_sizes, len(devices))
  axis_types = (AxisType.Auto,) * len(MESH_AXES)
  if len(devices) == len(jax.devices()):
    return jax.make_mesh(shape, MESH_AXES, axis_types=axis_types)
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=axis_types)
