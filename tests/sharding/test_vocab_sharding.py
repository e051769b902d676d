"""The embedding table is split over its vocabulary rows, and its lookup stays local."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AbstractMesh, AxisType, NamedSharding, PartitionSpec as P

import omni_rrm_jax as orj
from omni_rrm_jax.sharding.mesh import MESH_AXES, make_mesh
from omni_rrm_jax.sharding.rules import DEFAULT_RULES, activation_sharding, spec_for

V, E = 1024, 32
CONFIG = dict(vocab_size=V, hidden_size=E, intermediate_size=48, num_hidden_layers=1,
              num_attention_heads=4, num_key_value_heads=2)
MESHES = {"fsdp": {"data": 1, "fsdp": 8, "tensor": 1},
          "fsdp_x_tensor": {"data": 1, "fsdp": 4, "tensor": 2},
          "data_fsdp_tensor": {"data": 2, "fsdp": 2, "tensor": 2}}


def test_omni_7b_tables_split_over_vocabulary():
  """Qwen2.5-Omni-7B's table [152064, 3584] and head [3584, 152064] on pod meshes."""
  def specs(sizes):
    mesh = AbstractMesh(tuple(sizes[a] for a in MESH_AXES), MESH_AXES,
                        axis_types=(AxisType.Auto,) * 3)
    return (spec_for(("vocab", "embed"), DEFAULT_RULES, (152064, 3584), mesh),
            spec_for(("embed", "vocab"), DEFAULT_RULES, (3584, 152064), mesh))

  # Pure fsdp: the table's rows are split 16 ways, not its columns (so no
  # device gathers all 152k rows for a lookup); the head keeps fsdp on embed.
  assert specs({"data": 1, "fsdp": 16, "tensor": 1}) == (P("fsdp", None), P("fsdp", None))
  assert specs({"data": 2, "fsdp": 4, "tensor": 4}) == (P(("tensor", "fsdp"), None),
                                                        P("fsdp", "tensor"))


def _forward_and_grad(model, ids_bt, mesh=None):
  graphdef, state = nnx.split(model)

  def loss(state, ids_bt):
    with activation_sharding(mesh, DEFAULT_RULES):
      logits_btv = nnx.merge(graphdef, state)(ids_bt).logits
    return jnp.sum(jnp.square(logits_btv[..., :5])), logits_btv

  fn = jax.value_and_grad(loss, has_aux=True)
  if mesh is None:
    return jax.jit(fn)(state, ids_bt), None
  batch = NamedSharding(mesh, spec_for(("batch", "length"), DEFAULT_RULES, ids_bt.shape, mesh))
  jitted = jax.jit(fn, in_shardings=(None, batch))
  ids_bt = jax.device_put(ids_bt, batch)
  return jitted(state, ids_bt), jitted.lower(state, ids_bt).compile().as_text()


@pytest.mark.parametrize("mesh_name", ["fsdp", "data_fsdp_tensor"])
def test_sharded_lookup_equals_unsharded_and_never_holds_the_whole_table(mesh_name):
  mesh = make_mesh(MESHES[mesh_name])
  config = dict(CONFIG, tie_word_embeddings=False)
  ids_bt = jax.random.randint(jax.random.key(0), (8, 6), 0, V)
  (_, ref_logits), ref_grads = _forward_and_grad(orj.from_config("Qwen2ForCausalLM", config),
                                                 ids_bt)[0]
  model = orj.from_config("Qwen2ForCausalLM", config, mesh=mesh)
  table = model.model.embed_tokens.weight[...]
  vocab_axes = ("fsdp",) if mesh_name == "fsdp" else ("tensor", "fsdp")
  assert table.sharding.spec == P(vocab_axes if len(vocab_axes) > 1 else vocab_axes[0], None)
  assert table.addressable_shards[0].data.shape == (V // (8 // MESHES[mesh_name]["data"]), E)
  ((_, logits), grads), hlo = _forward_and_grad(model, ids_bt, mesh)
  np.testing.assert_allclose(np.asarray(logits), np.asarray(ref_logits), atol=1e-5, rtol=0)
  grad_table = grads["model"]["embed_tokens"]["weight"][...]
  assert grad_table.sharding.is_equivalent_to(table.sharding, 2)
  np.testing.assert_allclose(np.asarray(grad_table),
                             np.asarray(ref_grads["model"]["embed_tokens"]["weight"][...]),
                             atol=1e-5, rtol=0)
  # No collective ever carries the whole table or a whole-table gradient.
  whole = [m.group(0) for m in re.finditer(
      rf"f32\[{V},{E}\]\S* (all-gather|all-reduce|reduce-scatter|all-to-all)", hlo)]
  assert not whole, whole


def test_tied_table_as_head_under_the_mesh():
  mesh = make_mesh(MESHES["fsdp_x_tensor"])
  config = dict(CONFIG, tie_word_embeddings=True)
  ids_bt = jax.random.randint(jax.random.key(1), (8, 6), 0, V)
  (_, ref_logits), _ = _forward_and_grad(orj.from_config("Qwen2ForCausalLM", config), ids_bt)[0]
  ((_, logits), _), _ = _forward_and_grad(
      orj.from_config("Qwen2ForCausalLM", config, mesh=mesh), ids_bt, mesh)
  np.testing.assert_allclose(np.asarray(logits), np.asarray(ref_logits), atol=1e-5, rtol=0)
