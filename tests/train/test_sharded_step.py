"""The train step on a 2x2x2 (data, fsdp, tensor) mesh equals the one-device step."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import omni_rrm_jax as orj
from omni_rrm_jax.sharding.mesh import make_mesh
from omni_rrm_jax.train.state import init_train_state
from omni_rrm_jax.train.step import make_train_step
from omni_rrm_jax.train.task_kind import RM
from tests.train.fixtures import TINY, rm_batch, tiny_model


@pytest.fixture(scope="module")
def mesh():
  assert jax.device_count() == 8, "tests/conftest.py must force 8 host devices"
  return make_mesh({"data": 2, "fsdp": 2, "tensor": 2})


def leaves_by_path(tree):
  return {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


GATE = "['model']['layers'][0]['mlp']['gate_proj']['kernel'].value"


def test_sharded_step_matches_single_device(mesh, rm):
  batch = rm_batch(11)
  single, m_single = rm.steps[1](rm.fresh_state(), batch)

  # The same initial weights (same seed), born sharded.
  graphdef, state = init_train_state(tiny_model("rm", mesh=mesh), rm.tx, mesh=mesh)
  # Two micro-batches, so the scan carry's sharding is exercised too.
  sharded_step = make_train_step(graphdef, rm.tx, RM, schedule=rm.schedule, mesh=mesh,
                                 grad_accum_steps=2, center_coef=0.01)
  sharded, m_sharded = sharded_step(state, batch)

  np.testing.assert_allclose(m_sharded["loss"], m_single["loss"], rtol=1e-5)
  want = leaves_by_path(jax.device_get(single.params))
  got = leaves_by_path(sharded.params)
  for path, value in got.items():
    np.testing.assert_allclose(np.asarray(value), want[path], atol=1e-5, rtol=0, err_msg=path)

  gate = got[GATE]
  assert gate.sharding.spec == P("fsdp", "tensor")
  assert gate.addressable_shards[0].data.shape == (16, 24)
  # Every optimizer leaf that shadows a parameter is sharded like it.
  param_sharding = {path: x.sharding for path, x in got.items()}
  mirrored = 0
  for path, x in leaves_by_path(sharded.opt_state).items():
    match = [p for p in param_sharding if path.endswith(p)]
    if match:
      assert x.sharding.is_equivalent_to(param_sharding[match[0]], x.ndim), path
      mirrored += 1
    else:
      assert x.ndim == 0 and x.sharding.is_fully_replicated, path
  assert mirrored == 2 * len(got)  # Adam's mu and nu
  mu_gate = [x for p, x in leaves_by_path(sharded.opt_state).items()
             if p.endswith(GATE) and ".mu" in p]
  assert len(mu_gate) == 1 and mu_gate[0].sharding.spec == P("fsdp", "tensor")
  assert sharded.step.sharding.is_fully_replicated


def test_blockwise_attention_step_on_a_mesh_matches_the_reference(mesh, rm):
  """`model.attention="blockwise"` in a sharded train step (its loops per device
  in shard_map, its own backward): the reference's loss and updated weights."""
  batch = rm_batch(12)
  single, m_single = rm.steps[1](rm.fresh_state(), batch)
  model = orj.from_config("Qwen2ForSequenceClassification", TINY, mesh=mesh, seed=0,
                          dtype="float32", param_dtype="float32", attention="blockwise")
  assert {layer.self_attn.implementation for layer in model.model.layers} == {"blockwise"}
  graphdef, state = init_train_state(model, rm.tx, mesh=mesh)
  step = make_train_step(graphdef, rm.tx, RM, schedule=rm.schedule, mesh=mesh,
                         center_coef=0.01)
  blockwise, m_blockwise = step(state, batch)
  np.testing.assert_allclose(m_blockwise["loss"], m_single["loss"], rtol=1e-5)
  want = leaves_by_path(jax.device_get(single.params))
  for path, value in leaves_by_path(blockwise.params).items():
    np.testing.assert_allclose(np.asarray(value), want[path], atol=1e-5, rtol=0, err_msg=path)
