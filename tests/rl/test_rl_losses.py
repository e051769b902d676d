"""Policy losses against hand-computed references, and their gradients."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from omni_rrm_jax.rl.losses import LOSS_TYPES, POLICY_LOSSES, policy_loss

STATIC = ("loss_type", "epsilon_low", "epsilon_high", "delta", "beta", "kl_estimator",
          "max_completion_length")
METRICS = ("clip_frac_low", "clip_frac_high", "ratio_mean", "kl_mean", "loss")

_loss = jax.jit(policy_loss, static_argnames=STATIC)


def _grad_impl(logp_bt, old_logp_bt, adv_b, mask_bt, ref_logp_bt=None, **kwargs):
  return jax.grad(lambda l: policy_loss(l, old_logp_bt, adv_b, mask_bt,
                                        ref_logp_bt=ref_logp_bt, **kwargs)[0])(logp_bt)


_grad = jax.jit(_grad_impl, static_argnames=STATIC)


def _base():
  """B=2, T=3 with known ratios; the padding slot holds values that overflow exp.

  Row 0, A=+1, ratios (1.5, 0.5, 1.0): clipped objectives (1.2, 0.5, 1.0); only
    the first token clips (high side).
  Row 1, A=-2, ratios (0.7, 1.3, pad): objectives min(-1.4, -1.6) = -1.6 (low
    clip) and min(-2.6, -2.4) = -2.6 (no clip).
  Valid tokens: 5, sum of objectives 2.7 - 4.2 = -1.5.
  """
  old = np.array([[-1.0, -2.0, -0.5], [-1.5, -0.3, -np.inf]], np.float32)
  ratios = np.array([[1.5, 0.5, 1.0], [0.7, 1.3, 1.0]])
  logp = (old.astype(np.float64) + np.log(ratios)).astype(np.float32)
  logp[1, 2] = 100.0
  mask = np.array([[1, 1, 1], [1, 1, 0]], np.float32)
  adv = np.array([1.0, -2.0], np.float32)
  return logp, old, adv, mask


# (loss_type, extra kwargs, expected loss), all by hand from `_base`.
BASE_CASES = [
    ("grpo", {}, -((1.2 + 0.5 + 1.0) / 3 + (-1.6 - 2.6) / 2) / 2),  # 0.6
    ("bnpo", {}, 1.5 / 5),
    ("dr_grpo", {"max_completion_length": 4}, 1.5 / (2 * 4)),
    ("dapo", {}, 1.5 / 5),
    ("dapo", {"num_global_tokens": 10}, 1.5 / 10),
    ("dapo", {"num_global_tokens": jnp.asarray(12)}, 1.5 / 12),
]


@pytest.mark.parametrize("loss_type,kwargs,expected", BASE_CASES)
def test_token_level_losses_by_hand(loss_type, kwargs, expected):
  loss, metrics = _loss(*_base(), loss_type=loss_type, **kwargs)
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  np.testing.assert_allclose(metrics["loss"], expected, rtol=1e-6)
  np.testing.assert_allclose(metrics["clip_frac_low"], 1 / 5, rtol=1e-6)
  np.testing.assert_allclose(metrics["clip_frac_high"], 1 / 5, rtol=1e-6)
  # (1.5 + 0.5 + 1.0 + 0.7 + 1.3) / 5
  np.testing.assert_allclose(metrics["ratio_mean"], 1.0, rtol=1e-6)
  assert metrics["kl_mean"] == 0.0


def test_asymmetric_clip_higher():
  # epsilon_high=0.6: ratio 1.5 is inside (1.6), row 0 objectives (1.5, 0.5, 1.0).
  loss, metrics = _loss(*_base(), epsilon_high=0.6)
  np.testing.assert_allclose(loss, -((1.5 + 0.5 + 1.0) / 3 + (-1.6 - 2.6) / 2) / 2, rtol=1e-6)
  assert metrics["clip_frac_high"] == 0.0
  np.testing.assert_allclose(metrics["clip_frac_low"], 1 / 5, rtol=1e-6)


def test_dual_clip_active_on_constructed_token():
  # delta=1.25, token (1, 1): ratio 1.3, A=-2, objective max(-2.6, -2.5) = -2.5;
  # token (1, 0) keeps -1.6 > -2.5.
  logp, old, adv, mask = _base()
  loss, _ = _loss(logp, old, adv, mask, delta=1.25)
  np.testing.assert_allclose(loss, -((1.2 + 0.5 + 1.0) / 3 + (-1.6 - 2.5) / 2) / 2, rtol=1e-6)
  g = np.asarray(_grad(logp, old, adv, mask, delta=1.25))
  assert g[1, 1] == 0.0  # the dual clip is a constant
  # Unclipped token (0, 1): d/dlogp of -(r A)/(3 * 2) = -0.5 / 6.
  np.testing.assert_allclose(g[0, 1], -0.5 / 6, rtol=1e-5)
  # Low-clipped token (1, 0) and high-clipped token (0, 0) have no gradient.
  assert g[1, 0] == 0.0 and g[0, 0] == 0.0


def test_gspo_sequence_ratio_clipping_and_gradient():
  # Row 0, A=+1, token ratios (2, 2, 0.5): s = 2 ** (1/3) = 1.26 > 1.2, clipped:
  #   objective 1.2 on every token.
  # Row 1, A=-1, ratios (1.21, 1.0, pad): s = 1.1, inside, objective -1.1.
  # Row 2, A=-1, ratios (0.49, 1.0, pad): s = 0.7 < 0.8, low clip, objective -0.8.
  old = np.array([[-1.0, -0.5, -2.0], [-0.2, -1.0, 0.0], [-3.0, -0.1, 0.0]], np.float32)
  ratios = np.array([[2.0, 2.0, 0.5], [1.21, 1.0, 1.0], [0.49, 1.0, 1.0]])
  logp = (old + np.log(ratios)).astype(np.float32)
  logp[1:, 2] = np.nan
  mask = np.array([[1, 1, 1], [1, 1, 0], [1, 1, 0]], np.float32)
  adv = np.array([1.0, -1.0, -1.0], np.float32)
  loss, metrics = _loss(logp, old, adv, mask, loss_type="gspo")
  np.testing.assert_allclose(loss, -(1.2 - 1.1 - 0.8) / 3, rtol=1e-5)
  np.testing.assert_allclose(metrics["clip_frac_high"], 3 / 7, rtol=1e-6)
  np.testing.assert_allclose(metrics["clip_frac_low"], 2 / 7, rtol=1e-6)
  np.testing.assert_allclose(metrics["ratio_mean"],
                             (3 * 2 ** (1 / 3) + 2 * 1.1 + 2 * 0.7) / 7, rtol=1e-5)
  # The paper's gradient: row 1 loss -(1/3) * A * s with grad s = s * mean grad logp,
  # so each valid token gets -(1/3) * (1/2) * (-1) * 1.1; clipped rows get 0.
  g = np.asarray(_grad(logp, old, adv, mask, loss_type="gspo"))
  np.testing.assert_allclose(g[1, :2], [1.1 / 6, 1.1 / 6], rtol=1e-5)
  np.testing.assert_array_equal(g[0], 0.0)
  np.testing.assert_array_equal(g[2], 0.0)
  assert g[1, 2] == 0.0


LN2 = math.log(2.0)
# Per-token d = ref_logp - logp = (ln 2, -ln 4).
KL_CASES = {
    "k1": ([-LN2, 2 * LN2], [1.0, 1.0]),                       # -d; grad 1
    "k2": ([LN2 ** 2 / 2, (2 * LN2) ** 2 / 2], [-LN2, 2 * LN2]),  # d^2/2; grad -d
    "k3": ([2 - LN2 - 1, 0.25 + 2 * LN2 - 1], [1 - 2, 1 - 0.25]),  # e^d - d - 1; grad 1 - e^d
}


@pytest.mark.parametrize("estimator", sorted(KL_CASES))
def test_kl_estimators_by_hand(estimator):
  kl_t, dkl_t = KL_CASES[estimator]
  logp = np.array([[-1.0, -2.0, 7.0]], np.float32)
  ref = np.array([[-1.0 + LN2, -2.0 - 2 * LN2, np.inf]], np.float32)
  mask = np.array([[1, 1, 0]], np.float32)
  adv = np.zeros(1, np.float32)
  beta = 0.5
  # Ratio 1 and A = 0: the objective is -beta * KL, bnpo averages 2 tokens.
  loss, metrics = _loss(logp, logp, adv, mask, ref_logp_bt=ref, loss_type="bnpo",
                        beta=beta, kl_estimator=estimator)
  np.testing.assert_allclose(metrics["kl_mean"], np.mean(kl_t), rtol=1e-5)
  np.testing.assert_allclose(loss, beta * np.mean(kl_t), rtol=1e-5)
  # old_logp is a constant here, so the gradient is the KL term's alone.
  g = np.asarray(jax.jit(jax.grad(lambda l: policy_loss(
      l, logp, adv, mask, ref_logp_bt=ref, loss_type="bnpo", beta=beta,
      kl_estimator=estimator)[0]))(logp))
  np.testing.assert_allclose(g[0, :2], beta * np.array(dkl_t) / 2, rtol=1e-5, atol=1e-7)
  assert g[0, 2] == 0.0


def _with_empty_row():
  logp, old, adv, mask = _base()
  logp = np.concatenate([logp, [[np.nan, np.inf, -np.inf]]]).astype(np.float32)
  old = np.concatenate([old, [[0.0, -np.inf, 3.0]]]).astype(np.float32)
  return logp, old, np.append(adv, 5.0).astype(np.float32), np.concatenate([mask, [[0, 0, 0]]])


@pytest.mark.parametrize("loss_type,kwargs,expected", [
    # An empty row leaves grpo out of its denominator: still 0.6.
    ("grpo", {}, -((1.2 + 0.5 + 1.0) / 3 + (-1.6 - 2.6) / 2) / 2),
    ("bnpo", {}, 1.5 / 5),
    # dr_grpo divides by the full row count: 1.5 / (3 * 4).
    ("dr_grpo", {"max_completion_length": 4}, 1.5 / 12),
    ("dapo", {}, 1.5 / 5),
])
def test_fully_masked_row(loss_type, kwargs, expected):
  loss, metrics = _loss(*_with_empty_row(), loss_type=loss_type, **kwargs)
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  np.testing.assert_allclose(metrics["clip_frac_low"], 1 / 5, rtol=1e-6)
  np.testing.assert_allclose(metrics["ratio_mean"], 1.0, rtol=1e-6)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_fully_masked_batch_is_finite_zero(loss_type):
  logp, old, adv, _ = _with_empty_row()
  mask = np.zeros_like(logp)
  kwargs = dict(ref_logp_bt=np.full_like(logp, np.nan), beta=0.1, delta=2.0,
                loss_type=loss_type,
                max_completion_length=4 if loss_type == "dr_grpo" else None)
  loss, metrics = _loss(logp, old, adv, mask, **kwargs)
  assert loss == 0.0
  for name in METRICS:
    assert metrics[name] == 0.0, name
  np.testing.assert_array_equal(_grad(logp, old, adv, mask, **kwargs), 0.0)


def _random_batch(seed, b=6, t=7):
  rng = np.random.default_rng(seed)
  old = rng.normal(-1.5, 0.5, (b, t)).astype(np.float32)
  logp = (old + rng.normal(0.0, 0.3, (b, t))).astype(np.float32)
  ref = (old + rng.normal(0.0, 0.3, (b, t))).astype(np.float32)
  lengths = np.array([t, 4, 1, 0, 5, 2])[:b]
  mask = (np.arange(t)[None] < lengths[:, None]).astype(np.float32)
  adv = rng.normal(0.0, 1.0, b).astype(np.float32)
  # Padding holds garbage that overflows exp or is NaN.
  logp = np.where(mask > 0, logp, 80.0).astype(np.float32)
  old = np.where(mask > 0, old, -80.0).astype(np.float32)
  ref = np.where(mask > 0, ref, np.nan).astype(np.float32)
  return logp, old, adv, mask, ref


def _numpy_reference(logp, old, adv, mask, ref, *, loss_type, epsilon_low, epsilon_high,
                     delta, beta, kl_estimator, max_completion_length):
  """Token-by-token loops in float64, written from the definitions."""
  logp, old, ref = (x.astype(np.float64) for x in (logp, old, ref))
  n_rows, n_cols = logp.shape
  token_loss = np.zeros((n_rows, n_cols))
  for b in range(n_rows):
    valid = [t for t in range(n_cols) if mask[b, t]]
    if valid:
      seq_ratio = math.exp(sum(logp[b, t] - old[b, t] for t in valid) / len(valid))
    for t in valid:
      r = seq_ratio if loss_type == "gspo" else math.exp(logp[b, t] - old[b, t])
      a = float(adv[b])
      obj = min(r * a, min(max(r, 1 - epsilon_low), 1 + epsilon_high) * a)
      if delta is not None and a < 0:
        obj = max(obj, delta * a)
      d = ref[b, t] - logp[b, t]
      kl = {"k1": -d, "k2": d * d / 2, "k3": math.exp(d) - d - 1}[kl_estimator]
      token_loss[b, t] = -(obj - beta * kl)
  n_tokens = mask.sum()
  if loss_type in ("grpo", "gspo"):
    rows = [token_loss[b].sum() / mask[b].sum() for b in range(n_rows) if mask[b].sum()]
    return sum(rows) / len(rows)
  if loss_type in ("bnpo", "dapo"):
    return token_loss.sum() / n_tokens
  return token_loss.sum() / (n_rows * max_completion_length)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_random_batch_matches_numpy_loops(loss_type):
  logp, old, adv, mask, ref = _random_batch(0)
  for estimator, delta in (("k1", None), ("k2", 1.5), ("k3", 1.1)):
    kwargs = dict(loss_type=loss_type, epsilon_low=0.1, epsilon_high=0.15, delta=delta,
                  beta=0.3, kl_estimator=estimator,
                  max_completion_length=9 if loss_type == "dr_grpo" else None)
    loss, _ = _loss(logp, old, adv, mask, ref_logp_bt=ref, **kwargs)
    expected = _numpy_reference(logp, old, adv, mask, ref, **kwargs)
    np.testing.assert_allclose(loss, expected, rtol=1e-5, err_msg=estimator)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_gradient_finite_and_zero_on_masked_tokens(loss_type):
  logp, old, adv, mask, ref = _random_batch(1)
  g = np.asarray(_grad(logp, old, adv, mask, ref_logp_bt=ref, loss_type=loss_type,
                       beta=0.2, delta=2.0,
                       max_completion_length=9 if loss_type == "dr_grpo" else None))
  assert np.all(np.isfinite(g))
  np.testing.assert_array_equal(g[mask == 0], 0.0)
  assert np.any(g[mask > 0] != 0.0)


@pytest.mark.parametrize("lengths,n_rows", [((7, 3, 1, 5), 4), ((7, 3, 0, 5), 3)])
def test_grpo_gradient_at_ratio_one(lengths, n_rows):
  # loss = -(1/B) sum_b (1/n_b) sum_t r_bt A_b, dr/dlogp = r = 1, so the gradient
  # is -A_b / (n_b * B), B counting the rows with a valid token.
  lengths = np.array(lengths)
  rng = np.random.default_rng(2)
  logp = rng.normal(-1.0, 0.5, (4, 7)).astype(np.float32)
  mask = (np.arange(7)[None] < lengths[:, None]).astype(np.float32)
  adv = np.array([0.5, -1.5, 2.0, 1.0], np.float32)
  g = np.asarray(_grad(logp, logp, adv, mask))
  expected = -adv[:, None] / (np.maximum(lengths, 1)[:, None] * n_rows) * mask
  np.testing.assert_allclose(g, expected, rtol=1e-6)


def test_bfloat16_inputs_compute_in_float32():
  logp, old, adv, mask = _base()
  loss, _ = _loss(jnp.asarray(logp, jnp.bfloat16), jnp.asarray(old, jnp.bfloat16), adv, mask)
  assert loss.dtype == jnp.float32 and np.isfinite(loss)


def test_registry_maps_every_loss_type():
  assert POLICY_LOSSES.names() == sorted(LOSS_TYPES)
  loss, _ = POLICY_LOSSES.get("bnpo")(*_base())
  np.testing.assert_allclose(loss, 0.3, rtol=1e-6)
  with pytest.raises(KeyError, match="known: bnpo, dapo, dr_grpo, grpo, gspo"):
    POLICY_LOSSES.get("ppo")


@pytest.mark.parametrize("kwargs,match", [
    ({"loss_type": "dr_grpo"}, "dr_grpo.*needs max_completion_length"),
    ({"loss_type": "ppo"}, "unknown loss_type 'ppo'; known: grpo, bnpo"),
    ({"kl_estimator": "k4"}, "unknown kl_estimator 'k4'; known: k1, k2, k3"),
    ({"beta": 0.1}, "needs ref_logp_bt"),
    ({"delta": 1.0}, "delta must be > 1"),
    ({"num_global_tokens": 5}, "only used by loss_type='dapo'"),
])
def test_clear_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    policy_loss(*_base(), **kwargs)
