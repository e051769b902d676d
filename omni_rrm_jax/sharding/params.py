"""Shardings for NNX parameter state from their logical-axis metadata."""

from __future__ import annotations

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from omni_rrm_jax.sharding.rules import DEFAULT_RULES, Rules, spec_for


def logical_axes_of(variable: nnx.Variable) -> tuple[str | None, ...] | None:
  return variable.get_metadata().get("logical_axes")


def state_shardings(state: nnx.State, mesh: Mesh, rules: Rules = DEFAULT_RULES):
  """A pytree of `NamedSharding`s matching `state` (abstract or concrete)."""

  def one(v):
    if isinstance(v, nnx.Variable):
      value = v.get_value()
      return v.replace(NamedSharding(
          mesh, spec_for(logical_axes_of(v), rules, value.shape, mesh)))
    return NamedSharding(mesh, jax.sharding.PartitionSpec())

  return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def create_sharded(build, mesh: Mesh | None, rules: Rules = DEFAULT_RULES):
  """Builds an NNX module with its parameters born sharded.

  `build` is a zero-argument function returning the module. Its state is first
  traced abstractly (`nnx.eval_shape`), its shardings derived from logical
  names, then a jitted initialiser writes every array straight into its shards,
  so no device ever holds a full copy of a sharded parameter.
  """
  if mesh is None:
    return build()
  abstract = nnx.eval_shape(build)
  graphdef, abstract_state = nnx.split(abstract)
  shardings = state_shardings(abstract_state, mesh, rules)

  def init():
    return nnx.state(build())

  state = jax.jit(init, out_shardings=shardings)()
  return nnx.merge(graphdef, state)
