"""Stochastic sampling: seeds, temperature and filters, group layout, log-probs, caching."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import omni_rrm_jax as orj
from omni_rrm_jax.sampling import sampler
from omni_rrm_jax.sampling.params import SamplingParams
from omni_rrm_jax.sampling.sampler import generate
from omni_rrm_jax.sampling.scoring import score_completions, sequence_logprobs
from tests.models.hf_fixtures import PAD
from tests.sampling.sharp_model import left_padded_prompts, sharp_qwen2

G = 2
N = 12
PARAMS = SamplingParams(temperature=0.8, top_k=40, top_p=0.95, max_new_tokens=N, num_samples=G)
DRAWS = 4000  # samples of the one-step frequency tests


@pytest.fixture(scope="module")
def model():
  return orj.from_pretrained(sharp_qwen2())


@pytest.fixture(scope="module")
def prompts():
  return left_padded_prompts(seed=5)


@pytest.fixture(scope="module")
def free_run(model, prompts):
  """A sampled batch without EOS (shared by several tests: one compilation)."""
  return generate(model, *prompts, PARAMS, jax.random.key(0), eos_ids=())


@pytest.fixture(scope="module")
def eos_run(model, prompts, free_run):
  """The same sampling with an EOS id that a good share of rows produce mid-way."""
  tokens_bn = np.asarray(free_run.tokens_bn)
  ids, counts = np.unique(tokens_bn[:, 1:-1], return_counts=True)
  eos = int(ids[np.argmax(counts)])
  return eos, generate(model, *prompts, PARAMS, jax.random.key(7), eos_ids=(eos, 100))


def test_same_seed_same_samples_other_seed_differs(model, prompts, free_run):
  again = generate(model, *prompts, PARAMS, jax.random.key(0), eos_ids=())
  np.testing.assert_array_equal(np.asarray(again.tokens_bn), np.asarray(free_run.tokens_bn))
  np.testing.assert_array_equal(np.asarray(again.logprobs_bn), np.asarray(free_run.logprobs_bn))
  other = generate(model, *prompts, PARAMS, jax.random.key(1), eos_ids=())
  assert (np.asarray(other.tokens_bn) != np.asarray(free_run.tokens_bn)).mean() > 0.3
  # An int seed is the same as jax.random.key(seed).
  as_int = generate(model, *prompts, PARAMS, 1, eos_ids=())
  np.testing.assert_array_equal(np.asarray(as_int.tokens_bn), np.asarray(other.tokens_bn))


def test_repeated_calls_do_not_recompile(model, prompts, free_run):
  before = sampler.compile_count()
  generate(model, *prompts, PARAMS, jax.random.key(3), eos_ids=())
  generate(orj.from_pretrained(sharp_qwen2()), *prompts, PARAMS, 4, eos_ids=())
  assert sampler.compile_count() == before


def test_groups_are_contiguous(model):
  # The parity tests' greedy program (same prompts and params) is reused here.
  prompts = left_padded_prompts()
  greedy = SamplingParams(greedy=True, max_new_tokens=16)
  one = np.asarray(generate(model, *prompts, greedy, 0, eos_ids=()).tokens_bn)
  three = np.asarray(generate(model, *prompts, dataclasses.replace(greedy, num_samples=3), 0,
                              eos_ids=()).tokens_bn)
  np.testing.assert_array_equal(three, np.repeat(one, 3, axis=0))
  assert len(set(map(tuple, one))) == len(one)  # distinct prompts, distinct completions


def test_samples_within_a_group_differ(free_run):
  tokens_gbn = np.asarray(free_run.tokens_bn).reshape(-1, G, N)
  assert sum(not np.array_equal(g[0], g[1]) for g in tokens_gbn) >= len(tokens_gbn) - 1


def test_completion_mask_and_lengths(eos_run):
  eos, out = eos_run
  tokens_bn, mask_bn = np.asarray(out.tokens_bn), np.asarray(out.mask_bn)
  lengths_b = np.asarray(out.lengths_b)
  assert 0 < np.asarray(out.truncated_b).sum() < len(tokens_bn)  # some stop, some run out
  assert (lengths_b[~np.asarray(out.truncated_b)] > 1).any()
  for row in range(len(tokens_bn)):
    n = lengths_b[row]
    np.testing.assert_array_equal(mask_bn[row], np.arange(N) < n)
    is_eos = np.isin(tokens_bn[row, :n], (eos, 100))
    if out.truncated_b[row]:
      assert n == N and not is_eos.any()
    else:
      assert is_eos[-1] and not is_eos[:-1].any()
    assert (tokens_bn[row, n:] == PAD).all()


def test_logprobs_equal_sequence_logprobs(model, prompts, eos_run):
  _, out = eos_run
  ids_bt, mask_bt = (np.repeat(x, G, axis=0) for x in prompts)
  rescored = score_completions(model, ids_bt, mask_bt, out.tokens_bn, out.mask_bn)
  np.testing.assert_allclose(np.asarray(rescored), np.asarray(out.logprobs_bn), atol=1e-5, rtol=0)
  # The returned log-probs are the raw policy's (temperature 1), not the
  # sampling distribution's.
  at_t = score_completions(model, ids_bt, mask_bt, out.tokens_bn, out.mask_bn,
                           temperature=PARAMS.temperature)
  assert np.abs(np.asarray(at_t) - np.asarray(rescored)).max() > 1e-2


def test_sequence_logprobs_is_differentiable(model, prompts, free_run):
  from flax import nnx
  ids_bt, mask_bt = (np.repeat(x, G, axis=0) for x in prompts)
  tokens_bt = jnp.concatenate([jnp.asarray(ids_bt), free_run.tokens_bn], axis=1)
  full_mask_bt = jnp.concatenate([jnp.asarray(mask_bt), free_run.mask_bn], axis=1)
  graphdef, state = nnx.split(model)

  @jax.jit
  def loss_and_grad(state):
    def loss(state):
      logp = sequence_logprobs(nnx.merge(graphdef, state), tokens_bt, full_mask_bt,
                               ids_bt.shape[1])
      return -logp.sum(), logp
    return jax.value_and_grad(loss, has_aux=True)(state)

  (_, logp), grads = loss_and_grad(state)
  np.testing.assert_allclose(np.asarray(logp), np.asarray(free_run.logprobs_bn), atol=1e-5, rtol=0)
  norms = [float(jnp.linalg.norm(g)) for g in jax.tree.leaves(grads)]
  assert all(np.isfinite(norms)) and max(norms) > 0


def _one_step_counts(model, prompt_bt, params, seed=0):
  out = generate(model, prompt_bt, np.ones_like(prompt_bt), params, seed, eos_ids=())
  tokens = np.asarray(out.tokens_bn)[:, 0]
  return np.bincount(tokens, minlength=model.cfg.vocab_size), np.asarray(out.logprobs_bn)[:, 0], tokens


def _chi_square(counts, probs):
  """Pearson's statistic over cells expecting >= 5 draws (the rest pooled) and its dof."""
  expected = counts.sum() * probs
  big = expected >= 5
  obs = np.append(counts[big], counts[~big].sum())
  exp = np.append(expected[big], expected[~big].sum())
  keep = exp > 0
  return float((((obs - exp) ** 2)[keep] / exp[keep]).sum()), int(keep.sum()) - 1


def _last_logits(model, prompt_bt):
  return np.asarray(model(jnp.asarray(prompt_bt)).logits[0, -1], np.float64)


def _softmax(x):
  e = np.exp(x - x.max())
  return e / e.sum()


@pytest.fixture(scope="module")
def one_prompt(prompts):
  return prompts[0][:1]  # row 0 has no padding


def test_temperature_frequencies_match_softmax(model, one_prompt):
  temperature = 1.5
  params = SamplingParams(temperature=temperature, max_new_tokens=1, num_samples=DRAWS)
  counts, logprobs, tokens = _one_step_counts(model, one_prompt, params)
  logits = _last_logits(model, one_prompt)
  chi2, dof = _chi_square(counts, _softmax(logits / temperature))
  bound = dof + 5 * np.sqrt(2 * dof)  # ~5 standard deviations of a chi-square
  assert chi2 < bound, (chi2, bound)
  for wrong in (1.0, temperature / 1.25, temperature * 1.25):
    assert _chi_square(counts, _softmax(logits / wrong))[0] > 2 * bound, wrong
  # Log-probs are at temperature 1, whatever the sampling temperature.
  np.testing.assert_allclose(logprobs, np.log(_softmax(logits))[tokens], atol=1e-5)


def test_top_k_and_top_p_restrict_and_renormalise(model, one_prompt):
  logits = _last_logits(model, one_prompt)
  order = np.argsort(-logits)
  probs = _softmax(logits)

  counts, _, _ = _one_step_counts(model, one_prompt, SamplingParams(
      top_k=5, max_new_tokens=1, num_samples=DRAWS))
  assert set(np.flatnonzero(counts)) == set(order[:5])
  kept = np.zeros_like(probs)
  kept[order[:5]] = probs[order[:5]]
  chi2, dof = _chi_square(counts, kept / kept.sum())
  assert chi2 < dof + 5 * np.sqrt(2 * dof)

  top_p = 0.5
  counts, _, _ = _one_step_counts(model, one_prompt, SamplingParams(
      top_p=top_p, max_new_tokens=1, num_samples=DRAWS))
  before = np.cumsum(probs[order]) - probs[order]
  nucleus = order[before < top_p]
  assert 1 < len(nucleus) < 20
  assert set(np.flatnonzero(counts)) == set(nucleus)


def test_rejects_right_padded_prompts(model, prompts):
  ids, mask = prompts
  with pytest.raises(ValueError, match="left-padded"):
    generate(model, ids, mask[:, ::-1], PARAMS, 0, eos_ids=())
