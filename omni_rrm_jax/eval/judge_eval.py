"""Evaluating a generative judge: greedy judgments in both A/B orders.

Each record is judged twice, as given and with the responses swapped; the
swapped verdict is mapped back. The first order's verdict is the prediction
(so a judge that always answers "A" scores about 50% on randomised data), and
position consistency says how often the two orders agree.

With a multimodal judge (an encoder with a `MediaSpec`), image, video and
audio records are judged with their media: the prompt's placeholders are
expanded and the sampler encodes the media once per prompt, so the report's
per-modality accuracy is the judge's own. A record whose media cannot be used
counts as unparseable, and `unscored` says why.
"""

from __future__ import annotations

import collections
import time
from typing import Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from omni_rrm_jax.core.multihost import allgather
from omni_rrm_jax.data import media_batching
from omni_rrm_jax.data.prompt_fit import fit_prompt
from omni_rrm_jax.data.records import PreferenceRecord
from omni_rrm_jax.data.templates import judge_messages
from omni_rrm_jax.data.tokenize import INVALID_REASONS, ExampleEncoder
from omni_rrm_jax.eval.bootstrap import DEFAULT_SAMPLES
from omni_rrm_jax.eval.latency import LatencyLog
from omni_rrm_jax.eval.metrics import Outcome, report
from omni_rrm_jax.rewards.judgment import parse_judgment
from omni_rrm_jax.sampling.params import SamplingParams
from omni_rrm_jax.sampling.prompts import left_pad, left_pad_media, media_needs
from omni_rrm_jax.sampling.sampler import generate
from omni_rrm_jax.sharding.batch import to_global

_SWAP = {"A": "B", "B": "A", "equal": "equal"}


def judge_prompt(encoder: ExampleEncoder, record: PreferenceRecord, swap: bool,
                 max_prompt_length: int) -> dict | str:
  """The judge prompt's `{"prompt_ids"}` (plus its media arrays with a `MediaSpec`),
  or why the record's media cannot be used."""
  return messages_prompt(encoder, record, judge_messages(record, swap=swap), max_prompt_length)


def messages_prompt(encoder: ExampleEncoder, record: PreferenceRecord,
                    messages: list[dict], max_prompt_length: int) -> dict | str:
  """A generation prompt of chat `messages` whose media `record` holds:
  `{"prompt_ids"}` (plus its media arrays with a `MediaSpec`), or why it cannot
  be used (an `INVALID_REASONS` name)."""
  if encoder.media is None:
    fitted = fit_prompt(encoder.prompt_pieces(messages), max_prompt_length)
    return "prompt too long" if fitted is None else {"prompt_ids": fitted[0]}
  # The encoder's own media checks and placeholder expansion (as in training).
  pieces, media, reason = encoder.prepare_prompt(record, messages)
  if reason != "ok":
    return reason
  fitted = fit_prompt(pieces, max_prompt_length)
  if fitted is None:
    return "media too long"
  ids = fitted[0]
  return {"prompt_ids": ids, **media_batching.example_arrays(ids, media, encoder.media)}


def _media_batch(encoder: ExampleEncoder, examples, width: int, patch_buckets,
                 min_needs=(0, 0)) -> dict:
  spec = encoder.media
  collated = media_batching.collate_media(
      examples, length=width, patch_buckets=patch_buckets or (0, spec.max_patches),
      merge_unit=spec.merge_unit, audio_frame_buckets=spec.audio_frame_buckets,
      min_patches=int(min_needs[0]), min_frames=int(min_needs[1]))
  return left_pad_media(collated, [len(ex["prompt_ids"]) for ex in examples])


def _filler(encoder: ExampleEncoder, pad_id: int) -> dict:
  """A one-token prompt that keeps a call's shape where a process has no prompt."""
  if encoder.media is None:
    return {"prompt_ids": [pad_id]}
  return {"prompt_ids": [pad_id], **media_batching.invalid_arrays(encoder.media)}


def _all_rows(x) -> np.ndarray:
  """Every row of a (batch-sharded) sampler output, on every process."""
  if not isinstance(x, jax.Array) or x.is_fully_addressable:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def generate_judgments(model, encoder: ExampleEncoder, records: Sequence[PreferenceRecord], *,
                       swap: bool, max_prompt_length: int, max_new_tokens: int,
                       batch_size: int, eos_ids: Sequence[int], pad_id: int,
                       mesh=None, patch_buckets: Sequence[int] = (),
                       skipped: collections.Counter | None = None,
                       latency: LatencyLog | None = None) -> list[str | None]:
  """Greedy judgments for `records` (in one A/B order), as decoded text.

  Every process passes all `records`. Each call of the sampler judges one
  global batch of `batch_size` consecutive records; each process builds the
  prompts of its consecutive share of them (media decoded once, where the
  row is), the processes agree on the padded shapes, and every process
  gets every row's judgment back, so all return the same list.

  Args:
    model: the judge (a causal LM or a multimodal model).
    encoder: builds the prompts; with a `MediaSpec`, media records keep their media.
    records: what to judge.
    swap: show response B first (as "A").
    max_prompt_length: the prompt's user text is cut from the left beyond this.
    max_new_tokens: the longest judgment.
    batch_size: prompts per `generate` call over all processes (the last call
      is padded to it); a multiple of the process count.
    eos_ids: a judgment ends at the first of these.
    pad_id: the tokenizer's pad id.
    mesh: the device mesh (needed with several processes).
    patch_buckets: padded patch counts per prompt (default: 0 and the
      encoder's `max_patches`); each distinct one compiles once.
    skipped: counts, by reason, the records whose media could not be used.
    latency: receives each sampler call's wall time over its judged records
      (the first call of a prompt width counted as compiling).

  Returns:
    One text per record; None for a record whose media could not be used.
  """
  n_proc, rank = jax.process_count(), jax.process_index()
  if batch_size % n_proc:
    raise ValueError(f"batch_size={batch_size} is not divisible by {n_proc} processes")
  if n_proc > 1 and mesh is None:
    raise ValueError("judging on several processes needs a mesh")
  share = batch_size // n_proc
  params = SamplingParams(greedy=True, max_new_tokens=max_new_tokens)
  texts: list[str | None] = []
  widths_seen = set()
  for start in range(0, len(records), batch_size):
    chunk = records[start:start + batch_size]
    mine = [judge_prompt(encoder, r, swap, max_prompt_length)
            for r in chunk[rank * share:(rank + 1) * share]]
    # Per row of the global batch: its INVALID_REASONS code (0: judged, -1:
    # past the end), gathered with each process's longest prompt and media.
    codes = [INVALID_REASONS.index(p) if isinstance(p, str) else 0 for p in mine]
    codes += [-1] * (share - len(mine))
    examples = [p for p in mine if not isinstance(p, str)]
    needs = [max((len(ex["prompt_ids"]) for ex in examples), default=1),
             *(media_needs(examples) if examples and encoder.media is not None else (0, 0))]
    gathered = allgather([*needs, *codes])
    needs, codes = gathered[:, :3].max(axis=0), gathered[:, 3:].reshape(-1)[:len(chunk)]
    if skipped is not None:
      skipped.update(INVALID_REASONS[c] for c in codes if c > 0)
    if not (codes == 0).any():
      texts += [None] * len(chunk)
      continue
    # Rows without a prompt repeat one (or a one-token filler) so every call
    # has the same shape; their judgments are dropped.
    filler = examples[0] if examples else _filler(encoder, pad_id)
    rows = [p if not isinstance(p, str) else filler for p in mine]
    rows += [filler] * (share - len(rows))
    began = time.perf_counter()
    tokens = generate_rows(model, encoder, rows, params, needs=needs, eos_ids=eos_ids,
                           pad_id=pad_id, mesh=mesh, patch_buckets=patch_buckets)
    if latency is not None:
      width = -(-int(needs[0]) // 64) * 64  # the prompt width generate_rows pads to
      latency.add(time.perf_counter() - began, int((codes == 0).sum()),
                  compiled=width not in widths_seen)
      widths_seen.add(width)
    texts += [encoder.tokenizer.decode(t, skip_special_tokens=True) if code == 0 else None
              for t, code in zip(tokens, codes)]
  return texts


def generate_rows(model, encoder: ExampleEncoder, rows: Sequence[dict], params: SamplingParams,
                  *, needs: Sequence[int], eos_ids: Sequence[int], pad_id: int, mesh=None,
                  patch_buckets: Sequence[int] = ()) -> list[list[int]]:
  """One sampler call on this process's encoded prompts (`messages_prompt`'s
  dicts): the completion tokens of every row of the global batch (without
  padding; a completion ends at its first EOS token).

  Args:
    needs: the (length, patches, audio frames) the batch is padded to at least
      (the maximum over processes).
  """
  ids_bt, mask_bt = left_pad([ex["prompt_ids"] for ex in rows], pad_id, multiple=64,
                             min_length=int(needs[0]))
  batch = {"ids": ids_bt, "mask": mask_bt}
  if encoder.media is not None:
    batch.update(_media_batch(encoder, rows, ids_bt.shape[1], patch_buckets, needs[1:]))
  if mesh is not None:
    batch = to_global(batch, mesh)
  media = {k: v for k, v in batch.items() if k not in ("ids", "mask")}
  out = generate(model, batch["ids"], batch["mask"], params, 0, eos_ids=tuple(eos_ids),
                 pad_id=pad_id, mesh=mesh, media=media or None)
  tokens, mask = _all_rows(out.tokens_bn), _all_rows(out.mask_bn).astype(bool)
  return [tokens[row][mask[row]].tolist() for row in range(len(tokens))]


def verdict(text: str | None) -> tuple[str | None, bool]:
  """(preference or None, strictly valid JSON) of one judgment text."""
  if text is None:
    return None, False
  strict = parse_judgment(text, strict=True)
  lenient = strict if strict.ok else parse_judgment(text, strict=False)
  return (lenient.judgment.better if lenient.ok else None), strict.ok


def evaluate_judge(model, encoder: ExampleEncoder, records: Sequence[PreferenceRecord], *,
                   max_prompt_length: int, max_new_tokens: int, batch_size: int,
                   eos_ids: Sequence[int], pad_id: int, mesh=None,
                   keep_examples: int = 3, patch_buckets: Sequence[int] = (),
                   ci_samples: int = DEFAULT_SAMPLES, ci_seed: int = 0) -> dict:
  """Accuracy (overall and per modality, with and without ties), ties,
  unparseable outputs, valid-JSON rate and position consistency; `unscored`
  counts records whose media could not be used (they count as unparseable).
  "latency" is per record, both orders together; "outcomes" are the
  per-record `Outcome`s (not JSON)."""
  latency = LatencyLog()
  kw = dict(max_prompt_length=max_prompt_length, max_new_tokens=max_new_tokens,
            batch_size=batch_size, eos_ids=eos_ids, pad_id=pad_id, mesh=mesh,
            patch_buckets=patch_buckets, latency=latency)
  unscored = collections.Counter()
  forward = generate_judgments(model, encoder, records, swap=False, skipped=unscored, **kw)
  swapped = generate_judgments(model, encoder, records, swap=True, **kw)
  outcomes = []
  valid_json, judged = collections.Counter(), collections.Counter()  # per modality
  for record, text, text_swapped in zip(records, forward, swapped):
    pred, strict_ok = verdict(text)
    pred_swapped, strict_ok_swapped = verdict(text_swapped)
    valid_json[record.modality] += strict_ok + strict_ok_swapped
    judged[record.modality] += 2
    back = _SWAP[pred_swapped] if pred_swapped is not None else None
    consistent = pred is not None and back is not None and pred == back
    outcomes.append(Outcome(record.label, pred, record.modality, record.subset, consistent,
                            record_id=record.id, group=record.group))
  result = report(outcomes, ci_samples=ci_samples, ci_seed=ci_seed)
  # Strict valid-JSON rate over both orders' judgments, overall and per modality.
  result["overall"]["valid_json_rate"] = (sum(valid_json.values()) / sum(judged.values())
                                          if records else 0.0)
  for modality, summary in result["per_modality"].items():
    summary["valid_json_rate"] = valid_json[modality] / judged[modality]
  result["unscored"] = dict(unscored)
  # Each record was judged in two calls (both orders): its latency is their sum.
  timing = latency.summary()
  result["latency"] = {**timing, "pairs": timing["pairs"] // 2,
                       **{k: None if timing[k] is None else 2 * timing[k]
                          for k in ("p50_ms", "p95_ms")}}
  result["outcomes"] = outcomes
  result["examples"] = [{"id": r.id, "label": r.label, "judgment": t}
                        for r, t in list(zip(records, forward))[:keep_examples]]
  return result
