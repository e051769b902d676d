"""Frozen means frozen: LoRA bases and `model.freeze`d modules get no gradient,
no update, no optimizer state and no place in a checkpoint."""

import types

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from omni_rrm_jax.config import sections
from omni_rrm_jax.config.tasks import rm_config
from omni_rrm_jax.config.validate import problems
from omni_rrm_jax.models import lora
from omni_rrm_jax.train.checkpointing import Checkpointer
from omni_rrm_jax.train.state import init_train_state
from omni_rrm_jax.train.step import make_train_step
from omni_rrm_jax.train.task_kind import task_kind
from omni_rrm_jax.train.trainable import prepare_trainable, tree_size
from tests.train.fixtures import rm_batch, saved_arrays, tiny_model


def _lora(rank=4, **kw):
  return types.SimpleNamespace(**dict(dict(rank=rank, alpha=8.0, dropout=0.0,
                                           targets=lora.LINEAR_LAYERS), **kw))


def _flat(state):
  return {p: np.asarray(v.get_value()) for p, v in nnx.to_flat_state(state)}


def _sgd_step_and_grads(model, trainable):
  """One plain-SGD (lr 1) step of `model` under `trainable`, and the reference
  gradients of the same loss with respect to every parameter of the model."""
  kind = task_kind("rm")
  batch = rm_batch(3)
  graphdef, state = init_train_state(model, optax.sgd(1.0), trainable=trainable)
  before = (_flat(state.params), _flat(state.frozen))
  new_state, _ = make_train_step(graphdef, optax.sgd(1.0), kind)(state, batch)

  full_graphdef, full = nnx.split(model, nnx.Param)
  normalizer = kind.normalizer(batch)

  def loss(params):
    return kind.loss(nnx.merge(full_graphdef, params), batch, 0.0)[0] / normalizer

  ref_grads = _flat(jax.grad(loss)(full))
  return before, new_state, ref_grads


def test_lora_trains_adapters_and_score_only_with_the_exact_gradient():
  model = tiny_model("rm")
  trainable = prepare_trainable(model, _lora(), ())
  for _, layer in lora.adapted_layers(model).items():  # nonzero B: A gets gradients too
    layer.lora.b.set_value(0.1 * np.ones(layer.lora.b.get_value().shape, np.float32))
  (params0, frozen0), state, ref = _sgd_step_and_grads(model, trainable)
  trained = set(params0)
  assert trained == {p for p in ref if "lora" in p or p[0] == "score"}
  assert len([p for p in trained if "lora" in p]) == 2 * 7
  # The base is untouched, bit for bit.
  for p, value in _flat(state.frozen).items():
    np.testing.assert_array_equal(value, frozen0[p], err_msg=str(p))
  # Each trained parameter moved by exactly its gradient in the full model.
  for p, value in _flat(state.params).items():
    np.testing.assert_allclose(params0[p] - value, ref[p], atol=1e-6, rtol=1e-5,
                               err_msg=str(p))
    assert np.abs(ref[p]).max() > 0, p


def test_optimizer_state_covers_the_trained_parameters_only():
  model = tiny_model("rm")
  trainable = prepare_trainable(model, _lora(rank=2), ())
  adapters = sum(int(np.prod(v.get_value().shape))
                 for _, v in nnx.to_flat_state(nnx.state(model, nnx.LoRAParam)))
  score = int(np.prod(model.score.kernel.get_value().shape))
  _, state = init_train_state(model, optax.adam(1e-3), trainable=trainable)
  count, nbytes = tree_size(state.opt_state)
  assert count == 2 * (adapters + score) + 1  # mu, nu, and Adam's step count
  assert nbytes == 4 * count
  total = sum(int(np.prod(v.get_value().shape))
              for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param)))
  assert tree_size(state.params)[0] + tree_size(state.frozen)[0] == total


def test_model_freeze_without_lora():
  model = tiny_model("rm")
  trainable = prepare_trainable(model, _lora(rank=0), ("model.layers", "model.embed_tokens"))
  (params0, frozen0), state, ref = _sgd_step_and_grads(model, trainable)
  assert {p[:2] for p in frozen0} == {("model", "layers"), ("model", "embed_tokens")}
  assert set(params0) == {p for p in ref if p[:2] not in (("model", "layers"),
                                                          ("model", "embed_tokens"))}
  for p, value in _flat(state.frozen).items():
    np.testing.assert_array_equal(value, frozen0[p])
  for p, value in _flat(state.params).items():
    np.testing.assert_allclose(params0[p] - value, ref[p], atol=1e-6, rtol=1e-5)


def test_unknown_freeze_names_the_modules():
  with pytest.raises(ValueError, match=r"model.freeze 'visual' names no module.*model, score"):
    prepare_trainable(tiny_model("rm"), _lora(rank=0), ("visual",))


def test_checkpoint_holds_the_trained_part_and_resume_restores_the_base(tmp_path):
  model = tiny_model("rm")
  trainable = prepare_trainable(model, _lora(), ())
  graphdef, state = init_train_state(model, optax.adam(1e-3), trainable=trainable)
  state, _ = make_train_step(graphdef, optax.adam(1e-3), task_kind("rm"))(state, rm_batch(0))
  with Checkpointer(str(tmp_path), save_every=1, async_save=False) as ckpt:
    ckpt.save(1, state, None, "{}")
  # The checkpoint's tree has the adapters and the head, no base weight.
  names = saved_arrays(tmp_path / "checkpoints" / "1" / "state")
  assert any("lora" in n for n in names) and any("score" in n for n in names)
  assert not any("embed_tokens" in n or "'kernel'" in n and "score" not in n for n in names)
  # Resume into a fresh state: trained part from disk, base from the model.
  _, fresh = init_train_state(model, optax.adam(1e-3), trainable=trainable)
  with Checkpointer(str(tmp_path), save_every=1, async_save=False) as ckpt:
    restored, step = ckpt.resume(fresh, types.SimpleNamespace(set_state=None))
  assert step == 1
  host = lambda t: [np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(  # noqa: E731
      x.dtype, jax.dtypes.prng_key) else x) for x in jax.tree.leaves(t)]
  assert len(host(restored)) == len(host(state))
  for a, b in zip(host(restored), host(state)):
    np.testing.assert_array_equal(a, b)


def test_lora_settings_are_validated():
  c = rm_config()
  c.lora.rank = 4
  c.lora.targets = ("q_proj", "qkv")
  c.lora.dropout = 1.0
  lines = problems(c, process_count=1, device_count=1)
  assert any(line.startswith("lora.targets=") and "known: q_proj, k_proj" in line
             for line in lines)
  assert any(line.startswith("lora.dropout=") for line in lines)
  c.lora.rank = -1
  assert any(line.startswith("lora.rank=") for line in problems(c, process_count=1,
                                                                 device_count=1))


def test_config_targets_are_the_model_linear_layers():
  assert sections.LORA_TARGETS == lora.LINEAR_LAYERS


def test_frozen_encoders_have_no_optimizer_state():
  from tests.models import test_qwen2_5_omni as omni
  model = omni.flax_model()
  trainable = prepare_trainable(model, _lora(rank=0), ("visual", "audio_tower"))
  _, state = init_train_state(model, optax.adam(1e-3), trainable=trainable)
  encoders = {p for p, _ in nnx.to_flat_state(state.frozen)}
  assert {p[0] for p in encoders} == {"visual", "audio_tower"}
  assert not any(p[0] in ("visual", "audio_tower") for p, _ in nnx.to_flat_state(state.params))
  count, _ = tree_size(state.opt_state)
  assert count == 2 * tree_size(state.params)[0] + 1


def test_lora_state_on_a_mesh_shards_adapters_like_their_layers_and_steps_the_same():
  from omni_rrm_jax.sharding.mesh import make_mesh
  mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  states = {}
  for name, m in (("mesh", mesh), ("single", None)):
    model = tiny_model("rm", mesh=m)
    trainable = prepare_trainable(model, _lora(), ())
    for _, layer in lora.adapted_layers(model).items():
      layer.lora.b.set_value(0.1 * np.ones(layer.lora.b.get_value().shape, np.float32))
    graphdef, state = init_train_state(model, optax.adam(1e-2), mesh=m, trainable=trainable)
    if m is not None:
      layer = lora.adapted_layers(model)[("model", "layers", 0, "self_attn", "q_proj")]
      spec = lambda p: tuple(p.sharding.spec) + (None,) * (p.ndim - len(p.sharding.spec))  # noqa: E731
      kernel = spec(state.frozen["model"]["layers"][0]["self_attn"]["q_proj"]["kernel"][...])
      a = spec(state.params["model"]["layers"][0]["self_attn"]["q_proj"]["lora"]["a"][...])
      b = spec(state.params["model"]["layers"][0]["self_attn"]["q_proj"]["lora"]["b"][...])
      assert any(kernel), kernel  # the rules do shard this kernel
      assert a == (*kernel[:layer.in_ndim], None) and b == (None, *kernel[layer.in_ndim:])
    step = make_train_step(graphdef, optax.adam(1e-2), task_kind("rm"), mesh=m)
    states[name], _ = step(state, rm_batch(5))
  for (p, x), y in zip(jax.tree_util.tree_flatten_with_path(states["mesh"].params)[0],
                       jax.tree.leaves(states["single"].params)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6, rtol=0,
                               err_msg=jax.tree_util.keystr(p))


def test_frozen_matrices_in_bfloat16_leave_a_bfloat16_step_unchanged():
  # With a bfloat16 compute dtype every kernel is cast before use, so storing
  # the frozen base in bfloat16 halves its bytes and changes no number.
  kind = task_kind("rm")
  batch = rm_batch(5)
  out = {}
  for frozen_dtype in (None, "bfloat16"):
    model = tiny_model("rm", dtype="bfloat16")
    trainable = prepare_trainable(model, _lora(), ())
    tx = optax.adam(1e-2)
    graphdef, state = init_train_state(model, tx, trainable=trainable, frozen_dtype=frozen_dtype)
    frozen = _flat(state.frozen)
    dtypes = {str(p[-2]) + "." + str(p[-1]): v.dtype for p, v in frozen.items()}
    out[frozen_dtype] = (make_train_step(graphdef, tx, kind)(state, batch), frozen, dtypes)
  (_, m32), frozen32, _ = out[None]
  (state16, m16), frozen16, dtypes16 = out["bfloat16"]
  matrices = [p for p, v in frozen32.items() if v.ndim >= 2]
  vectors = [p for p, v in frozen32.items() if v.ndim < 2]
  assert matrices and vectors
  assert all(frozen16[p].dtype == np.dtype("bfloat16") for p in matrices)
  assert all(frozen16[p].dtype == np.float32 for p in vectors)
  assert float(m16["loss"]) == float(m32["loss"])
  assert float(m16["grad_norm"]) == float(m32["grad_norm"])
  assert all(v.dtype == np.dtype("bfloat16") for p, v in _flat(state16.frozen).items()
             if p in matrices)


def test_frozen_dtype_is_validated():
  c = rm_config()
  c.model.frozen_dtype = "bf16"
  assert any("model.frozen_dtype" in line for line in problems(c, process_count=1, device_count=1))
