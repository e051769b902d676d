"""Forward passes on a 2x2x2 (data x fsdp x tensor) mesh equal single-device ones."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

import omni_rrm_jax as orj
from omni_rrm_jax.sharding.mesh import make_mesh, mesh_shape
from omni_rrm_jax.sharding.rules import DEFAULT_RULES, activation_sharding, spec_for
from tests.models.hf_fixtures import BASE, padded_batch, saved_model


@pytest.fixture(scope="module")
def mesh():
  assert jax.device_count() == 8, "tests/conftest.py must force 8 host devices"
  return make_mesh({"data": 2, "fsdp": 2, "tensor": 2})


def sharded_forward(model, mesh, ids, mask):
  graphdef, state = nnx.split(model)
  batch_sharding = NamedSharding(mesh, spec_for(("batch", "length"), DEFAULT_RULES, ids.shape, mesh))

  @jax.jit
  def fwd(state, ids, mask):
    with activation_sharding(mesh, DEFAULT_RULES):
      return nnx.merge(graphdef, state)(ids, attention_mask=mask).logits

  ids = jax.device_put(jnp.asarray(ids), batch_sharding)
  mask = jax.device_put(jnp.asarray(mask), batch_sharding)
  return np.asarray(fwd(state, ids, mask))


@pytest.mark.parametrize("case", ["qwen2_lm", "qwen3_cls"])
def test_loaded_model_is_split_and_matches_single_device(case, mesh):
  folder = saved_model(case)
  ids, mask = padded_batch()
  ids, mask = np.concatenate([ids, ids[:1]]), np.concatenate([mask, mask[:1]])  # batch 4
  single = np.asarray(orj.from_pretrained(folder)(jnp.asarray(ids),
                                                 attention_mask=jnp.asarray(mask)).logits)
  model = orj.from_pretrained(folder, mesh=mesh)
  gate = model.model.layers[0].mlp.gate_proj.kernel[...]
  assert gate.sharding.spec == P("fsdp", "tensor")
  assert gate.addressable_shards[0].data.shape == (BASE["hidden_size"] // 2,
                                                   BASE["intermediate_size"] // 2)
  q = model.model.layers[0].self_attn.q_proj.kernel[...]
  assert q.sharding.spec == P("fsdp", "tensor", None)
  # vocab=101 is not divisible by the tensor axis: replicated, not an error.
  assert model.model.embed_tokens.weight[...].sharding.spec == P(None, "fsdp")
  out = sharded_forward(model, mesh, ids, mask)
  np.testing.assert_allclose(out, single, atol=1e-5, rtol=0)


def test_random_init_is_born_sharded(mesh):
  config = dict(BASE, tie_word_embeddings=False)
  model = orj.from_config("LlamaForCausalLM", config, mesh=mesh, seed=3)
  down = model.model.layers[1].mlp.down_proj.kernel[...]
  assert down.sharding.spec == P("tensor", "fsdp")
  assert len({s.device for s in down.addressable_shards}) == 8
  same = orj.from_config("LlamaForCausalLM", config, seed=3)
  # Same seed, same values, sharded or not (up to fused-vs-eager rounding).
  np.testing.assert_allclose(np.asarray(down),
                             np.asarray(same.model.layers[1].mlp.down_proj.kernel[...]),
                             rtol=1e-6, atol=1e-8)


def test_mesh_shape_resolution():
  assert mesh_shape({"data": -1, "tensor": 2}, 8) == (4, 1, 2)
  with pytest.raises(ValueError, match="at most one mesh axis"):
    mesh_shape({"data": -1, "fsdp": -1}, 8)
  with pytest.raises(ValueError, match="does not divide"):
    mesh_shape({"data": -1, "tensor": 3}, 8)
  with pytest.raises(ValueError, match="unknown mesh axes"):
    mesh_shape({"model": 2}, 8)


def test_spec_uses_each_mesh_axis_once(mesh):
  rules = (("a", "fsdp"), ("b", ("fsdp", "tensor")))
  assert spec_for(("a", "b"), rules, (4, 4), mesh) == P("fsdp", "tensor")
