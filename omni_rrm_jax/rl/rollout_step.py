"""One GRPO step's rollouts: sampling rounds, host rewards, the global batch, dynamic sampling.

  rollouts = Rollouts(graphdef, tokenizer=tok, scorer=scorer, group_size=G, gen_kw=gen_kw)
  drawn = rollouts.step(params, jax.random.fold_in(rng, step), prompt_iter, records,
                        prompts_per_step=P, max_rounds=R, dynamic_sampling=True)
  drawn.batch, drawn.num_groups, drawn.metrics   # the groups to train on, and the step's
                                                 # reward and sampling metrics

A round draws one prompt batch, samples G completions per prompt with the current
params, decodes them and scores them on the host. On several processes each
samples and scores its own rows, then every process holds the round's rows of all
(`rl/multihost_rows.py`), so the keep / refill decisions below are taken on the
global batch. With dynamic sampling, groups whose rewards are all equal are
dropped and further rounds drawn, up to `max_rounds` (`rl/shaping.py:fill_groups`).
Round r of step s samples with `fold_in(fold_in(rng, s), r)`.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from typing import Any, Iterator, Sequence

import jax
import numpy as np

from omni_rrm_jax.data.tokenize import INVALID_REASONS
from omni_rrm_jax.core.standard_error import paired_change
from omni_rrm_jax.rl import rollout
from omni_rrm_jax.rl.multihost_rows import gather_rows
from omni_rrm_jax.rl.shaping import fill_groups


def concat_rows(batches: Sequence[dict]) -> dict:
  """The rows of several batches with the same keys, in order."""
  return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def valid_groups(batch: dict, group_size: int, skipped: collections.Counter | None = None):
  """The round's groups whose prompts could be built; the others are counted by reason."""
  valid_g = batch["valid"][::group_size] > 0
  if skipped is not None:
    for reason in batch["invalid_reason"][::group_size][~valid_g]:
      skipped[INVALID_REASONS[int(reason)]] += 1
  if valid_g.all():
    return batch
  keep_b = np.repeat(valid_g, group_size)
  return {k: v[keep_b] for k, v in batch.items()}


def reward_metrics(sampled: dict, names, group_size: int) -> dict[str, float]:
  """Means and stds (population, ddof 0) of every reward over all completions a
  step sampled, and their number (with the std, the standard error of a mean)."""
  out = {"reward/total_mean": float(np.mean(sampled["rewards"])),
         "reward/total_std": float(np.std(sampled["rewards"])),
         "num_completions": int(np.size(sampled["rewards"]))}
  for name in names:
    values = sampled[f"reward/{name}"]
    out[f"reward/{name}_mean"], out[f"reward/{name}_std"] = float(values.mean()), float(values.std())
  out["completion_length"] = float(sampled["lengths"].mean())
  out["truncated_frac"] = float(sampled["truncated"].mean())
  for key, name in (("parse_failed", "parse_failure_rate"),
                    ("overlong_penalty", "overlong_penalty_mean")):
    if key in sampled:
      out[name] = float(sampled[key].mean())
  rewards_gk = sampled["rewards"].reshape(-1, group_size)
  out["zero_variance_group_frac"] = float(np.mean(rewards_gk.max(-1) == rewards_gk.min(-1)))
  return out


PROMPT_KEYS = ("index", "modality")  # the per-prompt lists that are no reward


def prompt_means(sampled: dict, names, group_size: int, records=None) -> dict[str, list]:
  """Each prompt's mean of every reward over its G completions (`total` and one
  list per reward function), with its record's `index` (and, given the
  records, its `modality`): what a paired change between two evaluations of
  the same prompts is measured on (`core/standard_error.py:paired_change`)."""
  out = {"index": sampled["index"][::group_size].tolist()}
  if records is not None:
    out["modality"] = [records[int(i)].modality for i in out["index"]]
  out["total"] = sampled["rewards"].reshape(-1, group_size).mean(-1).tolist()
  for name in names:
    out[name] = sampled[f"reward/{name}"].reshape(-1, group_size).mean(-1).tolist()
  return out


def changes_since(metrics: dict, start: dict | None) -> dict:
  """`metrics` of an evaluation plus, for every reward, its change since the
  `start` evaluation of the same prompts and the paired standard error of that
  change (`reward/<name>_change`, `reward/<name>_change_se`); `metrics`
  unchanged without a start (a resumed run) or per-prompt rewards."""
  if not start or "prompts" not in start or "prompts" not in metrics:
    return metrics
  out = dict(metrics)
  for name in metrics["prompts"]:
    if name in PROMPT_KEYS:
      continue
    change = paired_change(start["prompts"], metrics["prompts"], name)
    if change is not None:
      out[f"reward/{name}_change"] = change["change"]
      out[f"reward/{name}_change_se"] = change["se"]
  return out


@dataclasses.dataclass
class StepRollouts:
  """What one step's rollouts give the update.

  Attributes:
    batch: the kept groups' rows (global, G consecutive rows per prompt), or
      None when no round had a usable prompt.
    num_groups: how many groups `batch` holds (0: nothing to train on).
    metrics: rewards over every round drawn, `groups_kept`, `rollout_rounds`,
      `prompts_skipped`, `loss_batch/zero_variance_groups`.
  """
  batch: dict | None
  num_groups: int
  metrics: dict[str, float]


class Rollouts:
  """Samples, decodes and scores prompt batches with a policy's params.

  Args:
    graphdef: the policy's graph definition.
    tokenizer: decodes completions (its EOS and pad ids are in `gen_kw`).
    scorer: the host `rollout.RewardScorer`.
    group_size: completions per prompt (G).
    gen_kw: keyword arguments of `rollout.generate_round` (sampling params,
      ids, buckets, mesh, rules, prompt media).

  Attributes:
    timers: seconds spent in `rollout` (sampling, decoding) and `reward`
      (host scoring) since the caller last cleared it.
    skipped: training prompt draws skipped since the run started, by reason.
  """

  def __init__(self, graphdef, *, tokenizer, scorer: rollout.RewardScorer, group_size: int,
               gen_kw: dict[str, Any]):
    self._graphdef, self._tokenizer, self._scorer = graphdef, tokenizer, scorer
    self._gen_kw = gen_kw
    self.group_size = group_size
    self.timers: collections.Counter = collections.Counter()
    self.skipped: collections.Counter = collections.Counter()

  def sample(self, params, prompts: dict, rng: jax.Array, records,
             skipped: collections.Counter | None = None) -> dict | None:
    """One rollout round: every process generates, decodes and scores its
    prompts (timed apart), then all hold the round's rows of every process, so
    what follows is decided on the global batch; None when no prompt of the
    round could be built."""
    g = self.group_size
    t = time.perf_counter()
    batch = rollout.generate_round((self._graphdef, params), prompts, rng=rng, **self._gen_kw)
    texts = rollout.decode(self._tokenizer, batch)
    self.timers["rollout"] += time.perf_counter() - t
    t = time.perf_counter()
    batch.update(self._scorer.score_valid(records, texts, batch))
    self.timers["reward"] += time.perf_counter() - t
    batch = valid_groups(gather_rows(batch, g), g, skipped)
    return batch if len(batch["valid"]) else None

  def evaluate(self, params, key: jax.Array, prompt_batches: Sequence[dict],
               records) -> dict[str, float]:
    """Reward metrics over fixed prompt batches, all sampled with `key`: each
    prompt draws by its record's index, so the numbers do not depend on how the
    prompts are batched (`rl/rollout.py:generate_round`). `"prompts"` holds
    each prompt's mean rewards (`prompt_means`; not a scalar, so metric
    writers skip it); `time/eval` the seconds it took."""
    t = time.perf_counter()
    batches = [self.sample(params, p, key, records) for p in prompt_batches]
    batches = [b for b in batches if b is not None]
    if not batches:
      return {}
    rows = concat_rows(batches)
    return {**reward_metrics(rows, self._scorer.names, self.group_size),
            "prompts": prompt_means(rows, self._scorer.names, self.group_size, records),
            "time/eval": time.perf_counter() - t}

  def _rounds(self, params, rng_step: jax.Array, prompt_iter: Iterator, records,
              num_rounds: int, sampled: list) -> Iterator[dict]:
    """Rollout rounds with at least one usable prompt; `sampled` gets every round
    drawn (None for a round without one)."""
    for r in range(num_rounds):
      rng = jax.random.fold_in(rng_step, r)
      sampled.append(self.sample(params, next(prompt_iter), rng, records, self.skipped))
      if sampled[-1] is not None:
        yield sampled[-1]

  def step(self, params, rng_step: jax.Array, prompt_iter: Iterator, records, *,
           prompts_per_step: int, dynamic_sampling: bool, max_rounds: int,
           min_spread: float = 0.0) -> StepRollouts:
    """The rollouts of one step, sampled with keys folded from `rng_step`.

    Without dynamic sampling one round is drawn and its usable groups kept;
    with it, rounds are drawn until `prompts_per_step` groups with a reward
    spread are kept or `max_rounds` rounds were drawn.
    """
    g = self.group_size
    sampled: list[dict | None] = []
    skipped_before = sum(self.skipped.values())
    if dynamic_sampling:
      filled = fill_groups(
          self._rounds(params, rng_step, prompt_iter, records, max_rounds, sampled), g,
          prompts_per_step, max_rounds=max_rounds, min_spread=min_spread)
      batch, kept = filled.batch, filled.num_groups
    else:
      batch = next(self._rounds(params, rng_step, prompt_iter, records, 1, sampled), None)
      kept = 0 if batch is None else len(batch["valid"]) // g
    drawn = [b for b in sampled if b is not None]
    metrics = reward_metrics(concat_rows(drawn), self._scorer.names, g) if drawn else {}
    metrics.update({"groups_kept": kept, "rollout_rounds": len(sampled),
                    "prompts_skipped": sum(self.skipped.values()) - skipped_before})
    rewards_gk = batch["rewards"].reshape(-1, g) if kept else np.zeros((0, g))
    metrics["loss_batch/zero_variance_groups"] = int(
        np.sum(rewards_gk.max(-1) == rewards_gk.min(-1)))
    return StepRollouts(batch=batch, num_groups=kept, metrics=metrics)
