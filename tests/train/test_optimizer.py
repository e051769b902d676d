"""Schedule shape, weight-decay mask and config validation."""

import jax
import optax
import numpy as np
import pytest
from flax import nnx

from omni_rrm_jax.train.optimizer import (decay_mask, make_optimizer, optax_chain,
                                          parse_lr_scales)
from tests.train.fixtures import OPT, tiny_model


def test_warmup_then_cosine_to_end_factor():
  _, schedule = make_optimizer(dict(OPT, learning_rate=1e-3, warmup_steps=10, total_steps=110,
                                    end_lr_factor=0.1))
  np.testing.assert_allclose(schedule(0), 0.0)
  np.testing.assert_allclose(schedule(5), 5e-4, rtol=1e-6)
  np.testing.assert_allclose(schedule(10), 1e-3, rtol=1e-6)
  np.testing.assert_allclose(schedule(60), 1e-3 * (0.1 + 0.9 * 0.5), rtol=1e-5)
  np.testing.assert_allclose(schedule(110), 1e-4, rtol=1e-5)


def test_decay_mask_spares_norms_and_biases():
  params = nnx.state(tiny_model("rm"), nnx.Param)
  flat = {jax.tree_util.keystr(p): m
          for p, m in jax.tree_util.tree_flatten_with_path(decay_mask(params))[0]}
  by_suffix = lambda s: [m for k, m in flat.items() if s in k]  # noqa: E731
  assert all(by_suffix("['kernel']"))
  assert by_suffix("['embed_tokens']['weight']") == [True]
  assert not any(by_suffix("layernorm']['weight']"))
  assert not any(by_suffix("['norm']['weight']"))
  q_bias = [m for k, m in flat.items() if "q_proj']['bias']" in k]
  assert q_bias == [False]  # [heads, head_dim]: 2-D, still a bias


def test_bad_configs_are_clear_errors():
  with pytest.raises(ValueError, match="unknown optimizer config keys.*'lr'"):
    make_optimizer(dict(OPT, lr=1.0))
  with pytest.raises(ValueError, match="missing.*total_steps"):
    make_optimizer({"learning_rate": 1e-3})
  with pytest.raises(ValueError, match="warmup_steps < total_steps"):
    make_optimizer(dict(OPT, warmup_steps=100, total_steps=100))


def test_accepts_config_dict_without_clipping():
  ml_collections = pytest.importorskip("ml_collections")
  # eps = 1 makes Adam's update depend on the gradient's scale, so clipping shows.
  cfg = dict(OPT, warmup_steps=0, weight_decay=0.0, eps=1.0, grad_clip_norm=None)
  from_config, _ = make_optimizer(ml_collections.ConfigDict(cfg))
  from_dict, _ = make_optimizer(cfg)
  clipped, _ = make_optimizer(dict(cfg, grad_clip_norm=1e-3))
  params = np.zeros(3, np.float32)
  grads = np.array([3.0, -4.0, 12.0], np.float32)  # norm 13
  update = lambda tx: np.asarray(tx.update(grads, tx.init(params), params)[0])  # noqa: E731
  np.testing.assert_allclose(update(from_config), update(from_dict))
  # Unclipped, the update is -lr * g / (|g| + 1); clipped to norm 1e-3 it is ~1e4 times smaller.
  np.testing.assert_allclose(update(from_config), -OPT["learning_rate"] * grads / (np.abs(grads) + 1),
                             rtol=1e-5)
  assert np.abs(update(clipped)).max() < 1e-3 * np.abs(update(from_config)).max()


def test_total_steps_from_the_train_section():
  cfg = {k: v for k, v in OPT.items() if k != "total_steps"}
  cfg["grad_accum_steps"] = 4  # read by the step, tolerated here
  _, schedule = make_optimizer(cfg, total_steps=50)
  np.testing.assert_allclose(schedule(50), OPT["learning_rate"] * OPT["end_lr_factor"], rtol=1e-5)


def test_lr_scales_slow_down_only_the_named_modules():
  params = {"visual": {"proj": {"kernel": np.ones((2, 2), np.float32)}},
            "model": {"proj": {"kernel": np.ones((2, 2), np.float32)}}}
  grads = jax.tree.map(lambda x: 0.5 * x, params)
  cfg = dict(OPT, warmup_steps=0, weight_decay=0.1)
  plain, _ = make_optimizer(cfg)
  scaled, _ = make_optimizer(dict(cfg, lr_scales="visual=0.25"))
  u_plain, _ = plain.update(grads, plain.init(params), params)
  u_scaled, _ = scaled.update(grads, scaled.init(params), params)
  np.testing.assert_allclose(u_scaled["model"]["proj"]["kernel"], u_plain["model"]["proj"]["kernel"])
  np.testing.assert_allclose(u_scaled["visual"]["proj"]["kernel"],
                             0.25 * u_plain["visual"]["proj"]["kernel"], rtol=1e-6)
  assert np.abs(u_plain["visual"]["proj"]["kernel"]).min() > 0
  assert parse_lr_scales("visual=0.1, audio_tower=0.5") == {"visual": 0.1, "audio_tower": 0.5}
  assert parse_lr_scales({"visual": 1}) == {"visual": 1.0}
  with pytest.raises(ValueError, match="'visual' is not name=factor"):
    parse_lr_scales("visual")
  with pytest.raises(ValueError, match="'visual=fast' is not name=factor"):
    make_optimizer(dict(OPT, lr_scales="visual=fast"))


def _run(tx, params, grads_per_step):
  state = tx.init(params)

  @jax.jit
  def update(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  for grads in grads_per_step:
    params, state = update(params, state, grads)
  return jax.device_get((params, state))


_PARAMS = {"visual": {"proj": {"kernel": np.full((4, 8), 0.5, np.float32),
                               "bias": np.full((8,), 0.1, np.float32)}},
           "model": {"norm": {"weight": np.ones((8,), np.float32)},
                     "proj": {"kernel": np.full((8, 4), -0.25, np.float32)},
                     # Layers held as a tuple: a container, not a leaf.
                     "layers": ({"kernel": np.full((4, 4), 0.3, np.float32)},
                                {"kernel": np.full((4, 4), -0.3, np.float32)})}}


@pytest.mark.parametrize("cfg, gain", [
    (dict(weight_decay=0.1), 10.0),  # clipped on every step
    (dict(weight_decay=0.1), 1e-3),  # never clipped
    (dict(weight_decay=0.1, lr_scales="visual=0.25"), 10.0),
    (dict(weight_decay=0.0, grad_clip_norm=None), 10.0),
])
def test_the_fused_update_is_optaxs_chain(cfg, gain):
  cfg = dict(OPT, warmup_steps=2, **cfg)
  rng = np.random.default_rng(0)
  grads = [jax.tree.map(lambda p: (gain * rng.standard_normal(p.shape)).astype(np.float32),
                        _PARAMS) for _ in range(5)]
  fused, _ = make_optimizer(cfg)
  chain = optax_chain(cfg)
  # The same state, leaf for leaf: a checkpoint of either restores into the other.
  assert jax.tree.structure(fused.init(_PARAMS)) == jax.tree.structure(chain.init(_PARAMS))
  got, want = _run(fused, _PARAMS, grads), _run(chain, _PARAMS, grads)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    if gain < 1 or not cfg["grad_clip_norm"]:  # no clip: the same operations
      np.testing.assert_array_equal(a, b)
    else:  # g * (max / norm) against (g / norm) * max: float rounding
      np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-8)
  moved = got[0]["model"]["proj"]["kernel"] - _PARAMS["model"]["proj"]["kernel"]
  assert np.abs(moved).min() > 0
