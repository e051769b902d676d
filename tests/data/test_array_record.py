"""Native records stored in an ArrayRecord file (the large-data format)."""

import json

from omni_rrm_jax.data.bad_records import BadRecordCounter
from omni_rrm_jax.data.readers import read_records
from omni_rrm_jax.data.records import to_json
from omni_rrm_jax.synthetic.mixture import mixed_pairs


def test_array_record_file_reads_like_jsonl(tmp_path):
  from array_record.python import array_record_module
  records = mixed_pairs(30, 7)
  path = tmp_path / "pairs.array_record"
  writer = array_record_module.ArrayRecordWriter(str(path), "group_size:8")
  for i, r in enumerate(records):
    writer.write(to_json(r).encode() if i != 11 else b"{not json")
  writer.write(json.dumps({"id": "x", "prompt": "p"}).encode())  # missing fields
  writer.close()
  counter = BadRecordCounter()
  got = list(read_records(path, counter=counter))
  assert [r.id for r in got] == [r.id for i, r in enumerate(records) if i != 11]
  assert got[0] == records[0]
  assert counter.num_skipped == 2 and counter.skipped["bad JSON"] == 1
  assert any("pairs.array_record:12" in e for ex in counter.examples.values() for e in ex)
