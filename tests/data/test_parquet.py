"""Parquet input: the same records as the JSONL rows it holds, bad files counted."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from omni_rrm_jax.data.bad_records import BadRecordCounter
from omni_rrm_jax.data.readers import read_records

ROWS = [
    {"prompt": f"What is {i} plus {i}?", "chosen": f"{2 * i}.", "rejected": f"{2 * i + 1}.",
     "subset": "math" if i % 2 else "sums", "id": f"r{i}"}
    for i in range(7)
]


def _as_dicts(records):
  return [(r.id, r.prompt, r.response_a, r.response_b, r.label, r.subset) for r in records]


def test_parquet_rows_read_like_their_jsonl(tmp_path):
  pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "bench.parquet", row_group_size=3)
  (tmp_path / "bench.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
  from_parquet = list(read_records(tmp_path / "bench.parquet", "rewardbench", seed=3))
  from_jsonl = list(read_records(tmp_path / "bench.jsonl", "rewardbench", seed=3))
  assert len(from_parquet) == 7 and _as_dicts(from_parquet) == _as_dicts(from_jsonl)
  # "auto" sniffs the format from the columns; a folder picks the file up.
  (tmp_path / "bench.jsonl").unlink()
  assert _as_dicts(read_records(tmp_path, seed=3)) == _as_dicts(from_jsonl)


def test_parquet_row_limits_and_damaged_files_are_counted(tmp_path):
  rows = ROWS[:3] + [dict(ROWS[3], chosen="x" * 5000)]
  pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
  counter = BadRecordCounter()
  kept = list(read_records(tmp_path / "a.parquet", "rewardbench", counter=counter,
                           max_record_bytes=1000))
  assert len(kept) == 3 and dict(counter.skipped) == {"record too large": 1}
  good = (tmp_path / "a.parquet").read_bytes()
  (tmp_path / "b.parquet").write_bytes(good[: len(good) // 2])
  counter = BadRecordCounter()
  assert list(read_records(tmp_path / "b.parquet", "rewardbench", counter=counter)) == []
  assert dict(counter.skipped) == {"unreadable file data": 1}
