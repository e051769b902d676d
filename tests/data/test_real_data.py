"""Every row of the shared real data sets is either parsed or counted.

The files live outside the repository (see the shared data README); these
tests skip when the folder is absent. OMNI_RRM_SHARED_DATA points elsewhere.
"""

from __future__ import annotations

import collections
import gzip
import json
import os
from pathlib import Path

import pytest

from omni_rrm_jax.data.bad_records import BadRecordCounter
from omni_rrm_jax.data.readers import HH_REALIGNED, read_records


def _shared_data() -> Path:
  default = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
  path = Path(os.environ.get("OMNI_RRM_SHARED_DATA") or default)
  if not path.is_dir():
    pytest.skip(f"shared data folder not found at {path} (set OMNI_RRM_SHARED_DATA to use another)")
  return path


def test_hh_rlhf_harmless_base_every_row_parsed_or_counted():
  path = _shared_data() / "hh-rlhf" / "harmless-base-test.jsonl.gz"
  with gzip.open(path, "rt", encoding="utf-8") as f:
    rows = sum(1 for line in f if line.strip())
  assert rows == 2312
  counter = BadRecordCounter()
  records = list(read_records(path, "auto", counter=counter))
  assert len(records) + counter.num_skipped == rows
  assert counter.num_rows == rows
  # Known degenerate rows: four empty chosen turns (a silent refusal, kept)
  # and five pairs whose transcripts diverge before the last turn.
  assert counter.flagged == {"empty response": 4, HH_REALIGNED: 5}
  assert counter.skipped == {}
  labels = collections.Counter(r.label for r in records)
  assert labels["A"] > 1000 and labels["B"] > 1000
  assert len({r.id for r in records}) == len(records)
  for r in records:
    assert r.prompt.startswith("Human:") and r.prompt.endswith("\n\nAssistant:")
    assert r.subset is None and r.modality == "text"


_LLMBAR = {"Natural": 100, "Adversarial-Neighbor": 134, "Adversarial-GPTInst": 92,
           "Adversarial-GPTOut": 47, "Adversarial-Manual": 46}


@pytest.mark.parametrize("subset, rows", sorted(_LLMBAR.items()))
def test_llmbar_every_row_parsed_or_counted(subset, rows):
  path = _shared_data() / "llmbar" / f"{subset}.json"
  raw = json.loads(path.read_text(encoding="utf-8"))
  assert len(raw) == rows
  counter = BadRecordCounter()
  records = list(read_records(path, "llmbar", counter=counter))
  assert len(records) + counter.num_skipped == rows
  assert {r.subset for r in records} == {subset}
  by_id = {r.id: r for r in records}
  for i, row in enumerate(raw):
    record = by_id.get(f"{subset}/{i}")
    if record is not None:
      assert record.label == {1: "A", 2: "B"}[row["label"]]
      assert record.prompt == row["input"]
      assert (record.response_a, record.response_b) == (row["output_1"], row["output_2"])


def test_llmbar_folder_reads_all_subsets():
  counter = BadRecordCounter()
  records = list(read_records(_shared_data() / "llmbar", counter=counter))
  assert counter.num_rows == sum(_LLMBAR.values())
  # LLMBar has no malformed rows, so every row comes through under its subset.
  assert counter.skipped == {} and counter.flagged == {}
  assert collections.Counter(r.subset for r in records) == _LLMBAR
  # The published order is not "always output_1": a constant judge gets ~50%.
  assert 0.4 < sum(r.label == "A" for r in records) / len(records) < 0.6
