"""Losses against hand-computed numpy references."""

import jax.numpy as jnp
import numpy as np
import pytest

from omni_rrm_jax.train.losses import bradley_terry_loss, causal_lm_loss


def np_log_sigmoid(x):
  return -np.log1p(np.exp(-x))


def test_bradley_terry_with_margin_and_centering():
  r_c = np.array([1.0, -0.5, 2.0, 0.3], np.float32)
  r_r = np.array([0.0, 0.5, 2.5, 0.1], np.float32)
  margin = np.array([0.5, 0.0, 0.1, 0.2], np.float32)
  lam = 0.01
  loss, m = bradley_terry_loss(jnp.asarray(r_c), jnp.asarray(r_r), margin_b=jnp.asarray(margin),
                               center_coef=lam)
  want = np.mean(-np_log_sigmoid(r_c - r_r - margin) + lam * (r_c + r_r) ** 2)
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  np.testing.assert_allclose(m["loss"], want, rtol=1e-6)
  np.testing.assert_allclose(m["accuracy"], 0.5)  # rows 0 and 3 prefer chosen
  np.testing.assert_allclose(m["margin_mean"], np.mean(r_c - r_r), rtol=1e-6)
  both = np.concatenate([r_c, r_r])
  np.testing.assert_allclose(m["reward_mean"], both.mean(), rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(m["reward_std"], both.std(), rtol=1e-6)


def test_bradley_terry_hand_value():
  # One pair, gap 0: -log(1/2) = log 2.
  loss, _ = bradley_terry_loss(jnp.zeros(1), jnp.zeros(1))
  np.testing.assert_allclose(loss, np.log(2.0), rtol=1e-7)


def test_bradley_terry_is_stable_for_large_gaps():
  loss, _ = bradley_terry_loss(jnp.array([-200.0]), jnp.array([200.0]))
  np.testing.assert_allclose(loss, 400.0, rtol=1e-6)


def test_bradley_terry_padding_rows_count_for_nothing():
  r_c = np.array([1.0, -0.5, 99.0], np.float32)
  r_r = np.array([0.0, 0.5, -99.0], np.float32)
  margin = np.array([0.5, 0.0, np.nan], np.float32)
  valid = np.array([1.0, 1.0, 0.0], np.float32)
  loss, m = bradley_terry_loss(jnp.asarray(r_c), jnp.asarray(r_r), margin_b=jnp.asarray(margin),
                               center_coef=0.1, valid_b=jnp.asarray(valid))
  ref, ref_m = bradley_terry_loss(jnp.asarray(r_c[:2]), jnp.asarray(r_r[:2]),
                                  margin_b=jnp.asarray(margin[:2]), center_coef=0.1)
  np.testing.assert_allclose(loss, ref, rtol=1e-6)
  for k in ref_m:
    np.testing.assert_allclose(m[k], ref_m[k], rtol=1e-6, atol=1e-7, err_msg=k)


def np_causal_lm(logits, ids, mask):
  logits = logits.astype(np.float64)
  lp = logits - logits.max(-1, keepdims=True)
  lp = lp - np.log(np.exp(lp).sum(-1, keepdims=True))
  total, correct, n = 0.0, 0.0, 0.0
  for b in range(ids.shape[0]):
    for t in range(1, ids.shape[1]):  # logits at t-1 predict token t
      if mask[b, t]:
        total -= lp[b, t - 1, ids[b, t]]
        correct += float(np.argmax(logits[b, t - 1]) == ids[b, t])
        n += 1
  return total / n, correct / n, n


@pytest.fixture
def lm_case():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 6, 11)).astype(np.float32) * 3
  ids = rng.integers(0, 11, size=(2, 6)).astype(np.int32)
  # Row 0: prompt of 3 tokens, answer 3. Row 1: prompt 2, answer 2, padding 2.
  mask = np.array([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 0, 0]], np.int32)
  return logits, ids, mask


def test_causal_lm_loss_matches_numpy(lm_case):
  logits, ids, mask = lm_case
  loss, m = causal_lm_loss(jnp.asarray(logits), jnp.asarray(ids), jnp.asarray(mask))
  want_loss, want_acc, want_n = np_causal_lm(logits, ids, mask)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
  np.testing.assert_allclose(m["token_accuracy"], want_acc, rtol=1e-6)
  assert float(m["num_tokens"]) == want_n == 5


def test_causal_lm_loss_in_float32_from_bfloat16(lm_case):
  logits, ids, mask = lm_case
  loss, _ = causal_lm_loss(jnp.asarray(logits, jnp.bfloat16), jnp.asarray(ids), jnp.asarray(mask))
  assert loss.dtype == jnp.float32
  want, _, _ = np_causal_lm(np.asarray(jnp.asarray(logits, jnp.bfloat16).astype(np.float32)),
                            ids, mask)
  np.testing.assert_allclose(loss, want, rtol=1e-5)


def test_causal_lm_loss_sees_only_masked_in_targets(lm_case):
  logits, ids, mask = lm_case
  base, _ = causal_lm_loss(jnp.asarray(logits), jnp.asarray(ids), jnp.asarray(mask))
  # Token 1 of row 0 is prompt (not a target): changing it leaves the loss alone.
  prompt_changed = ids.copy()
  prompt_changed[0, 1] = (ids[0, 1] + 1) % 11
  same, _ = causal_lm_loss(jnp.asarray(logits), jnp.asarray(prompt_changed), jnp.asarray(mask))
  assert float(same) == float(base)
  # Token 4 of row 0 is an answer target: changing it changes the loss.
  answer_changed = ids.copy()
  answer_changed[0, 4] = (ids[0, 4] + 1) % 11
  other, _ = causal_lm_loss(jnp.asarray(logits), jnp.asarray(answer_changed), jnp.asarray(mask))
  assert abs(float(other) - float(base)) > 1e-4
  # The logits at the last position predict nothing; changing them does nothing.
  last_changed = logits.copy()
  last_changed[:, -1] += 5.0
  same, _ = causal_lm_loss(jnp.asarray(last_changed), jnp.asarray(ids), jnp.asarray(mask))
  assert float(same) == float(base)


def test_causal_lm_loss_valid_rows(lm_case):
  logits, ids, mask = lm_case
  loss, m = causal_lm_loss(jnp.asarray(logits), jnp.asarray(ids), jnp.asarray(mask),
                           valid_b=jnp.array([1.0, 0.0]))
  want, _, n = np_causal_lm(logits[:1], ids[:1], mask[:1])
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  assert float(m["num_tokens"]) == n == 3
