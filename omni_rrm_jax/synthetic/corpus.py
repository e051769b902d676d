"""The texts a tiny tokenizer is trained on when a run has no tokenizer folder."""

from __future__ import annotations

from typing import Iterable

from omni_rrm_jax.data.records import PreferenceRecord
from omni_rrm_jax.data.templates import judge_instructions
from omni_rrm_jax.synthetic.omni import phrasebook


def corpus(records: Iterable[PreferenceRecord]) -> list[str]:
  """Texts to train a tiny tokenizer on: every prompt, response and rationale,
  the judge's instructions (so that the judge prompt encodes compactly), and
  for each omni task among the records' subsets its `phrasebook` (so values a
  training sample happened to miss, e.g. a capital seen only in the eval set,
  are still in the vocabulary)."""
  out, modalities, subsets = [], set(), set()
  for r in records:
    out.extend([r.prompt, r.response_a, r.response_b])
    modalities.add(r.modality)
    subsets.add(r.subset)
    if r.rationale:
      out.append(r.rationale)
  for modality in sorted(modalities):
    out.extend([judge_instructions(modality)] * 50)
  out.extend(phrasebook(subsets))
  return out
