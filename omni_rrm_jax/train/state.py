"""The train state pytree, its shardings, and its sharded creation.

What is jitted, donated and checkpointed is a `TrainState` of plain arrays;
the model's structure travels separately as an NNX `GraphDef`:

  graphdef, state = init_train_state(model, tx, seed=0, mesh=mesh, trainable=trainable)
  model = nnx.merge(graphdef, state.params, state.frozen)   # inside a jitted step

`trainable` (an NNX filter, `train/trainable.py`) splits the parameters into
those that train (`params`: gradients, optimizer state, checkpoints) and the
frozen rest (`frozen`: a LoRA base, frozen encoders), which no gradient and no
optimizer state ever covers.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec, SingleDeviceSharding

from omni_rrm_jax.sharding.params import state_shardings
from omni_rrm_jax.sharding.rules import DEFAULT_RULES, Rules


@flax.struct.dataclass
class TrainState:
  """Everything a training step reads and writes.

  Attributes:
    step: int32 scalar, number of batches consumed (skipped updates included).
    params: `nnx.State` of the model's trained `nnx.Param`s.
    opt_state: the optax state for `params`.
    frozen: `nnx.State` of the parameters that do not train (empty when all
      do); not checkpointed, rebuilt from the model on resume.
    rng: a typed PRNG key; a step draws from `fold_in(rng, step)`.
    nonfinite_streak: int32, consecutive updates skipped for a non-finite loss
      or gradient norm.
    nonfinite_total: int32, all skipped updates; `step - nonfinite_total` is
      the number of updates applied (the optimizer's own count).
  """
  step: jax.Array
  params: nnx.State
  opt_state: Any
  rng: jax.Array
  nonfinite_streak: jax.Array
  nonfinite_total: jax.Array
  frozen: nnx.State = flax.struct.field(default_factory=lambda: nnx.State({}))

  def model_state(self) -> nnx.State:
    """Every parameter, trained and frozen: what `nnx.merge(graphdef, ...)` needs."""
    return nnx.merge_state(self.params, self.frozen)

  def trained(self) -> TrainState:
    """The state without its frozen parameters: what a checkpoint holds."""
    return self.replace(frozen=nnx.State({}))


def split_params(model: nnx.Module, trainable=nnx.Param
                 ) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
  """`(graphdef, trained params, frozen params)`; a model with non-parameter
  state is rejected, since the train state would silently drop it."""
  graphdef, params, frozen, rest = nnx.split(model, nnx.All(nnx.Param, trainable), nnx.Param,
                                             ...)
  others = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(rest)[0]]
  if others:
    raise ValueError("TrainState holds nnx.Param state only, but the model also has "
                     f"other state at {others[:3]}")
  return graphdef, params, frozen


def cast_frozen(frozen: nnx.State, dtype: Any) -> nnx.State:
  """Frozen floating matrices (ndim >= 2) stored in `dtype`; None keeps them.

  Every layer casts its kernels and tables to the compute dtype before use,
  so with `dtype` equal to the compute dtype the forward pass is unchanged
  while the frozen base (the bulk of a LoRA run's memory) takes half the
  bytes of float32. Vectors (norm scales, biases) keep their dtype.
  """
  if dtype is None:
    return frozen
  dtype = jnp.dtype(dtype)

  def one(x):
    if jnp.issubdtype(x.dtype, jnp.floating) and x.ndim >= 2:
      return x.astype(dtype)
    return x

  return jax.tree.map(one, frozen)


def _build(tx: optax.GradientTransformation, params: nnx.State, frozen: nnx.State,
           rng: jax.Array, frozen_dtype: Any = None) -> TrainState:
  # Copy so the state owns its buffers: donating it to a step must not
  # invalidate the model the caller still holds.
  params, frozen = jax.tree.map(jnp.copy, (params, frozen))
  frozen = cast_frozen(frozen, frozen_dtype)
  zero = jnp.zeros((), jnp.int32)
  return TrainState(step=zero, params=params, opt_state=tx.init(params), rng=rng,
                    nonfinite_streak=zero, nonfinite_total=zero, frozen=frozen)


def _build_from_seed(tx: optax.GradientTransformation, frozen_dtype: Any, params: nnx.State,
                     frozen: nnx.State, seed: jax.Array) -> TrainState:
  return _build(tx, params, frozen, jax.random.key(seed), frozen_dtype)


def _path_tuple(path) -> tuple:
  return tuple(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))) for k in path)


def opt_state_shardings(abstract_opt_state: Any, abstract_params: nnx.State,
                        param_shardings: nnx.State, mesh: Mesh) -> Any:
  """Shardings for an optimizer state that mirror those of the parameters.

  Every optimizer leaf whose key path ends with a parameter's key path and
  has that parameter's shape (Adam's `mu`/`nu`, masked or not, however deeply
  the chain nests them) gets that parameter's sharding. Everything else
  (counts, scalars, factored statistics of other shapes) is replicated.

  Args:
    abstract_opt_state: the optimizer state or its `jax.eval_shape`.
    abstract_params: the parameters or their `jax.eval_shape`.
    param_shardings: `NamedSharding`s with the structure of the parameters.
    mesh: the mesh.
  """
  by_path = {}
  for (path, leaf), sharding in zip(jax.tree_util.tree_flatten_with_path(abstract_params)[0],
                                    jax.tree.leaves(param_shardings)):
    by_path[_path_tuple(path)] = (tuple(leaf.shape), sharding)
  lengths = sorted({len(p) for p in by_path})
  replicated = NamedSharding(mesh, PartitionSpec())

  def one(path, leaf):
    key = _path_tuple(path)
    for n in lengths:
      hit = by_path.get(key[-n:]) if n <= len(key) else None
      if hit is not None and hit[0] == tuple(leaf.shape):
        return hit[1]
    return replicated

  return jax.tree_util.tree_map_with_path(one, abstract_opt_state)


def train_state_shardings(state: TrainState, mesh: Mesh,
                          rules: Rules = DEFAULT_RULES) -> TrainState:
  """A `TrainState` of `NamedSharding`s for a concrete or abstract state.

  Parameters are sharded by their logical axes (`state_shardings`), the
  optimizer state mirrors them (`opt_state_shardings`), scalars and the key
  are replicated.
  """
  params_sh = state_shardings(state.params, mesh, rules)
  replicated = NamedSharding(mesh, PartitionSpec())
  return TrainState(
      step=replicated, params=params_sh,
      opt_state=opt_state_shardings(state.opt_state, state.params, params_sh, mesh),
      rng=replicated, nonfinite_streak=replicated, nonfinite_total=replicated,
      frozen=state_shardings(state.frozen, mesh, rules))


def init_train_state(model: nnx.Module, tx: optax.GradientTransformation, seed: int = 0, *,
                     mesh: Mesh | None = None, rules: Rules = DEFAULT_RULES,
                     trainable=nnx.Param, frozen_dtype: Any = None
                     ) -> tuple[nnx.GraphDef, TrainState]:
  """Splits a model and creates its train state, born sharded on `mesh`.

  The optimizer state is created by a jitted init whose `out_shardings` are
  the mirrored parameter shardings, so no device ever holds a replicated copy.

  Args:
    model: an NNX model, ideally already created on `mesh` (`from_config(...,
      mesh=mesh)`); otherwise its parameters are moved there first.
    tx: the optimizer.
    seed: seeds `TrainState.rng`.
    mesh: the device mesh, or None for the default device.
    rules: logical -> mesh axis rules.
    trainable: an NNX filter of the parameters that train (default: all);
      the others go to `state.frozen`, with no optimizer state.
    frozen_dtype: storage dtype of the frozen matrices (`cast_frozen`); None
      keeps the parameter dtype.

  Returns:
    `(graphdef, state)`; the state owns fresh buffers (safe to donate).
  """
  graphdef, params, frozen = split_params(model, trainable)
  # The key is made inside the jitted init from a traced seed: a key made on
  # the host would live on one local device, which a multi-process jit
  # cannot take as an input.
  seed = np.asarray(seed, np.uint32)
  # `tx` is static (hashable), so repeated inits with one optimizer hit the
  # jit cache.
  if mesh is None:
    return graphdef, jax.jit(_build_from_seed, static_argnums=(0, 1))(
        tx, frozen_dtype, params, frozen, seed)
  abstract = jax.eval_shape(functools.partial(_build_from_seed, tx, frozen_dtype), params,
                            frozen, seed)
  shardings = train_state_shardings(abstract, mesh, rules)
  params = jax.device_put(params, shardings.params)
  frozen = jax.device_put(frozen, shardings.frozen)
  init = jax.jit(_build_from_seed, static_argnums=(0, 1), out_shardings=shardings)
  return graphdef, init(tx, frozen_dtype, params, frozen, seed)


def abstract_train_state(model: nnx.Module, tx: optax.GradientTransformation, *,
                         mesh: Mesh | None = None, rules: Rules = DEFAULT_RULES,
                         trainable=nnx.Param, frozen_dtype: Any = None
                         ) -> tuple[nnx.GraphDef, TrainState]:
  """The state's shapes, dtypes and target shardings, without allocating it.

  `model` may be abstract (`nnx.eval_shape(lambda: ...)`). The result is what
  `Checkpointer.restore` needs to read a checkpoint straight into its shards.
  """
  graphdef, params, frozen = split_params(model, trainable)
  shapes = jax.eval_shape(functools.partial(_build, tx, frozen_dtype=frozen_dtype), params,
                          frozen, jax.random.key(0))
  if mesh is None:
    single = SingleDeviceSharding(jax.devices()[0])
    shardings = jax.tree.map(lambda _: single, shapes)
  else:
    shardings = train_state_shardings(shapes, mesh, rules)
  abstract = jax.tree.map(
      lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)
  return graphdef, abstract
