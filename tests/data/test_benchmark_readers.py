"""The benchmark readers on rows in each benchmark's published schema
(tests/data/benchmarks/, rows written for these tests), as JSONL, JSON and Parquet."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from omni_rrm_jax.data.bad_records import BadRecordCounter
from omni_rrm_jax.data.media.audio import load_audio
from omni_rrm_jax.data.media.config import MediaConfig
from omni_rrm_jax.data.media.image import load_image
from omni_rrm_jax.data.media.video import process_video
from omni_rrm_jax.data.readers import read_records, resolve_format, sniff_format

FIXTURES = Path(__file__).parent / "benchmarks"


def _read(path, fmt="auto", **kw):
  counter = BadRecordCounter()
  return list(read_records(path, fmt, counter=counter, **kw)), counter


def _jsonl(name):
  return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines()]


def _chosen(record):
  return record.response_a if record.label == "A" else record.response_b


def _rejected(record):
  return record.response_b if record.label == "A" else record.response_a


@pytest.mark.parametrize("name,fmt", [
    ("rewardbench.jsonl", "rewardbench"), ("rewardbench2.jsonl", "rewardbench2"),
    ("chat_prefs.jsonl", "chat"), ("vl_rewardbench.jsonl", "vl_rewardbench"),
    ("mm_rewardbench_all_data.json", "mm_rewardbench"),
    ("text_to_text_preferences.json", "omni_rewardbench"),
    ("pandalm_testset-v1.json", "pandalm")])
def test_each_published_schema_is_recognised(name, fmt):
  assert resolve_format(FIXTURES / name) == fmt


def test_rewardbench_rows_keep_subset_and_id():
  records, counter = _read(FIXTURES / "rewardbench.jsonl", media_root=FIXTURES)
  rows = _jsonl("rewardbench.jsonl")
  assert counter.kept == 7 and counter.num_skipped == 0
  assert [r.id for r in records] == [str(row["id"]) for row in rows]
  assert [r.subset for r in records] == [row["subset"] for row in rows]
  assert [_chosen(r) for r in records] == [row["chosen"] for row in rows]
  assert {r.label for r in records} == {"A", "B"}  # the seeded coin flip ordered them


def test_rewardbench2_row_becomes_pairs_covering_every_candidate():
  records, counter = _read(FIXTURES / "rewardbench2.jsonl")
  rows = {row["id"]: row for row in _jsonl("rewardbench2.jsonl")}
  # 3 best-of-4 rows x 3 pairs, "ref:7" 1 + 1, "tied:7" 3 + 1.
  assert counter.kept == len(records) == 9 + 2 + 4 and counter.num_skipped == 0
  by_item: dict[str, list] = {}
  for r in records:
    by_item.setdefault(r.group["id"], []).append(r)
  assert set(by_item) == set(rows)
  for item, pairs in by_item.items():
    row = rows[item]
    named = {}
    for r in pairs:
      named[r.group["a"]], named[r.group["b"]] = r.response_a, r.response_b
      assert r.subset == row["subset"] and r.prompt == row["prompt"]
      # The chosen side is always a chosen candidate.
      assert r.group["a" if r.label == "A" else "b"].startswith("chosen/")
    expected = {f"chosen/{i}": t for i, t in enumerate(row["chosen"])}
    expected.update({f"rejected/{j}": t for j, t in enumerate(row["rejected"])})
    assert named == expected
  f1 = by_item["f-1"]
  assert sorted(_rejected(r) for r in f1) == sorted(rows["f-1"]["rejected"])
  assert {_chosen(r) for r in f1} == {"William Shakespeare wrote Hamlet."}


def test_rewardbench2_parquet_reads_like_jsonl(tmp_path):
  rows = _jsonl("rewardbench2.jsonl")
  path = tmp_path / "test-00000-of-00001.parquet"
  pq.write_table(pa.Table.from_pylist(rows), path)
  from_parquet, _ = _read(path, "rewardbench2")
  from_jsonl, _ = _read(FIXTURES / "rewardbench2.jsonl", "rewardbench2")
  assert from_parquet == from_jsonl
  assert resolve_format(path) == "rewardbench2"


def test_rewardbench2_num_correct_mismatch_is_skipped_and_counted(tmp_path):
  row = dict(_jsonl("rewardbench2.jsonl")[0], num_correct=2)
  path = tmp_path / "rb2.jsonl"
  path.write_text(json.dumps(row) + "\n")
  records, counter = _read(path, "rewardbench2")
  assert records == [] and counter.skipped == {
      "num_correct must equal the number of chosen answers": 1}


def test_chat_rows_take_prompt_from_the_conversation():
  records, counter = _read(FIXTURES / "chat_prefs.jsonl")
  assert counter.kept == 2
  assert counter.skipped == {"chosen and rejected conversations differ before the last turn": 1}
  single, multi = records
  assert single.prompt == "Give me a synonym for happy."
  assert (_chosen(single), _rejected(single)) == ("Joyful.", "Sad.")
  assert multi.prompt == ("User: A synonym for small?\n\nAssistant: Tiny.\n\n"
                          "User: And one for big?")
  assert (_chosen(multi), _rejected(multi)) == ("Large.", "Little.")


def test_message_lists_read_under_rewardbench_and_hh_names(tmp_path):
  row = {"prompt": [{"role": "user", "content": "Hi?"}],
         "chosen": [{"role": "assistant", "content": "Hello."}],
         "rejected": [{"role": "assistant", "content": "Go."}]}
  path = tmp_path / "rows.jsonl"
  path.write_text(json.dumps(row) + "\n")
  (record,), _ = _read(path, "rewardbench")
  assert record.prompt == "Hi?" and _chosen(record) == "Hello."
  hh = {"chosen": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Yo."}],
        "rejected": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "No."}]}
  path.write_text(json.dumps(hh) + "\n")
  (record,), _ = _read(path, "hh_rlhf")
  assert (record.prompt, _chosen(record), _rejected(record)) == ("Hi?", "Yo.", "No.")


def test_vl_rewardbench_ranks_paths_and_groups():
  records, counter = _read(FIXTURES / "vl_rewardbench.jsonl", media_root=FIXTURES)
  assert counter.kept == 3
  assert [r.label for r in records] == ["A", "B", "A"]
  assert [r.subset for r in records] == ["hallucination", "reasoning", "general"]
  assert records[0].media["images"] == ["images/red_square.png"]
  assert all(r.modality == "image" for r in records)


def test_vl_rewardbench_parquet_with_embedded_image_bytes(tmp_path):
  rows = _jsonl("vl_rewardbench.jsonl")
  png = (FIXTURES / "images" / "red_square.png").read_bytes()
  for row in rows:
    row["image"] = {"bytes": png, "path": "whatever.png"}
  path = tmp_path / "test.parquet"
  pq.write_table(pa.Table.from_pylist(rows), path)
  records, counter = _read(path, "vl_rewardbench", media_root=tmp_path)
  assert counter.kept == 3
  image = records[0].media["images"][0]
  assert image.startswith("embedded_media/") and image.endswith(".png")
  assert (tmp_path / image).read_bytes() == png
  assert {r.media["images"][0] for r in records} == {image}  # same bytes, one file
  # Without a media root the bytes land next to the data file.
  again, _ = _read(path, "vl_rewardbench")
  assert again == records


def test_mm_rewardbench_better_and_split_categories():
  records, counter = _read(FIXTURES / "mm_rewardbench_all_data.json", media_root=FIXTURES)
  assert counter.kept == 4
  assert [r.label for r in records] == ["B", "A", "A", "A"]
  assert [r.subset for r in records] == ["reasoning/math", "reasoning/coding", "safety/bias",
                                         "correctness"]
  assert records[0].id == "mathvista_3" and records[0].media["images"] == [
      "images/red_square.png"]


OMNI_FILES = ("text_to_text_preferences.json", "text_image_to_text_preferences.json",
              "text_audio_to_text_preferences.json", "text_video_to_text_preferences.json",
              "text_to_image_preferences.json")


def test_omni_rewardbench_ties_criteria_and_media_answers(tmp_path):
  for name in OMNI_FILES:
    (tmp_path / name).write_bytes((FIXTURES / name).read_bytes())
  for folder in ("images", "audio", "video"):
    (tmp_path / folder).mkdir()
    for media in (FIXTURES / folder).iterdir():
      (tmp_path / folder / media.name).write_bytes(media.read_bytes())
  records, counter = _read(tmp_path, "omni_rewardbench", media_root=tmp_path)
  # The text-to-image item is counted, not dropped silently.
  assert counter.kept == 6 and counter.skipped == {"unsupported: answers are media": 1}
  by_task = {}
  for r in records:
    by_task.setdefault(r.subset, []).append(r)
  assert [r.label for r in by_task["text_to_text"]] == ["A", "equal", "B"]
  first = by_task["text_to_text"][0]
  assert first.prompt.startswith("Explain rain to a child.")
  assert "simple words a five-year-old knows" in first.prompt
  (image_record,) = by_task["text_image_to_text"]
  assert image_record.modality == "image"
  assert image_record.media["images"] == ["images/red_square.png"]
  (audio_record,) = by_task["text_audio_to_text"]
  assert (audio_record.modality, audio_record.media["audio"]) == ("audio", "audio/tone_440.wav")
  (video_record,) = by_task["text_video_to_text"]
  assert (video_record.modality, video_record.label) == ("video", "B")
  # The committed media are real files the project's decoders read.
  cfg = MediaConfig()
  assert load_audio(tmp_path / audio_record.media["audio"], cfg).shape == (4000,)
  assert process_video(tmp_path / video_record.media["video"], cfg)["video_grid_thw"][0, 0] >= 1
  assert load_image(tmp_path / image_record.media["images"][0], cfg)[0].size == (28, 28)


def test_omni_rewardbench_missing_media_is_a_counted_skip(tmp_path):
  name = "text_audio_to_text_preferences.json"
  (tmp_path / name).write_bytes((FIXTURES / name).read_bytes())
  records, counter = _read(tmp_path / name, "omni_rewardbench", media_root=tmp_path)
  assert records == [] and counter.skipped == {"media file not found": 1}


def test_pandalm_majority_label_keeps_ties_and_nan_input():
  records, counter = _read(FIXTURES / "pandalm_testset-v1.json")
  assert counter.kept == 4
  # votes (1,1,2) -> first; (0,0,1) -> tie; (2,0,1) no majority -> annotator1: second;
  # (1,0,1) -> first.
  assert [r.label for r in records] == ["A", "equal", "B", "A"]
  assert records[0].prompt == "Fix the spelling in the sentence.\n\nI recieved the pakage."
  assert records[1].prompt == "Suggest a search query about baking bread."  # input NaN
  assert records[2].prompt == "Suggest a search query about tomatoes."  # input null
  assert [r.id for r in records] == ["0", "1", "2", "3"]
  assert records[0].subset == "Grammarly"


def test_pandalm_bad_vote_is_one_counted_skip(tmp_path):
  rows = json.loads((FIXTURES / "pandalm_testset-v1.json").read_text(),
                    parse_constant=lambda c: math.nan)
  rows[0]["annotator2"] = 3
  path = tmp_path / "testset.json"
  path.write_text(json.dumps(rows))
  _, counter = _read(path, "pandalm")
  assert counter.kept == 3 and counter.skipped == {"annotator2 must be 0 (tie), 1 or 2": 1}


def test_sniffing_prefers_the_most_specific_schema():
  assert sniff_format({"prompt": "", "chosen": [], "rejected": [], "num_correct": 1}) == (
      "rewardbench2")
  assert sniff_format({"prompt": "", "chosen": "", "rejected": ""}) == "rewardbench"
  assert sniff_format({"prompt": "", "chosen": [], "rejected": [], "messages": []}) == "chat"
