"""G samples per prompt share one prefill: same samples as prefilling every row, P rows prefilled."""

import dataclasses

import jax
import jax.extend.core
import numpy as np
from flax import nnx

import omni_rrm_jax as orj
from omni_rrm_jax.core.batch_contract import MEDIA_KEYS
from omni_rrm_jax.sampling import sampler
from omni_rrm_jax.sampling.params import SamplingParams
from omni_rrm_jax.sampling.sampler import generate
from omni_rrm_jax.sharding.rules import DEFAULT_RULES
from tests.sampling import test_media_sampling as vl
from tests.sampling.sharp_model import PROMPT_LEN, left_padded_prompts, sharp_qwen2

G = 3
N = 6
PARAMS = SamplingParams(temperature=0.9, top_p=0.97, max_new_tokens=N, num_samples=G)
FIELDS = ("tokens_bn", "mask_bn", "lengths_b", "truncated_b")
# Matrix products over P rows may round differently from the same products over
# P * G rows (XLA picks kernels by shape), so log-probs agree to float32 rounding.
TOL = 1e-5


def each_row_prefilled(model, ids_bt, mask_bt, params, rng, media=None, **kw):
  """The samples as generated before prefills were shared: every prompt repeated G
  times (its media too) and sampled once per row, with the same key."""
  g = params.num_samples
  rep = lambda x: np.repeat(np.asarray(x), g, axis=0)  # noqa: E731
  media = {k: rep(v) for k, v in media.items() if k in MEDIA_KEYS} if media else None
  return generate(model, rep(ids_bt), rep(mask_bt), dataclasses.replace(params, num_samples=1),
                  rng, media=media, **kw)


def assert_same(out, ref):
  for field in FIELDS:
    np.testing.assert_array_equal(np.asarray(getattr(out, field)),
                                  np.asarray(getattr(ref, field)), err_msg=field)
  np.testing.assert_allclose(np.asarray(out.logprobs_bn), np.asarray(ref.logprobs_bn), atol=TOL,
                             rtol=0)


def test_text_samples_equal_prefilling_every_row():
  model = orj.from_pretrained(sharp_qwen2())
  ids_bt, mask_bt = left_padded_prompts(seed=2)
  tokens = np.asarray(generate(model, ids_bt, mask_bt, PARAMS, 0, eos_ids=()).tokens_bn)
  ids, counts = np.unique(tokens[:, 1:-1], return_counts=True)
  eos = (int(ids[np.argmax(counts)]),)  # some rows stop early, others run out
  out = generate(model, ids_bt, mask_bt, PARAMS, 11, eos_ids=eos, pad_id=0)
  assert_same(out, each_row_prefilled(model, ids_bt, mask_bt, PARAMS, 11, eos_ids=eos,
                                      pad_id=0))
  truncated = np.asarray(out.truncated_b)
  assert 0 < truncated.sum() < len(truncated)
  # The first tokens are drawn per sample, not once per prompt.
  first_pg = np.asarray(out.tokens_bn)[:, 0].reshape(-1, G)
  assert (first_pg != first_pg[:, :1]).any()


def test_image_samples_equal_prefilling_every_row():
  ids_bt, mask_bt, media_b = vl.batch(vl.image_prompts(), vl.spec(), vl.PATCHES)
  params = dataclasses.replace(PARAMS, num_samples=2)
  out = generate(vl.model(), ids_bt, mask_bt, params, 4, eos_ids=(), media=media_b)
  assert_same(out, each_row_prefilled(vl.model(), ids_bt, mask_bt, params, 4, eos_ids=(),
                                      media=media_b))


def _eqns(jaxpr):
  """Every equation of a jaxpr and of the jaxprs nested in it (jit, while, cond, ...)."""
  for eqn in jaxpr.eqns:
    yield eqn
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        if isinstance(sub, jax.extend.core.ClosedJaxpr):
          yield from _eqns(sub.jaxpr)
        elif isinstance(sub, jax.extend.core.Jaxpr):
          yield from _eqns(sub)


def test_prefill_runs_on_the_prompts_not_on_every_sample():
  graphdef, state = nnx.split(orj.from_pretrained(sharp_qwen2()))
  ids_bt, mask_bt = left_padded_prompts()
  traced = sampler._generate_jit.trace(  # noqa: SLF001 (the jitted program itself)
      graphdef, state, ids_bt, mask_bt, np.uint32(0), None, None, params=PARAMS, eos_ids=(),
      pad_id=0, mesh=None, rules=DEFAULT_RULES)
  # The projections are matrix products over [rows · positions, features]: the
  # prefill's have a multiple of the prompt's positions, the decode steps' one
  # position per row (rows · G, not such a multiple here).
  assert PROMPT_LEN not in (1, PROMPT_LEN + N - 1)
  assert (len(ids_bt) * G) % PROMPT_LEN != 0
  prefill_rows = {eqn.invars[0].aval.shape[0] // PROMPT_LEN
                  for eqn in _eqns(traced.jaxpr.jaxpr)
                  if eqn.primitive.name == "dot_general" and eqn.invars[0].aval.ndim == 2
                  and eqn.invars[0].aval.shape[0] % PROMPT_LEN == 0}
  assert prefill_rows == {len(ids_bt)}, prefill_rows
