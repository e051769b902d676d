"""GRPO rollouts: prompts from Grain, G sampled completions each, decoded and scored.

  prompts = iter(make_prompt_dataset(records, encoder, recipe="judge", ...))
  batch = generate_round(policy, next(prompts), sampling=..., rng=key, ...)  # device -> host
  batch.update(scorer(records, texts, batch))                              # host Python

Everything a round returns is a dict of host numpy arrays with one row per
completion, groups of G consecutive rows per prompt, which is the layout
`rl.shaping.fill_groups` and `rl.advantages` expect. Prompts are stored
left-padded to the full `max_prompt_length`, so rounds of different prompt
buckets concatenate; the train step cuts them back to the batch's bucket.

Two recipes turn a `PreferenceRecord` into a prompt and reward columns:
  judge   the judge prompt (`data.templates.judge_messages`); columns
          `label` and `teacher_scores` (the judge rewards read them);
  policy  the record's prompt as one user turn; column `reference` (the
          better response, both on a tie) for the text rewards.

With a multimodal policy (an encoder with a `MediaSpec`), image, video and
audio records keep their media: prompts carry it (`prompt_media.py`), the
sampler encodes it once per prompt, and every completion row keeps its
prompt's media in the `prompt_media` column for the policy update. Prompts
whose media fail come back with `valid` 0 (and their `invalid_reason`).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import grain
import jax
import numpy as np

from omni_rrm_jax.core.multihost import agree_max
from omni_rrm_jax.core.weight_spec import parse_weights
from omni_rrm_jax.data.grouped_shuffle import BlockShuffle
from omni_rrm_jax.data.pipeline import prefetch_in_workers
from omni_rrm_jax.data.prompt_fit import fit_prompt
from omni_rrm_jax.data.records import PreferenceRecord
from omni_rrm_jax.data.templates import judge_messages, media_parts
from omni_rrm_jax.data.tokenize import INVALID_REASONS, ExampleEncoder
from omni_rrm_jax.rewards import REWARDS, WeightedReward, parse_judgment
from omni_rrm_jax.config.tasks import RECIPES
from omni_rrm_jax.rl.prompt_media import PROMPT_MEDIA, PromptMedia, object_column, prompt_example
from omni_rrm_jax.rl.shaping import overlong_penalty
from omni_rrm_jax.sampling.params import SamplingParams
from omni_rrm_jax.sampling.prompts import left_pad, media_needs
from omni_rrm_jax.sampling.sampler import generate
from omni_rrm_jax.sharding.batch import host_rows, to_global


def policy_messages(record: PreferenceRecord) -> list[dict[str, Any]]:
  """The record's prompt as one user turn, its media parts first."""
  parts = media_parts(record)
  content = [*parts, {"type": "text", "text": record.prompt}] if parts else record.prompt
  return [{"role": "user", "content": content}]


def recipe_messages(record: PreferenceRecord, recipe: str) -> list[dict[str, Any]]:
  if recipe not in RECIPES:
    raise ValueError(f"unknown recipe {recipe!r}; known: {', '.join(RECIPES)}")
  return judge_messages(record) if recipe == "judge" else policy_messages(record)


def prompt_ids(encoder: ExampleEncoder, record: PreferenceRecord, recipe: str,
               max_prompt_length: int) -> list[int] | None:
  """The prompt's tokens for `recipe` (generation prompt included), fitted to
  `max_prompt_length` by `data.prompt_fit.fit_prompt` (its user content cut
  from the left); None when the template's framing alone is longer. Text
  path: media stay one placeholder token each (see `encode_prompt`)."""
  fitted = fit_prompt(encoder.prompt_pieces(recipe_messages(record, recipe)), max_prompt_length)
  return None if fitted is None else fitted[0]


def encode_prompt(encoder: ExampleEncoder, record: PreferenceRecord, recipe: str,
                  max_prompt_length: int) -> dict[str, Any]:
  """`{"prompt_ids", "valid", "invalid_reason"}` of a record's prompt, plus its
  per-example media arrays when the encoder has a `MediaSpec`. A text prompt
  whose framing alone exceeds `max_prompt_length` comes back invalid ("prompt
  too long", a one-token stand-in): the loop skips and counts it."""
  ids = prompt_ids(encoder, record, recipe, max_prompt_length)
  if encoder.media is None:
    if ids is None:
      return {"prompt_ids": np.zeros(1, np.int32), "valid": False,
              "invalid_reason": INVALID_REASONS.index("prompt too long")}
    return {"prompt_ids": np.asarray(ids, np.int32), "valid": True, "invalid_reason": 0}
  return prompt_example(encoder, record, recipe_messages(record, recipe), max_prompt_length,
                        ids or [])


def reward_columns(records: Sequence[PreferenceRecord], recipe: str) -> dict[str, list]:
  """Per-sample columns the reward functions read, one entry per record."""
  if recipe == "judge":
    return {"label": [r.label for r in records], "teacher_scores": [r.scores for r in records]}
  refs = []
  for r in records:
    if r.label == "equal":
      refs.append([r.response_a, r.response_b])
    else:
      refs.append(r.response_a if r.label == "A" else r.response_b)
  return {"reference": refs, "label": [r.label for r in records]}


def prompt_texts(records: Sequence[PreferenceRecord], recipe: str) -> list[Any]:
  """What reward functions receive as `prompts`: the user turn as chat messages."""
  if recipe == "judge":
    return [judge_messages(r) for r in records]
  return [policy_messages(r) for r in records]


class _Tag(grain.transforms.MapWithIndex):
  def map_with_index(self, index: int, record: PreferenceRecord):
    return index, record


class _Share(grain.transforms.Map):
  """This process's rows of a global batch of tagged records."""

  def __init__(self, process_index: int, rows: int):
    self.start, self.rows = process_index * rows, rows

  def map(self, tagged_rows):
    return list(tagged_rows[self.start:self.start + self.rows])


class _EncodePrompts(grain.transforms.Map):
  """A picklable map step: [(index, record)] -> `encode_prompt(...)` dicts plus "index"."""

  def __init__(self, encoder: ExampleEncoder, recipe: str, max_prompt_length: int):
    self.encoder, self.recipe, self.max_prompt_length = encoder, recipe, max_prompt_length

  def map(self, tagged_rows) -> list[dict[str, Any]]:
    return [{**encode_prompt(self.encoder, record, self.recipe, self.max_prompt_length),
             "index": index} for index, record in tagged_rows]


def make_prompt_dataset(records: Sequence[PreferenceRecord], encoder: ExampleEncoder, *,
                        recipe: str, max_prompt_length: int, batch_size: int, seed: int,
                        shuffle: bool = True, num_epochs: int | None = None,
                        worker_count: int = 0, process_index: int = 0,
                        process_count: int = 1, shuffle_block: int = 1) -> grain.IterDataset:
  """Batches (lists) of `encode_prompt` dicts with their record's "index", for
  this process, as in `data.pipeline`.

  Seeded global shuffle reshuffled each epoch, cut into global batches of
  `batch_size * process_count` prompts of which this process takes its
  `batch_size` consecutive rows (so a global batch holds the same prompts, in
  the same order, for any process count), encoding in Grain (worker
  processes when `worker_count`); the iterator's `get_state()` is a small
  dict that resumes at the same prompt, and is the same on every process.

  Args:
    records: the prompts' records.
    encoder: encodes a record's prompt (`encode_prompt`).
    recipe: "judge" or "policy".
    max_prompt_length: the prompt's user content is cut from the left beyond this.
    batch_size: this process's prompts per batch.
    seed: the shuffle seed.
    shuffle: shuffle (reshuffled each epoch).
    num_epochs: passes over `records` (None: forever).
    worker_count: Grain worker processes (0: encode in this process).
    process_index: this process's index.
    process_count: processes sharing each global batch. With more than one,
      a finite stream must hold whole global batches (every process builds
      a batch of the same size at every step).
    shuffle_block: with `shuffle`, blocks of this many consecutive records
      are shuffled whole and never split between batches or processes (a
      pair and its A/B-swapped twin are sampled in the same step).

  Raises:
    ValueError: no records, or a finite stream that ends in a partial global
      batch with several processes.
  """
  if not records:
    raise ValueError("no prompts (every record was skipped?)")
  global_rows = batch_size * process_count
  if process_count > 1 and num_epochs is not None and (len(records) * num_epochs) % global_rows:
    raise ValueError(f"{len(records)} prompts x {num_epochs} epochs do not split into global "
                     f"batches of {global_rows} ({process_count} processes)")
  ds = grain.MapDataset.source(list(records)).map_with_index(_Tag())
  if shuffle and shuffle_block > 1:
    if batch_size % shuffle_block:
      raise ValueError(f"data.shuffle_block {shuffle_block} must divide each process's "
                       f"{batch_size} prompts a step")
    ds = BlockShuffle(ds, block=shuffle_block, seed=seed)
  elif shuffle:
    ds = ds.shuffle(seed=seed)
  if num_epochs != 1:
    ds = ds.repeat(num_epochs)
  ds = ds.batch(global_rows, drop_remainder=False, batch_fn=list)
  if process_count > 1:
    ds = ds.map(_Share(process_index, batch_size))
  it = ds.map(_EncodePrompts(encoder, recipe, max_prompt_length)).to_iter_dataset()
  return prefetch_in_workers(it, worker_count)


def generate_round(policy, prompts: Sequence[Mapping[str, Any]], *, sampling: SamplingParams,
                   rng: jax.Array, eos_ids: Sequence[int], pad_id: int, bucket: int,
                   max_prompt_length: int, mesh=None, rules=(),
                   media: PromptMedia | None = None) -> dict[str, np.ndarray]:
  """G completions for each prompt of one batch, as host arrays (G rows per prompt).

  Args:
    policy: `(graphdef, params)` of the causal LM (or multimodal model).
    prompts: a batch of `make_prompt_dataset` (this process's rows of the
      global batch; every process calls this with as many).
    sampling: the sampling parameters (`num_samples` is G).
    rng: the round's key, the same on every process (each prompt draws by
      its record's index, so a prompt's completions do not depend on the
      batch, the row or the process that holds it).
    eos_ids: a completion ends at the first of these.
    pad_id: the tokenizer's pad id.
    bucket: prompts are left-padded to a multiple of this.
    max_prompt_length: the stored prompt width.
    mesh: the device mesh (prompts are placed on it sharded by rows).
    rules: logical -> mesh axis rules.
    media: how to batch the prompts' media, for prompts that carry it (an
      encoder with a `MediaSpec`); the sampler encodes it once per prompt.

  Returns:
    This process's rows: `prompt_ids`, `prompt_mask` [n, max_prompt_length];
    `completion_ids`, `completion_mask`, `old_logp` [n, N]; `lengths`,
    `truncated`, `index` (the record), `valid` (0 for prompts whose media
    failed) and `invalid_reason` [n]; with media, `prompt_media` [n] (each row's prompt
    example, an object column for `PromptMedia.collate`); n = len(prompts) * G.
  """
  g = sampling.num_samples
  with_media = media is not None and "media_index" in prompts[0]
  # The global batch's prompt length, patch and frame buckets: every process
  # pads its rows to the same shapes (one small collective).
  needs = agree_max([max(len(p["prompt_ids"]) for p in prompts),
                     *(media_needs(prompts) if with_media else (0, 0))])
  ids_bt, mask_bt = left_pad([p["prompt_ids"].tolist() for p in prompts], pad_id,
                             multiple=bucket, max_length=max_prompt_length,
                             min_length=int(needs[0]))
  index = np.asarray([p["index"] for p in prompts], np.int64)
  # Each prompt draws from its record's index: a completion depends on the
  # round's key and its prompt, not on the batch it was drawn in.
  host = {"ids": ids_bt, "mask": mask_bt, "keys": index.astype(np.int32)}
  if with_media:
    host.update(media.collate(prompts, ids_bt.shape[1], min_needs=needs[1:]))
  placed = to_global(host, mesh, rules) if mesh is not None else host
  prompt_media = {k: v for k, v in placed.items() if k not in ("ids", "mask", "keys")}
  sampled = generate(policy, placed["ids"], placed["mask"], sampling, rng,
                     eos_ids=tuple(eos_ids), pad_id=pad_id, mesh=mesh, rules=rules,
                     media=prompt_media or None, prompt_keys=placed["keys"])
  wide_ids = np.full((len(prompts), max_prompt_length), pad_id, np.int32)
  wide_mask = np.zeros((len(prompts), max_prompt_length), np.int32)
  wide_ids[:, -ids_bt.shape[1]:], wide_mask[:, -ids_bt.shape[1]:] = ids_bt, mask_bt
  valid = np.asarray([p.get("valid", True) for p in prompts], np.float32)
  reason = np.asarray([p.get("invalid_reason", 0) for p in prompts], np.int32)
  out = {
      "prompt_ids": np.repeat(wide_ids, g, axis=0),
      "prompt_mask": np.repeat(wide_mask, g, axis=0),
      "completion_ids": host_rows(sampled.tokens_bn),
      "completion_mask": host_rows(sampled.mask_bn),
      "old_logp": host_rows(sampled.logprobs_bn),
      "lengths": host_rows(sampled.lengths_b),
      "truncated": host_rows(sampled.truncated_b),
      "index": np.repeat(index, g),
      "valid": np.repeat(valid, g),
      "invalid_reason": np.repeat(reason, g),
  }
  if with_media:
    out[PROMPT_MEDIA] = np.repeat(object_column(prompts), g)
  return out


def decode(tokenizer, batch: Mapping[str, np.ndarray]) -> list[str]:
  """Completion texts (special tokens dropped; the judge's tags are not special)."""
  ids, mask = batch["completion_ids"], batch["completion_mask"].astype(bool)
  return tokenizer.batch_decode([row[m].tolist() for row, m in zip(ids, mask)],
                                skip_special_tokens=True)


def parse_reward_spec(spec: str) -> dict[str, float]:
  """"judge_format:0.5,judge_content:0.5" -> {name: weight}; a bare name weighs 1
  (`core/weight_spec.py:parse_weights`)."""
  return parse_weights(spec, "reward.functions", bare_weight=1.0)


class RewardScorer:
  """Host-side rewards of a round: the weighted registry rewards (plus extra terms
  such as a model reward), the overlong penalty, and the judge's parse failures.

  Args:
    spec: `"name:weight,..."` over `rewards.REWARDS`; may be empty when
      `extra` is not.
    recipe: "judge" or "policy" (what the columns and prompts hold).
    extra: more `{name: (reward function, weight)}` terms.
    overlong: `(max_len, cache_len)` to add `shaping.overlong_penalty`, or None.
  """

  def __init__(self, spec: str, recipe: str, *,
               extra: Mapping[str, tuple[Callable[..., list[float]], float]] | None = None,
               overlong: tuple[int, int] | None = None):
    terms = {name: (REWARDS.get(name), weight) for name, weight in parse_reward_spec(spec).items()}
    terms.update(extra or {})
    self.reward = WeightedReward(terms, name="grpo_reward")
    self.names = list(terms)
    self.recipe = recipe
    self.overlong = overlong

  def __call__(self, records: Sequence[PreferenceRecord], texts: Sequence[str],
               batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rewards [n] of the completions `texts` of `records` (one record per text).

    Returns:
      `rewards` (the total that advantages use), `reward/<name>` per function
      (unweighted), `overlong_penalty` when on, and `parse_failed` (judge).
    """
    parts = self.reward.breakdown(prompt_texts(records, self.recipe), list(texts),
                                  **reward_columns(records, self.recipe))
    out = {f"reward/{k}": np.asarray(v, np.float32) for k, v in parts.per_function.items()}
    total = np.asarray(parts.total, np.float32)
    if self.overlong is not None:
      penalty = np.asarray(overlong_penalty(batch["lengths"], *self.overlong))
      out["overlong_penalty"] = penalty
      total = total + penalty
    out["rewards"] = total
    if self.recipe == "judge":
      out["parse_failed"] = np.asarray(
          [not parse_judgment(t, strict=False).ok for t in texts], np.float32)
    return out

  def score_valid(self, records: Sequence[PreferenceRecord], texts: Sequence[str],
                  batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The rewards of a round's rows whose prompt could be built (`valid`), as
    columns over all its rows (0 at the others, which never train).

    Args:
      records: all records; a row's is `records[batch["index"][row]]`.
      texts: the decoded completions, one per row.
      batch: the round's rows (`generate_round`).

    Every process calls this once per round, with or without valid rows of
    its own: a model reward scores in batches shared by all processes.
    """
    rows_r = np.flatnonzero(np.asarray(batch["valid"]) > 0)
    sub = {k: np.asarray(v)[rows_r] for k, v in batch.items()}
    columns = self([records[int(i)] for i in sub["index"]], [texts[r] for r in rows_r], sub)
    out = {}
    for key, values in columns.items():
      values = np.asarray(values)
      out[key] = np.zeros((len(texts), *values.shape[1:]), values.dtype)
      out[key][rows_r] = values
    return out


def pad_groups(batch: Mapping[str, np.ndarray], target_rows: int) -> dict[str, np.ndarray]:
  """Fills a short, non-empty batch up to `target_rows` with rows that cannot reach the loss.

  The filler repeats the first row with `valid`, `loss_mask` and `adv` zero
  (real tokens rather than all-padding rows, so the forward pass stays finite),
  and the step's shapes never change.
  """
  n = len(batch["valid"])
  if n == 0:
    raise ValueError("cannot pad an empty batch; skip the update instead")
  out = {}
  for k, v in batch.items():
    filler = np.repeat(v[:1], max(target_rows - n, 0), axis=0)
    if k in ("valid", "loss_mask", "adv"):
      filler = np.zeros_like(filler)
    out[k] = np.concatenate([v, filler])
  return out
