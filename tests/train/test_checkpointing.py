"""Orbax round trip of train state + iterator state + config, into shardings."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from omni_rrm_jax.sharding.mesh import make_mesh
from omni_rrm_jax.train.checkpointing import Checkpointer
from omni_rrm_jax.train.state import abstract_train_state, init_train_state
from tests.train.fixtures import tiny_model, tiny_optimizer


@pytest.fixture(scope="module")
def setup():
  mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  model = tiny_model("rm", mesh=mesh, seed=2)
  tx, _ = tiny_optimizer()
  _, state = init_train_state(model, tx, seed=5, mesh=mesh)
  # Non-trivial values everywhere: params, Adam moments, counters.
  state = jax.jit(lambda s: s.replace(
      step=s.step + 7, nonfinite_total=s.nonfinite_total + 2,
      opt_state=jax.tree.map(lambda x: (x + 3).astype(x.dtype), s.opt_state)))(state)
  # Restoring needs no allocated model: shapes and shardings come from an abstract one.
  abstract_model = nnx.eval_shape(lambda: tiny_model("rm", mesh=mesh, seed=2))
  _, abstract = abstract_train_state(abstract_model, tx, mesh=mesh)
  return mesh, state, abstract


def host(state):
  state = state.replace(rng=jax.random.key_data(state.rng))
  return jax.tree.map(np.asarray, jax.device_get(state))


@pytest.mark.parametrize("data_state", [{"next_index": 17, "epoch": [1, "a"]},
                                        b"\x00grain-bytes\xff", None])
def test_round_trip_into_shardings(tmp_path, setup, data_state):
  _, state, abstract = setup
  config_json = json.dumps({"task": "rm", "lr": 1e-3})
  with Checkpointer(str(tmp_path), save_every=7, keep=3) as ckpt:
    assert ckpt.latest_step() is None
    assert ckpt.save(7, state, data_state, config_json)
    ckpt.wait()
  # A new run pointed at the same workdir finds the checkpoint and resumes.
  with Checkpointer(str(tmp_path), save_every=7, keep=3) as ckpt:
    assert ckpt.latest_step() == 7
    restored, data, cfg = ckpt.restore(None, abstract)
  assert data == data_state and type(data) is type(data_state)
  assert cfg == config_json
  want, got = host(state), host(restored)
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(want)[0], jax.tree.leaves(got)):
    np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(abstract)):
    assert a.sharding.is_equivalent_to(b.sharding, a.ndim)
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  gate = restored.params["model"]["layers"][0]["mlp"]["gate_proj"]["kernel"][...]
  assert gate.sharding.spec == P("fsdp", "tensor")
  assert jnp.issubdtype(restored.rng.dtype, jax.dtypes.prng_key)
  np.testing.assert_array_equal(jax.random.key_data(restored.rng),
                                jax.random.key_data(state.rng))


def test_save_every_keep_and_force(tmp_path, setup):
  _, state, _ = setup
  with Checkpointer(str(tmp_path), save_every=2, keep=2) as ckpt:
    saved = [ckpt.save(s, state, None, "{}") for s in range(1, 7)]
    assert saved == [False, True, False, True, False, True]
    ckpt.wait()
    assert ckpt.all_steps() == [4, 6]  # keep=2 pruned step 2
    assert ckpt.save(7, state, None, "{}", force=True)  # e.g. on preemption
    assert not ckpt.save(7, state, None, "{}", force=True)  # never overwrites
    ckpt.wait()
    assert ckpt.all_steps() == [6, 7] and ckpt.latest_step() == 7


def test_restore_needs_shardings(tmp_path, setup):
  _, state, abstract = setup
  with Checkpointer(str(tmp_path), save_every=1, keep=None, async_save=False) as ckpt:
    ckpt.save(1, state, None, "{}")
    bare = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), abstract)
    with pytest.raises(ValueError, match="need a sharding"):
      ckpt.restore(1, bare)
    with pytest.raises(FileNotFoundError):
      Checkpointer(str(tmp_path / "empty"), save_every=1).restore(None, abstract)


def test_async_save_lets_the_next_step_donate_the_state(tmp_path, setup):
  _, state, abstract = setup
  mine = state.replace(params=jax.tree.map(jnp.copy, state.params))
  with Checkpointer(str(tmp_path), save_every=1, keep=1, async_save=True) as ckpt:
    assert ckpt.save(3, mine, None, "{}")
    # What a donating train step does to its input right after the save call.
    for x in jax.tree.leaves(mine.params):
      x.delete()
    ckpt.wait()
    restored, _, _ = ckpt.restore(3, abstract)
  for a, b in zip(jax.tree.leaves(host(state).params), jax.tree.leaves(host(restored).params)):
    np.testing.assert_array_equal(a, b)
