"""Train-state construction and optimizer-state shardings (no compilation)."""

import jax
import jax.numpy as jnp
import optax
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from omni_rrm_jax.sharding.mesh import make_mesh
from omni_rrm_jax.sharding.params import state_shardings
from omni_rrm_jax.train.state import opt_state_shardings, split_params


class Toy(nnx.Module):

  def __init__(self):
    self.w = nnx.Param(jnp.zeros((4, 6)), logical_axes=("embed", "mlp"))
    self.b = nnx.Param(jnp.zeros((6,)), logical_axes=("mlp",))


def test_opt_state_mirrors_params_through_masks_and_nesting():
  mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  _, params, _ = split_params(Toy())
  params_sh = state_shardings(params, mesh)
  only_matrices = lambda p: jax.tree.map(lambda x: x.ndim > 1, p)  # noqa: E731
  tx = optax.chain(optax.clip_by_global_norm(1.0),
                   optax.masked(optax.adam(1e-3), only_matrices),
                   optax.adamw(1e-3, mask=only_matrices))
  abstract = jax.eval_shape(tx.init, params)
  sh = opt_state_shardings(abstract, params, params_sh, mesh)
  flat = {jax.tree_util.keystr(p): s for p, s in jax.tree_util.tree_flatten_with_path(sh)[0]}
  w = [s for k, s in flat.items() if "['w']" in k]
  b = [s for k, s in flat.items() if "['b']" in k]
  assert len(w) == 4 and all(s.spec == P("fsdp", "tensor") for s in w)  # 2x (mu, nu)
  assert len(b) == 2 and all(s.spec == P("tensor") for s in b)  # masked off in the first adam
  rest = [s for k, s in flat.items() if "['w']" not in k and "['b']" not in k]
  assert rest and all(s == NamedSharding(mesh, P()) for s in rest)


def test_non_param_state_is_rejected():
  model = Toy()
  model.stat = nnx.BatchStat(jnp.zeros(3))
  with pytest.raises(ValueError, match="other state at.*stat"):
    split_params(model)
