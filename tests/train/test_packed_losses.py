"""Packed rows give the losses and gradients of the same examples padded one per row."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from omni_rrm_jax.data.batching import collate
from omni_rrm_jax.data.packing import collate_packed, segment_key
from omni_rrm_jax.train import losses
from omni_rrm_jax.train.task_kind import rm_rewards, sft_targets, task_kind
from tests.train.fixtures import TINY, tiny_model

CENTER = 0.01
VOCAB = TINY["vocab_size"]


def _meta(i: int, valid: bool = True) -> dict:
  return {"valid": valid, "truncated": False, "invalid_reason": 0 if valid else 2,
          "modality": 0, "index": i}


def rm_examples(seed: int, n: int = 10) -> list[dict]:
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    prompt = list(rng.integers(1, VOCAB, rng.integers(2, 9)))
    ex = {"chosen": np.asarray(prompt + list(rng.integers(1, VOCAB, rng.integers(1, 7))), np.int32),
          "rejected": np.asarray(prompt + list(rng.integers(1, VOCAB, rng.integers(1, 7))),
                                 np.int32),
          "margin": float(rng.uniform(0, 0.5)), **_meta(i, valid=i != 3)}
    out.append(ex)
  return out


def sft_examples(seed: int, n: int = 10) -> list[dict]:
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    p, a = int(rng.integers(2, 9)), int(rng.integers(1, 7))
    out.append({"input_ids": rng.integers(1, VOCAB, p + a).astype(np.int32),
                "loss_mask": np.asarray([0] * p + [1] * a, np.int32), **_meta(i, valid=i != 3)})
  return out


@pytest.fixture(scope="module")
def rm_model():
  return tiny_model("rm")


def _device(kind, batch):
  return {k: jnp.asarray(v) for k, v in kind.batch.select(batch).items()}


def _both(name: str, examples: list[dict]):
  kind = task_kind(name)
  padded = collate(examples, kind=kind.batch, batch_size=len(examples), buckets=(16, 32),
                   pad_id=0)
  packed = collate_packed(examples, kind=kind.batch, num_rows=4, length=32, max_segments=6,
                          pad_id=0)
  assert packed[segment_key(kind.batch.token_fields[0])].max() > 1  # rows really hold several
  return kind, padded, packed


def _loss_and_grads(model, kind, batch):
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  @jax.jit
  def f(p, rest, batch):
    loss_sum, _ = kind.loss(nnx.merge(graphdef, p, rest), batch, CENTER)
    return loss_sum / kind.normalizer(batch)

  return jax.value_and_grad(f)(params, rest, batch)


def _assert_same_loss_and_grads(model, kind, padded, packed):
  loss_a, grads_a = _loss_and_grads(model, kind, _device(kind, padded))
  loss_b, grads_b = _loss_and_grads(model, kind, _device(kind, packed))
  np.testing.assert_allclose(loss_b, loss_a, rtol=1e-5, atol=1e-6)
  for a, b in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_b)):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


def test_packed_rm_pairs_score_and_train_as_padded_ones(rm_model):
  model = rm_model
  kind, padded, packed = _both("rm", rm_examples(0))
  r_c, r_r = rm_rewards(model, _device(kind, padded))
  loss_b = losses.bradley_terry_per_example(r_c, r_r, margin_b=jnp.asarray(padded["margin"]),
                                            center_coef=CENTER)
  pr_c, pr_r = rm_rewards(model, _device(kind, packed))
  assert pr_c.shape == packed["valid"].shape
  loss_rs = losses.bradley_terry_per_example(pr_c, pr_r, margin_b=jnp.asarray(packed["margin"]),
                                             center_coef=CENTER)
  where = packed["index"] >= 0
  order = packed["index"][where]
  assert sorted(order) == list(range(len(padded["index"])))
  np.testing.assert_allclose(np.asarray(pr_c)[where], np.asarray(r_c)[order], atol=1e-5)
  np.testing.assert_allclose(np.asarray(pr_r)[where], np.asarray(r_r)[order], atol=1e-5)
  np.testing.assert_allclose(np.asarray(loss_rs)[where], np.asarray(loss_b)[order], atol=1e-5)
  _assert_same_loss_and_grads(model, kind, padded, packed)


def _per_example_nll(logits, batch, targets_bt, example_of_bt):
  nll_bs, _, w_bs = (np.asarray(x) for x in losses.causal_lm_token_losses(
      logits, jnp.asarray(batch["input_ids"]), targets_bt))
  out = {}
  for (r, c), ex in np.ndenumerate(example_of_bt[:, 1:]):
    if w_bs[r, c] > 0:
      out[ex] = out.get(ex, 0.0) + float(nll_bs[r, c])
  return out


def test_packed_sft_rows_give_each_example_its_own_token_losses():
  model = tiny_model("sft")
  kind, padded, packed = _both("sft", sft_examples(1))
  dev_a, dev_b = _device(kind, padded), _device(kind, packed)
  logits_a = model(dev_a["input_ids"], attention_mask=dev_a["attention_mask"]).logits
  logits_b = model(dev_b["input_ids"], attention_mask=dev_b["attention_mask"],
                   segment_ids=dev_b["segment_ids"]).logits
  t = padded["input_ids"].shape[1]
  row_of = np.broadcast_to(padded["index"][:, None], (len(padded["index"]), t))
  seg = packed["segment_ids"]
  idx = np.take_along_axis(packed["index"], np.maximum(seg - 1, 0), axis=1)
  per_a = _per_example_nll(logits_a, padded, sft_targets(dev_a), row_of)
  per_b = _per_example_nll(logits_b, packed, sft_targets(dev_b), np.where(seg > 0, idx, -1))
  assert set(per_b) == set(per_a) and 3 not in per_a  # example 3 is invalid
  for ex, nll in per_a.items():
    np.testing.assert_allclose(per_b[ex], nll, rtol=1e-5)
  np.testing.assert_allclose(float(kind.normalizer(dev_b)), float(kind.normalizer(dev_a)))
  _assert_same_loss_and_grads(model, kind, padded, packed)


def test_a_segments_first_token_is_never_a_target():
  # Every token of the second example is a target: its first must still not be,
  # as the logits before it belong to the first example.
  examples = [{"input_ids": np.asarray([5, 6, 7], np.int32),
               "loss_mask": np.asarray([1, 1, 1], np.int32), **_meta(0)},
              {"input_ids": np.asarray([8, 9], np.int32),
               "loss_mask": np.asarray([1, 1], np.int32), **_meta(1)}]
  packed = collate_packed(examples, kind=task_kind("sft").batch, num_rows=1, length=8,
                          max_segments=4, pad_id=0)
  targets = np.asarray(sft_targets({k: jnp.asarray(v) for k, v in packed.items()}))
  np.testing.assert_array_equal(targets[0], [0, 1, 1, 0, 1, 0, 0, 0])


@pytest.mark.parametrize("num_segments", [2, 3])
def test_classifier_pools_each_segment_at_its_last_token(rm_model, num_segments):
  model = rm_model
  ids = jnp.asarray([[4, 5, 6, 9, 10, 0], [11, 12, 13, 14, 0, 0]], jnp.int32)
  seg = jnp.asarray([[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 0, 0]], jnp.int32)
  out = model(ids, attention_mask=(seg > 0).astype(jnp.int32), segment_ids=seg,
              num_segments=num_segments).logits
  assert out.shape == (2, num_segments, 1)
  alone = model(jnp.asarray([[9, 10]], jnp.int32)).logits
  np.testing.assert_allclose(out[0, 1], alone[0], atol=1e-5)
