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
from typing import Sequence

import jax
import numpy as np

from omni_rrm_jax.data import media_batching
from omni_rrm_jax.data.records import PreferenceRecord
from omni_rrm_jax.data.templates import judge_messages
from omni_rrm_jax.data.tokenize import ExampleEncoder
from omni_rrm_jax.eval.metrics import Outcome, report
from omni_rrm_jax.rewards.judgment import parse_judgment
from omni_rrm_jax.sampling.params import SamplingParams
from omni_rrm_jax.sampling.prompts import fit_prompt, left_pad, left_pad_media
from omni_rrm_jax.sampling.sampler import generate

_SWAP = {"A": "B", "B": "A", "equal": "equal"}


def judge_prompt(encoder: ExampleEncoder, record: PreferenceRecord, swap: bool,
                 max_prompt_length: int) -> dict | str:
  """The judge prompt's `{"prompt_ids"}` (plus its media arrays with a `MediaSpec`),
  or why the record's media cannot be used."""
  if encoder.media is None:
    return {"prompt_ids": encoder.judge_prompt_ids(record, swap, max_prompt_length)}
  # The encoder's own media checks and placeholder expansion (as in training).
  pieces, media, reason = encoder.prepare_prompt(record, judge_messages(record, swap=swap))
  if reason != "ok":
    return reason
  ids = fit_prompt(pieces.prefix, pieces.content, pieces.suffix, max_prompt_length)
  if ids is None:
    return "media too long"
  return {"prompt_ids": ids, **media_batching.example_arrays(ids, media, encoder.media)}


def _media_batch(encoder: ExampleEncoder, examples, width: int, patch_buckets) -> dict:
  spec = encoder.media
  collated = media_batching.collate_media(
      examples, length=width, patch_buckets=patch_buckets or (0, spec.max_patches),
      merge_unit=spec.merge_unit, audio_frame_buckets=spec.audio_frame_buckets)
  return left_pad_media(collated, [len(ex["prompt_ids"]) for ex in examples])


def generate_judgments(model, encoder: ExampleEncoder, records: Sequence[PreferenceRecord], *,
                       swap: bool, max_prompt_length: int, max_new_tokens: int,
                       batch_size: int, eos_ids: Sequence[int], pad_id: int,
                       mesh=None, patch_buckets: Sequence[int] = (),
                       skipped: collections.Counter | None = None) -> list[str | None]:
  """Greedy judgments for `records` (in one A/B order), as decoded text.

  Args:
    model: the judge (a causal LM or a multimodal model).
    encoder: builds the prompts; with a `MediaSpec`, media records keep their media.
    records: what to judge.
    swap: show response B first (as "A").
    max_prompt_length: the prompt's user text is cut from the left beyond this.
    max_new_tokens: the longest judgment.
    batch_size: prompts per `generate` call (the last call is padded to it).
    eos_ids: a judgment ends at the first of these.
    pad_id: the tokenizer's pad id.
    mesh: the device mesh, if any.
    patch_buckets: padded patch counts per prompt (default: 0 and the
      encoder's `max_patches`); each distinct one compiles once.
    skipped: counts, by reason, the records whose media could not be used.

  Returns:
    One text per record; None for a record whose media could not be used.
  """
  params = SamplingParams(greedy=True, max_new_tokens=max_new_tokens)
  texts: list[str | None] = []
  for start in range(0, len(records), batch_size):
    chunk = [judge_prompt(encoder, r, swap, max_prompt_length)
             for r in records[start:start + batch_size]]
    if skipped is not None:
      skipped.update(p for p in chunk if isinstance(p, str))
    examples = [p for p in chunk if not isinstance(p, str)]
    if not examples:
      texts += [None] * len(chunk)
      continue
    # Pad the chunk to the batch size so every call has the same shape.
    examples += [examples[0]] * (batch_size - len(examples))
    ids_bt, mask_bt = left_pad([ex["prompt_ids"] for ex in examples], pad_id, multiple=64)
    media = (_media_batch(encoder, examples, ids_bt.shape[1], patch_buckets)
             if encoder.media is not None else None)
    out = generate(model, ids_bt, mask_bt, params, jax.random.key(0), eos_ids=tuple(eos_ids),
                   pad_id=pad_id, mesh=mesh, media=media)
    tokens = np.asarray(out.tokens_bn)
    mask = np.asarray(out.mask_bn).astype(bool)
    row = 0
    for prompt in chunk:
      if isinstance(prompt, str):
        texts.append(None)
        continue
      ids = tokens[row][mask[row]].tolist()
      texts.append(encoder.tokenizer.decode(ids, skip_special_tokens=True))
      row += 1
  return texts


def _verdict(text: str | None) -> tuple[str | None, bool]:
  """(preference or None, strictly valid JSON) of one judgment text."""
  if text is None:
    return None, False
  strict = parse_judgment(text, strict=True)
  lenient = strict if strict.ok else parse_judgment(text, strict=False)
  return (lenient.judgment.better if lenient.ok else None), strict.ok


def evaluate_judge(model, encoder: ExampleEncoder, records: Sequence[PreferenceRecord], *,
                   max_prompt_length: int, max_new_tokens: int, batch_size: int,
                   eos_ids: Sequence[int], pad_id: int, mesh=None,
                   keep_examples: int = 3, patch_buckets: Sequence[int] = ()) -> dict:
  """Accuracy (overall and per modality), ties, unparseable outputs, valid-JSON
  rate and position consistency; `unscored` counts records whose media could
  not be used (they count as unparseable)."""
  kw = dict(max_prompt_length=max_prompt_length, max_new_tokens=max_new_tokens,
            batch_size=batch_size, eos_ids=eos_ids, pad_id=pad_id, mesh=mesh,
            patch_buckets=patch_buckets)
  unscored = collections.Counter()
  forward = generate_judgments(model, encoder, records, swap=False, skipped=unscored, **kw)
  swapped = generate_judgments(model, encoder, records, swap=True, **kw)
  outcomes = []
  valid_json, judged = collections.Counter(), collections.Counter()  # per modality
  for record, text, text_swapped in zip(records, forward, swapped):
    pred, strict_ok = _verdict(text)
    pred_swapped, strict_ok_swapped = _verdict(text_swapped)
    valid_json[record.modality] += strict_ok + strict_ok_swapped
    judged[record.modality] += 2
    back = _SWAP[pred_swapped] if pred_swapped is not None else None
    consistent = pred is not None and back is not None and pred == back
    outcomes.append(Outcome(record.label, pred, record.modality, record.subset, consistent))
  result = report(outcomes)
  # Strict valid-JSON rate over both orders' judgments, overall and per modality.
  result["overall"]["valid_json_rate"] = (sum(valid_json.values()) / sum(judged.values())
                                          if records else 0.0)
  for modality, summary in result["per_modality"].items():
    summary["valid_json_rate"] = valid_json[modality] / judged[modality]
  result["unscored"] = dict(unscored)
  result["examples"] = [{"id": r.id, "label": r.label, "judgment": t}
                        for r, t in list(zip(records, forward))[:keep_examples]]
  return result
