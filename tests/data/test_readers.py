"""Tests for the format readers and `read_records`, on small hand-written files."""

from __future__ import annotations

import collections
import gzip
import json
import re

import pytest

from omni_rrm_jax.data.bad_records import BadRecordCounter
from omni_rrm_jax.data.readers import (HH_REALIGNED, READERS, chosen_goes_first, read_records,
                                       sniff_format, split_hh_transcripts)


def _write_jsonl(path, rows, *, gz=False):
  text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
  if gz:
    with gzip.open(path, "wt", encoding="utf-8") as f:
      f.write(text)
  else:
    path.write_text(text, encoding="utf-8")
  return path


def _read(path, fmt="auto", **kwargs):
  counter = BadRecordCounter()
  return list(read_records(path, fmt, counter=counter, **kwargs)), counter


# A valid native row.
_GOOD = {"id": "g1", "prompt": "p", "response_a": "x", "response_b": "y", "label": "A",
         "modality": "text"}

_TURNS = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: How do I bake bread?\n\nAssistant:"


def _hh(chosen_reply, rejected_reply, prefix=_TURNS):
  return {"chosen": prefix + chosen_reply, "rejected": prefix + rejected_reply}


def test_registry_lists_the_formats():
  assert READERS.names() == ["chat", "hh_rlhf", "llmbar", "mm_rewardbench", "native",
                             "omni_rewardbench", "pairwise", "pandalm", "rewardbench",
                             "rewardbench2", "vl_rewardbench"]
  with pytest.raises(KeyError, match="unknown record format .csv.; known: chat, hh_rlhf, llmbar"):
    read_records("unused.jsonl", "csv")


def test_hh_transcript_split():
  prompt, chosen, rejected, realigned = split_hh_transcripts(
      _TURNS + " Mix flour, water and yeast.", _TURNS + " I won't help.")
  assert prompt == (
      "Human: Hi there\n\nAssistant: Hello!\n\nHuman: How do I bake bread?\n\nAssistant:")
  assert (chosen, rejected, realigned) == ("Mix flour, water and yeast.", "I won't help.", False)


def test_hh_transcripts_that_diverge_early_split_at_last_shared_assistant_turn():
  # As in a few real rows: a turn marker without its blank line makes one
  # transcript longer than the other.
  shared = "\n\nHuman: Q1\n\nAssistant:"
  chosen = shared + " A1.  Human: Q2\n\nAssistant: A2."
  rejected = shared + " B1."
  prompt, a, b, realigned = split_hh_transcripts(chosen, rejected)
  assert prompt == "Human: Q1\n\nAssistant:"
  assert (a, b, realigned) == ("A1.  Human: Q2\n\nAssistant: A2.", "B1.", True)


def test_hh_rlhf_reader_gzip_counts_degenerate_rows(tmp_path):
  path = _write_jsonl(tmp_path / "harmless.jsonl.gz", [
      _hh(" Mix flour, water and yeast.", " I won't help."),
      _hh(" Same answer.", " Same answer. "),  # identical final turns: skipped
      _hh(" ", " Here is a recipe."),  # empty chosen turn: kept, flagged
      {"chosen": "\n\nHuman: Q1\n\nAssistant: A1.  Human: Q2\n\nAssistant: A2.",
       "rejected": "\n\nHuman: Q1\n\nAssistant: B1."},  # diverging transcripts
      {"chosen": "no turns at all", "rejected": "none here either"},
      {"chosen": "\n\nHuman: Q\n\nAssistant: yes"},
  ], gz=True)
  records, counter = _read(path, "hh_rlhf", chosen_as_a=True)
  assert [r.id for r in records] == ["harmless/0", "harmless/2", "harmless/3"]
  first = records[0]
  assert first.prompt == _TURNS.lstrip()
  assert first.response_a == "Mix flour, water and yeast."
  assert (first.response_b, first.label) == ("I won't help.", "A")
  assert (records[1].response_a, records[1].response_b) == ("", "Here is a recipe.")
  assert records[2].prompt == "Human: Q1\n\nAssistant:"
  assert counter.kept == 3
  assert counter.skipped == {"identical responses": 1, "no Assistant turn in transcript": 1,
                             "missing field 'rejected'": 1}
  assert counter.flagged == {"empty response": 1, HH_REALIGNED: 1}
  assert counter.examples["identical responses"] == [f"{path}:2: identical responses"]
  assert counter.num_rows == 6


def test_chosen_rejected_coin_flip_is_seeded_and_balanced(tmp_path):
  rows = [{"prompt": f"question {i}", "chosen": f"good {i}", "rejected": f"bad {i}", "id": i,
           "subset": "chat"} for i in range(40)]
  path = _write_jsonl(tmp_path / "rb.jsonl", rows)
  records, _ = _read(path)  # auto: rewardbench, not hh_rlhf
  again, _ = _read(path)
  other_seed, _ = _read(path, seed=1)
  labels = [r.label for r in records]
  assert labels == [r.label for r in again]
  assert labels != [r.label for r in other_seed]
  assert set(labels) == {"A", "B"}
  assert 10 <= labels.count("A") <= 30
  for i, r in enumerate(records):
    pair = (r.response_a, r.response_b) if r.label == "A" else (r.response_b, r.response_a)
    assert pair == (f"good {i}", f"bad {i}")
    assert (r.id, r.prompt, r.subset) == (str(i), f"question {i}", "chat")
    assert (r.label == "A") == chosen_goes_first(str(i), 0)
  kept_order, _ = _read(path, chosen_as_a=True)
  assert {r.label for r in kept_order} == {"A"}
  assert all(r.response_a.startswith("good") for r in kept_order)


def test_llmbar_json_array_labels_and_subset(tmp_path):
  rows = [
      {"input": "Say hi.", "output_1": "hi", "output_2": "Hello there, friend!", "label": 1},
      {"input": "Count to 2.", "output_1": "1 2 3", "output_2": "1 2", "label": 2},
      {"input": "x", "output_1": "y", "output_2": "z", "label": 3},
      {"input": "x", "output_1": "y", "output_2": "z", "label": "1"},
  ]
  path = tmp_path / "Adversarial-Neighbor.json"
  path.write_text(json.dumps(rows, indent=2))
  records, counter = _read(path)
  assert [(r.id, r.label, r.response_a, r.response_b, r.subset) for r in records] == [
      ("Adversarial-Neighbor/0", "A", "hi", "Hello there, friend!", "Adversarial-Neighbor"),
      ("Adversarial-Neighbor/1", "B", "1 2 3", "1 2", "Adversarial-Neighbor"),
  ]
  assert counter.skipped == {"llmbar label must be 1 or 2": 2}
  # Each element is located by the line it starts on.
  assert counter.examples["llmbar label must be 1 or 2"] == [
      f"{path}:14: llmbar label must be 1 or 2; got 3",
      f"{path}:20: llmbar label must be 1 or 2; got '1'",
  ]


def test_pairwise_labels_media_and_media_root(tmp_path):
  media = tmp_path / "media"
  media.mkdir()
  (media / "cat.jpg").write_bytes(b"jpg")
  text = {"text_prompt": "Which is right?", "answer_a": "a", "answer_b": "b"}
  image = {"text_prompt": "What animal?", "answer_a": "cat", "answer_b": "dog", "label": 0}
  rows = [
      {**text, "label": 0},
      {**text, "label": 1, "id": "p1"},
      {**image, "image": "cat.jpg"},
      {**image, "image": "../../etc/passwd"},
      {**image, "image": "gone.jpg"},
      {**text, "label": 2},
  ]
  path = _write_jsonl(tmp_path / "pairs.jsonl", rows)
  records, counter = _read(path, "pairwise", media_root=media)
  assert [(r.id, r.label, r.modality) for r in records] == [
      ("pairs/0", "A", "text"), ("p1", "B", "text"), ("pairs/2", "A", "image")]
  assert records[2].media == {"images": ["cat.jpg"], "video": None, "audio": None}
  assert counter.skipped == {"media path escapes media root": 1, "media file not found": 1,
                             "pairwise label must be 0 or 1": 1}
  # Without a media root nothing is resolved, so only the label is wrong.
  _, counter = _read(path, "pairwise")
  assert counter.skipped == {"pairwise label must be 0 or 1": 1}


def test_native_jsonl_with_bad_lines_skips_and_counts(tmp_path):
  path = _write_jsonl(tmp_path / "bad.jsonl", [
      _GOOD,
      '{"id": "broken", "prompt": ',
      {**_GOOD, "id": "g2", "prompt": None},
      {k: v for k, v in _GOOD.items() if k != "response_b"},
      {**_GOOD, "id": "g3", "label": "C"},
      {**_GOOD, "id": "g4", "response_b": "x"},
      {**_GOOD, "id": "g5", "response_a": ["x"]},
      "",
      "[1, 2]",
      {**_GOOD, "id": "g6", "label": "B"},
      {**_GOOD, "id": "g7", "response_a": "   "},
  ])
  records, counter = _read(path)
  assert [r.id for r in records] == ["g1", "g6", "g7"]
  assert counter.kept == 3
  assert counter.skipped == {
      "bad JSON": 1, "missing field 'prompt'": 1, "missing field 'response_b'": 1,
      "label must be one of A, B, equal": 1, "identical responses": 1,
      "response_a must be a string": 1, "row is not a JSON object": 1,
  }
  assert counter.flagged == {"empty response": 1}
  assert counter.num_rows == 10  # the blank line is not a row
  assert counter.examples["bad JSON"][0].startswith(f"{path}:2: bad JSON; ")
  assert counter.examples["label must be one of A, B, equal"] == [
      f"{path}:5: label must be one of A, B, equal; got 'C'"]
  assert counter.examples["row is not a JSON object"] == [
      f"{path}:9: row is not a JSON object; got list"]
  assert counter.summary() == (
      "3 kept, 7 skipped (bad JSON: 1; identical responses: 1; "
      "label must be one of A, B, equal: 1; missing field 'prompt': 1; "
      "missing field 'response_b': 1; response_a must be a string: 1; "
      "row is not a JSON object: 1), 1 kept but flagged (empty response: 1)")


def test_strict_mode_raises_on_first_bad_row_naming_file_and_line(tmp_path):
  path = _write_jsonl(tmp_path / "bad.jsonl", [_GOOD, {**_GOOD, "label": "C"}, "{oops"])
  records = read_records(path, "native", strict=True)
  assert next(records).id == "g1"
  expected = f"{path}:2: label must be one of A, B, equal; got 'C'"
  with pytest.raises(ValueError, match="^" + re.escape(expected)):
    next(records)


def test_empty_responses_do_not_raise_in_strict_mode(tmp_path):
  path = _write_jsonl(tmp_path / "hh.jsonl", [_hh("", " answer")])
  counter = BadRecordCounter()
  assert len(list(read_records(path, "hh_rlhf", counter=counter, strict=True))) == 1
  assert counter.flagged == {"empty response": 1}


def test_truncated_files_are_counted_not_fatal(tmp_path):
  rows = [{"input": f"q{i}", "output_1": "a", "output_2": "b", "label": 1} for i in range(3)]
  path = tmp_path / "cut.json"
  path.write_text(json.dumps(rows)[:-30])
  records, counter = _read(path, "llmbar")
  assert len(records) == 2 and counter.skipped == {"bad JSON": 1}

  rows = [_hh(f" yes {i}", " no") for i in range(50)]
  gz_path = _write_jsonl(tmp_path / "cut.jsonl.gz", rows, gz=True)
  data = gz_path.read_bytes()
  gz_path.write_bytes(data[: len(data) // 2])
  records, counter = _read(gz_path, "hh_rlhf")
  assert counter.skipped == {"unreadable file data": 1}
  assert 0 <= counter.kept < 50


def test_invalid_utf8_line_is_skipped(tmp_path):
  path = tmp_path / "hh.jsonl"
  path.write_bytes(json.dumps(_hh(" a", " b")).encode() + b"\n" + b'{"chosen": "\xff\xfe"}\n')
  records, counter = _read(path, "hh_rlhf")
  assert len(records) == 1 and counter.skipped == {"invalid UTF-8": 1}


def test_auto_sniffs_each_format():
  assert sniff_format({"chosen": "", "rejected": ""}) == "hh_rlhf"
  assert sniff_format({"prompt": "", "chosen": "", "rejected": "", "subset": ""}) == "rewardbench"
  assert sniff_format({"input": "", "output_1": "", "output_2": "", "label": 1}) == "llmbar"
  assert sniff_format({"text_prompt": "", "answer_a": "", "answer_b": "", "label": 0}) == "pairwise"
  assert sniff_format(_GOOD) == "native"
  assert sniff_format({"question": ""}) is None


def test_auto_skips_leading_bad_rows_and_rejects_unknown_formats(tmp_path):
  path = _write_jsonl(tmp_path / "hh.jsonl", ["{bad", _hh(" a", " b")])
  records, counter = _read(path)
  assert len(records) == 1 and counter.skipped == {"bad JSON": 1}
  unknown = _write_jsonl(tmp_path / "unknown.jsonl", [{"question": "q", "answer": "a"}])
  expected = "cannot tell the record format from the fields ['answer', 'question']"
  with pytest.raises(ValueError, match=re.escape(expected)):
    _read(unknown)


def test_folder_and_limit(tmp_path):
  for name in ("Natural", "Adversarial-Manual"):
    rows = [{"input": f"{name} {i}", "output_1": "a", "output_2": "b", "label": 1 + i % 2}
            for i in range(3)]
    (tmp_path / f"{name}.json").write_text(json.dumps(rows))
  (tmp_path / "README.md").write_text("not data")
  records, counter = _read(tmp_path)
  assert collections.Counter(r.subset for r in records) == {"Natural": 3, "Adversarial-Manual": 3}
  assert [r.subset for r in records][:1] == ["Adversarial-Manual"]  # files in name order
  assert counter.kept == 6
  limited, counter = _read(tmp_path, limit=4)
  assert len(limited) == 4 and counter.kept == 4
  assert _read(tmp_path, limit=0)[0] == []


def test_missing_path_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="no such data file"):
    read_records(tmp_path / "nope.jsonl")  # at the call, not at the first record
  with pytest.raises(FileNotFoundError, match="no .jsonl/.json/.jsonl.gz/.json.gz/.array_record/.parquet files in"):
    read_records(tmp_path)
