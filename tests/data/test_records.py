"""Tests for the preference-record schema, its checks and media-root guard."""

from __future__ import annotations

import json
import os

import pytest

from omni_rrm_jax.data.records import (BadRecord, PreferenceRecord, degeneracies, from_json,
                                       resolve_media_path, to_json, validate_record)


# Marks a field to leave out of the raw record.
_DROP = object()


def _raw(**overrides):
  raw = {
      "id": "ex-1", "prompt": "Describe the picture.", "response_a": "A cat.",
      "response_b": "A dog.", "label": "A", "modality": "image",
      "media": {"images": ["imgs/1.jpg"]}, "scores": {"A": 8, "B": 3},
      "rationale": "The picture shows a cat.", "subset": "vision",
  }
  raw.update(overrides)
  return {k: v for k, v in raw.items() if v is not _DROP}


def test_valid_record_normalises_media_and_round_trips():
  record = validate_record(_raw())
  assert record == PreferenceRecord(
      id="ex-1", prompt="Describe the picture.", response_a="A cat.", response_b="A dog.",
      label="A", modality="image", media={"images": ["imgs/1.jpg"], "video": None, "audio": None},
      scores={"A": 8, "B": 3}, rationale="The picture shows a cat.", subset="vision")
  assert from_json(to_json(record)) == record
  assert json.loads(to_json(record))["media"]["video"] is None
  assert record.media_paths() == ["imgs/1.jpg"]


def test_optional_fields_default():
  record = validate_record(_raw(modality="text", media=_DROP, scores=_DROP, rationale=_DROP,
                                subset=_DROP, label="equal"))
  assert record.media == {"images": [], "video": None, "audio": None}
  assert (record.scores, record.rationale, record.subset) == (None, None, None)
  assert record.label == "equal"


@pytest.mark.parametrize("overrides, message", [
    ({"prompt": _DROP}, "missing field 'prompt'"),
    ({"label": None}, "missing field 'label'"),
    ({"label": "C"}, "label must be one of A, B, equal; got 'C'"),
    ({"label": "a"}, "label must be one of A, B, equal; got 'a'"),
    ({"modality": "smell"}, "modality must be one of text, image, video, audio; got 'smell'"),
    ({"media": {"images": []}}, "modality image requires media.images"),
    ({"modality": "video", "media": {"images": ["a.jpg"]}}, "modality video requires media.video"),
    ({"modality": "audio", "media": None}, "modality audio requires media.audio"),
    ({"modality": "text"}, "modality text must not have media"),
    ({"media": {"image": ["a.jpg"]}}, "unknown media key; got 'image'"),
    ({"media": {"images": "a.jpg"}}, "media.images must be a list of strings"),
    ({"scores": {"A": 11, "B": 3}}, "scores.A must be an integer 0-10; got 11"),
    ({"scores": {"A": 5, "B": True}}, "scores.B must be an integer 0-10; got True"),
    ({"scores": {"A": 5, "B": 2.5}}, "scores.B must be an integer 0-10; got 2.5"),
    ({"response_b": 5}, "response_b must be a string; got int"),
    ({"id": ""}, "empty id"),
    ({"prompt": "  "}, "empty prompt"),
    ({"response_b": " A cat.\n"}, "identical responses"),
])
def test_invalid_records_name_the_problem(overrides, message):
  with pytest.raises(BadRecord) as info:
    validate_record(_raw(**overrides), "f.jsonl:7")
  assert info.value.message == message
  assert str(info.value) == f"f.jsonl:7: {message}"


def test_not_an_object_and_bad_json():
  with pytest.raises(BadRecord, match="row is not a JSON object; got list"):
    validate_record([1, 2])
  with pytest.raises(BadRecord) as info:
    from_json("{oops", "x.jsonl:3")
  assert info.value.reason == "bad JSON" and info.value.where == "x.jsonl:3"


def test_empty_response_is_kept_but_degenerate():
  record = validate_record(_raw(response_a=""))
  assert degeneracies(record) == ["empty response"]
  assert degeneracies(validate_record(_raw())) == []


def test_media_path_resolves_under_root(tmp_path):
  root = tmp_path / "media"
  (root / "imgs").mkdir(parents=True)
  (root / "imgs" / "1.jpg").write_bytes(b"x")
  image = (root / "imgs" / "1.jpg").resolve()
  assert resolve_media_path(root, "imgs/1.jpg", must_exist=True) == image
  # An absolute path is fine as long as it lies inside the root.
  assert resolve_media_path(root, str(image)) == image
  # `..` that comes back inside the root is harmless.
  assert resolve_media_path(root, "imgs/../imgs/1.jpg").name == "1.jpg"
  with pytest.raises(BadRecord, match="media file not found"):
    resolve_media_path(root, "imgs/2.jpg", must_exist=True)


@pytest.mark.parametrize("path", ["../../etc/passwd", "imgs/../../secret.txt", "/etc/passwd"])
def test_media_path_escape_is_rejected(tmp_path, path):
  root = tmp_path / "media"
  root.mkdir()
  with pytest.raises(BadRecord, match="media path escapes media root"):
    resolve_media_path(root, path)


def test_symlink_out_of_root_is_rejected(tmp_path):
  root = tmp_path / "media"
  root.mkdir()
  secret = tmp_path / "secret.txt"
  secret.write_text("no")
  os.symlink(secret, root / "innocent.jpg")
  os.symlink(tmp_path, root / "up")
  for path in ("innocent.jpg", "up/secret.txt"):
    with pytest.raises(BadRecord, match="media path escapes media root"):
      resolve_media_path(root, path, must_exist=True)


@pytest.mark.parametrize("path", ["", "a\x00b"])
def test_invalid_media_path(tmp_path, path):
  with pytest.raises(BadRecord, match="invalid media path"):
    resolve_media_path(tmp_path, path)
