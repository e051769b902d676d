"""Hostile rows: each costs one skipped-and-counted row, or in strict mode one
error naming its file and line, never the run."""

from __future__ import annotations

import json

import pytest

from omni_rrm_jax.data.bad_records import BadRecordCounter
from omni_rrm_jax.data.readers import DEFAULT_MAX_RECORD_BYTES, read_records


def _row(record_id: str, **extra) -> str:
  return json.dumps({"id": record_id, "prompt": "what is 1 plus 2?", "response_a": "it is 3.",
                     "response_b": "it is 4.", "label": "A", "modality": "text", **extra})


def _with(record_id: str, raw_field: str) -> str:
  """A valid row with one more field, spliced in as raw JSON text."""
  return _row(record_id)[:-1] + ", " + raw_field + "}"


# name -> (the hostile row, the reason it is counted under)
HOSTILE = {
    "long_int": (_with("bad", '"note": ' + "7" * 5000), "number too long"),
    "long_negative_int": (_with("bad", '"n": [1, -' + "9" * 4301 + "]"), "number too long"),
    "deep": (_with("bad", '"x": ' + "[" * 100_000 + "]" * 100_000), "JSON nested too deeply"),
    "deep_object": (_with("bad", '"x": ' + '{"a": ' * 50_000 + "0" + "}" * 50_000),
                    "JSON nested too deeply"),
    "surrogate_prompt": (_row("bad").replace("what is 1", "what is \\ud800"),
                         "lone surrogate in text"),
    "surrogate_response": (_row("bad").replace("it is 4.", "\\udfff it is 4."),
                           "lone surrogate in text"),
    "surrogate_media_path": (json.dumps(
        {"id": "bad", "prompt": "p", "response_a": "a", "response_b": "b", "label": "A",
         "modality": "image", "media": {"images": ["img\ud800.png"]}}, ensure_ascii=True),
        "lone surrogate in text"),
    "too_large": (_row("bad", prompt="x" * 10_000), "record too large"),
}
MAX_BYTES = 8000  # above every row here but "too_large" (the deep ones are read with no limit)


FORMATS = {"jsonl": ("data.jsonl", 2), "json_array": ("data.json", 3),
           "array_record": ("data.array_record", 2)}  # file name, line of the second row


def _write(path, rows: list[str]) -> None:
  if path.suffix == ".array_record":
    from array_record.python import array_record_module
    writer = array_record_module.ArrayRecordWriter(str(path), "group_size:1")
    for row in rows:
      writer.write(row.encode("utf-8"))
    writer.close()
  elif path.suffix == ".json":
    path.write_text("[\n" + ",\n".join(rows) + "\n]\n", encoding="utf-8")
  else:
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def _limit(name: str) -> int:
  return 0 if name.startswith("deep") else MAX_BYTES


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_row_is_skipped_and_counted_with_its_reason(tmp_path, name, fmt):
  row, reason = HOSTILE[name]
  file, line = FORMATS[fmt]
  path = tmp_path / file
  _write(path, [_row("first"), row, _row("last")])
  counter = BadRecordCounter()
  records = list(read_records(path, counter=counter, max_record_bytes=_limit(name)))
  assert [r.id for r in records] == ["first", "last"]  # the rows after it are read too
  assert counter.kept == 2 and dict(counter.skipped) == {reason: 1}
  assert counter.examples[reason][0].startswith(f"{path}:{line}: {reason}")


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_row_in_strict_mode_is_one_error_naming_file_and_line(tmp_path, name, fmt):
  row, reason = HOSTILE[name]
  file, line = FORMATS[fmt]
  path = tmp_path / file
  _write(path, [_row("first"), row])
  with pytest.raises(ValueError) as e:
    list(read_records(path, strict=True, max_record_bytes=_limit(name)))
  message = str(e.value)
  assert "\n" not in message and len(message) < 400
  assert message.startswith(f"{path}:{line}: {reason}")


def test_size_is_checked_before_decoding(tmp_path, monkeypatch):
  """A long line is refused on its byte count: never decoded, never held whole."""
  import omni_rrm_jax.data.readers as readers

  path = tmp_path / "data.jsonl"
  path.write_bytes(_row("first").encode() + b"\n" + b"{" * 50_000 + b"\n"
                   + _row("last").encode() + b"\n")
  decoded = []
  real_decode = readers._decode
  monkeypatch.setattr(readers, "_decode", lambda raw, where: decoded.append(len(raw))
                      or real_decode(raw, where))
  counter = BadRecordCounter()
  records = list(read_records(path, counter=counter, max_record_bytes=10_000))
  assert [r.id for r in records] == ["first", "last"]
  assert dict(counter.skipped) == {"record too large": 1}
  assert counter.examples["record too large"][0] == (
      f"{path}:2: record too large; 50000 bytes > max_record_bytes 10000")
  assert max(decoded) < 10_000


def test_size_limit_is_exact_and_zero_means_none(tmp_path):
  row = _row("r")
  path = tmp_path / "data.jsonl"
  path.write_text(row + "\n", encoding="utf-8")
  size = len(row.encode())
  assert len(list(read_records(path, max_record_bytes=size))) == 1
  assert len(list(read_records(path, max_record_bytes=size - 1))) == 0
  assert len(list(read_records(path, max_record_bytes=0))) == 1
  with pytest.raises(ValueError, match="max_record_bytes"):
    read_records(path, max_record_bytes=-1)


def test_configs_carry_the_documented_default_and_runs_apply_it(tmp_path):
  from omni_rrm_jax.assembly import sources
  from tests.e2e.runs import load_config

  for name in ("rm", "sft", "grpo", "eval"):
    assert load_config(name).data.max_record_bytes == DEFAULT_MAX_RECORD_BYTES == 4 * 2**20
  path = tmp_path / "train.jsonl"
  path.write_text("\n".join([_row("a"), _row("big", prompt="x" * 3000), _row("b")]) + "\n")
  config = load_config("rm", **{"data.train_path": str(path), "data.max_record_bytes": 2000})
  train, _, counters = sources.data_splits(config.data, str(tmp_path / "work"))
  assert [r.id for r in train] == ["a", "b"]
  assert dict(counters["train"].skipped) == {"record too large": 1}
