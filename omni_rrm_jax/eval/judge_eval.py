"""Evaluating a generative judge: greedy judgments in both A/B orders.

Each record is judged twice, as given and with the responses swapped; the
swapped verdict is mapped back. The first order's verdict is the prediction
(so a judge that always answers "A" scores about 50% on randomised data), and
position consistency says how often the two orders agree.
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from omni_rrm_jax.data.records import PreferenceRecord
from omni_rrm_jax.data.tokenize import ExampleEncoder
from omni_rrm_jax.eval.metrics import Outcome, report
from omni_rrm_jax.rewards.judgment import parse_judgment
from omni_rrm_jax.sampling.params import SamplingParams
from omni_rrm_jax.sampling.prompts import left_pad
from omni_rrm_jax.sampling.sampler import generate

_SWAP = {"A": "B", "B": "A", "equal": "equal"}


def generate_judgments(model, encoder: ExampleEncoder, records: Sequence[PreferenceRecord], *,
                       swap: bool, max_prompt_length: int, max_new_tokens: int,
                       batch_size: int, eos_ids: Sequence[int], pad_id: int,
                       mesh=None) -> list[str]:
  """Greedy judgments for `records` (in one A/B order), as decoded text."""
  params = SamplingParams(greedy=True, max_new_tokens=max_new_tokens)
  texts: list[str] = []
  for start in range(0, len(records), batch_size):
    chunk = list(records[start:start + batch_size])
    prompts = [encoder.judge_prompt_ids(r, swap, max_prompt_length) for r in chunk]
    # Pad the last chunk to the batch size so every call has the same shape.
    prompts += [prompts[0]] * (batch_size - len(prompts))
    ids_bt, mask_bt = left_pad(prompts, pad_id, multiple=64)
    out = generate(model, ids_bt, mask_bt, params, jax.random.key(0), eos_ids=tuple(eos_ids),
                   pad_id=pad_id, mesh=mesh)
    tokens = np.asarray(out.tokens_bn)
    mask = np.asarray(out.mask_bn).astype(bool)
    for row in range(len(chunk)):
      ids = tokens[row][mask[row]].tolist()
      texts.append(encoder.tokenizer.decode(ids, skip_special_tokens=True))
  return texts


def _verdict(text: str) -> tuple[str | None, bool]:
  """(preference or None, strictly valid JSON) of one judgment text."""
  strict = parse_judgment(text, strict=True)
  lenient = strict if strict.ok else parse_judgment(text, strict=False)
  return (lenient.judgment.better if lenient.ok else None), strict.ok


def evaluate_judge(model, encoder: ExampleEncoder, records: Sequence[PreferenceRecord], *,
                   max_prompt_length: int, max_new_tokens: int, batch_size: int,
                   eos_ids: Sequence[int], pad_id: int, mesh=None,
                   keep_examples: int = 3) -> dict:
  """Accuracy, ties, unparseable outputs, valid-JSON rate and position consistency."""
  kw = dict(max_prompt_length=max_prompt_length, max_new_tokens=max_new_tokens,
            batch_size=batch_size, eos_ids=eos_ids, pad_id=pad_id, mesh=mesh)
  forward = generate_judgments(model, encoder, records, swap=False, **kw)
  swapped = generate_judgments(model, encoder, records, swap=True, **kw)
  outcomes, valid_json = [], 0
  for record, text, text_swapped in zip(records, forward, swapped):
    pred, strict_ok = _verdict(text)
    pred_swapped, strict_ok_swapped = _verdict(text_swapped)
    valid_json += strict_ok + strict_ok_swapped
    back = _SWAP[pred_swapped] if pred_swapped is not None else None
    consistent = pred is not None and back is not None and pred == back
    outcomes.append(Outcome(record.label, pred, record.modality, record.subset, consistent))
  result = report(outcomes)
  result["overall"]["valid_json_rate"] = valid_json / (2 * len(records)) if records else 0.0
  result["examples"] = [{"id": r.id, "label": r.label, "judgment": t}
                        for r, t in list(zip(records, forward))[:keep_examples]]
  return result
