"""The omni generator: seeded, decodable, balanced, filtered, and with learnable rationales."""

from __future__ import annotations

import collections
import json
import math
import os
import re

import numpy as np
import pytest
import soundfile

from omni_rrm_jax.data.media.config import MediaConfig
from omni_rrm_jax.data.media.encode import encode_media
from omni_rrm_jax.data.records import to_json, validate_record
from omni_rrm_jax.synthetic.corpus import corpus
from omni_rrm_jax.data.records import write_jsonl
from omni_rrm_jax.synthetic.omni import (KINDS, TASKS, generate_omni_pairs, is_held_out_text,
                                         is_swap_twin, task_weights, weight_tasks)
from omni_rrm_jax.synthetic.text import CAPITALS
from omni_rrm_jax.synthetic.teachers import TeacherNoise
from omni_rrm_jax.data.templates import judge_instructions
from omni_rrm_jax.rewards.judgment import parse_judgment
from omni_rrm_jax.rewards.rubric import rubric_score

# As the tiny training configs decode media: 56-112 pixel images, 56 x 56 x 4
# frame videos; audio padded to 2 s instead of Qwen2.5-Omni's 300.
MEDIA_CFG = MediaConfig(image_min_pixels=56 * 56, image_max_pixels=112 * 112,
                        video_min_pixels=56 * 56, video_max_pixels=56 * 56, video_max_frames=4,
                        audio_chunk_seconds=2)
NOISY = TeacherNoise(score_sd=1.0, flip_prob=0.1, tie_prob=0.1, inconsistent_prob=0.05)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
  root = tmp_path_factory.mktemp("omni")
  records, stats = generate_omni_pairs(48, 11, str(root), prefix="train", teacher_noise=NOISY)
  return root, records, stats


def _media_bytes(root) -> dict[str, bytes]:
  out = {}
  for folder, _, files in os.walk(root):
    for name in files:
      path = os.path.join(folder, name)
      out[os.path.relpath(path, root)] = open(path, "rb").read()
  return out


def test_same_seed_same_records_and_bytes(pairs, tmp_path):
  root, records, stats = pairs
  again, again_stats = generate_omni_pairs(48, 11, str(tmp_path), prefix="train",
                                           teacher_noise=NOISY)
  assert [to_json(r) for r in again] == [to_json(r) for r in records]
  assert again_stats == stats
  first, second = _media_bytes(root), _media_bytes(tmp_path)
  assert sorted(first) == sorted(second) == sorted(p for r in records for p in r.media_paths())
  suffixes = collections.Counter(os.path.splitext(p)[1] for p in first)
  assert suffixes == {".png": 12, ".mp4": 12, ".wav": 12}
  # PNG and WAV writers are deterministic by construction; MPEG-4 is with one FFmpeg build.
  assert all(first[p] == second[p] for p in first)
  other, _ = generate_omni_pairs(48, 12, str(tmp_path / "other"), teacher_noise=NOISY)
  assert [r.response_a for r in other] != [r.response_a for r in records]


def test_a_kind_does_not_depend_on_the_others(pairs, tmp_path):
  _, records, _ = pairs
  alone, _ = generate_omni_pairs(12, 11, str(tmp_path), kinds=("audio",), teacher_noise=NOISY)
  assert [to_json(r) for r in alone] == [to_json(r) for r in records if r.modality == "audio"]


def test_counts_balance_and_stats_add_up(pairs):
  _, records, stats = pairs
  assert len(records) == stats["kept"] == 48
  assert json.loads(json.dumps(stats)) == stats
  assert [r.modality for r in records[:8]] == list(KINDS) * 2  # interleaved
  assert collections.Counter(r.modality for r in records) == dict.fromkeys(KINDS, 12)
  assert stats["generated"] == stats["kept"] + sum(stats["filtered"].values())
  assert all(stats["filtered"][reason] > 0 for reason in ("tie", "disagreement", "inconsistent"))
  assert sum(k["generated"] for k in stats["by_kind"].values()) == stats["generated"]
  assert all(k["kept"] == 12 for k in stats["by_kind"].values())
  # Every task of every kind is drawn.
  assert {r.subset for r in records} == {name for group in TASKS.values() for name in group}
  assert len({r.id for r in records}) == len(records)


def test_uneven_share_and_no_filtering_without_noise(tmp_path):
  exact = TeacherNoise(score_sd=0.0, flip_prob=0.0, tie_prob=0.0, inconsistent_prob=0.0)
  records, stats = generate_omni_pairs(5, 0, str(tmp_path), kinds=("image", "text"),
                                       teacher_noise=exact)
  assert [r.modality for r in records] == ["image", "text", "image", "text", "image"]
  assert stats["generated"] == stats["kept"] == 5 and stats["kept_against_truth"] == 0
  for r in records:  # noise-free teachers return the true scores
    assert r.scores[r.label] >= 7 and r.scores["B" if r.label == "A" else "A"] <= 4
  assert sorted(os.listdir(tmp_path)) == ["images"]


def test_bad_arguments(tmp_path):
  with pytest.raises(ValueError, match="kinds must be"):
    generate_omni_pairs(4, 0, str(tmp_path), kinds=("text", "smell"))
  with pytest.raises(ValueError, match="kinds must be"):
    generate_omni_pairs(4, 0, str(tmp_path), kinds=("text", "text"))
  with pytest.raises(ValueError, match="too high"):
    generate_omni_pairs(1, 0, str(tmp_path), kinds=("text",),
                        teacher_noise={"tie_prob": 1.0, "flip_prob": 0.0})


def test_records_validate_and_media_decode_to_expected_shapes(pairs, tmp_path):
  root, records, _ = pairs
  path = write_jsonl(records, str(tmp_path / "train.jsonl"))
  assert sum(1 for _ in open(path)) == len(records)
  for r in records:
    assert validate_record(json.loads(to_json(r))) == r
    out = encode_media(r, root, MEDIA_CFG)
    if r.modality == "text":
      assert out == {} and not r.media_paths()
    elif r.modality == "image":
      (t, h, w), = out["image_grid_thw"]
      assert t == 1 and 4 <= h <= 8 and 4 <= w <= 8  # 56-112 pixels, patch 14, as drawn
      assert out["pixel_values"].shape == (h * w, 3 * 2 * 14 * 14)
    elif r.modality == "video":
      assert out["video_grid_thw"].tolist() == [[2, 4, 4]]  # 4 frames, 56 x 56
      assert out["pixel_values_videos"].shape == (32, 1176)
      np.testing.assert_allclose(out["second_per_grid_ts"], [1.0])  # 2 frames at 2 fps
    else:
      assert out["input_features"].shape == (1, 128, 200)
      samples = soundfile.info(str(root / r.media["audio"])).frames
      assert samples <= 2 * 16000
      assert int(out["feature_attention_mask"].sum()) == math.ceil(samples / 160)  # 10 ms hop


def test_rationales_parse_agree_and_stay_short(pairs):
  _, records, _ = pairs
  for r in records:
    result = parse_judgment(r.rationale)
    assert result.ok, (r.id, result.errors)
    j = result.judgment
    assert (j.better, j.score_a, j.score_b) == (r.label, r.scores["A"], r.scores["B"])
    assert j.scores_agree
    # One-word headings keep it short: every token is written at each judgment.
    assert len(j.reasoning) < 300, (len(j.reasoning), j.reasoning)
    headings = [line.split(": ", 1)[0] for line in j.think.splitlines()]
    assert headings == ["1. Fluency", "2. Relevance", "3. Accuracy", "4. Reasoning", "5. Safety"]
    assert rubric_score(j.reasoning) == 1.0  # every dimension addressed, A vs B compared
    # The fact, each response's claim with its verdict, then the letter.
    accuracy = j.think.splitlines()[2].split(": ", 1)[1]
    fact, claim_a, claim_b, decision = accuracy.split("; ")
    assert decision == f"so {r.label} is correct."
    said, verdicts = {}, {}
    for letter, claim in (("A", claim_a), ("B", claim_b)):
      said[letter], verdicts[letter] = re.fullmatch(rf"{letter} says (.+): (right|wrong)",
                                                    claim).groups()
    assert said["A"] != said["B"]
    assert verdicts == {r.label: "right", ("B" if r.label == "A" else "A"): "wrong"}
    # Each claim is the value its response states: the responses differ only in
    # their value, so it occurs once more there than in the other response
    # (operands such as "7 plus 2" occur in both).
    for letter, other in (("A", "B"), ("B", "A")):
      mine, theirs = (r.response_a, r.response_b) if letter == "A" else (r.response_b, r.response_a)
      pattern = re.compile(rf"\b{re.escape(said[letter])}\b", re.I)
      assert len(pattern.findall(mine)) == len(pattern.findall(theirs)) + 1, (mine, theirs)
    # The fact states the chosen response's value.
    assert re.search(rf"\b{re.escape(said[r.label])}\b", fact, re.I), fact


def test_held_out_text_never_repeats_a_training_pair(tmp_path):
  train, _ = generate_omni_pairs(300, 0, str(tmp_path), kinds=("text",), prefix="train")
  held, _ = generate_omni_pairs(300, 1, str(tmp_path), kinds=("text",), prefix="eval")
  triple = lambda r: (r.prompt, r.response_a, r.response_b)  # noqa: E731
  assert not {triple(r) for r in train} & {triple(r) for r in held}
  assert not any(is_held_out_text(*triple(r)) for r in train)
  assert all(is_held_out_text(*triple(r)) for r in held)
  # The same facts are asked in both splits, only never in identical bytes.
  assert {r.prompt for r in train} & {r.prompt for r in held}
  forced, _ = generate_omni_pairs(20, 0, str(tmp_path), kinds=("text",), prefix="x",
                                  held_out=False)
  assert not any(is_held_out_text(*triple(r)) for r in forced)


def test_held_out_media_pairs_take_the_right_answers_in_turns(tmp_path):
  # A model that ignores the media and always prefers one answer must score
  # chance on the held-out pairs (the media-blind control), whatever the draw.
  from omni_rrm_jax.synthetic.omni import tasks_by_kind
  words = {"audio-direction": ("rising", "falling"), "audio-level": ("high", "low"),
           "image-colour": ("red", "green", "blue", "yellow")}
  held, _ = generate_omni_pairs(160, 1, str(tmp_path), kinds=("image", "audio"), prefix="eval",
                                teacher_noise=0.0, tasks=tasks_by_kind(",".join(words)))
  right = collections.Counter()
  for r in held:
    chosen = (r.response_a if r.label == "A" else r.response_b).lower()
    right[r.subset, next(w for w in words[r.subset] if re.search(rf"\b{w}\b", chosen))] += 1
  # 80 image pairs (one task, four colours), 80 audio pairs (two tasks, two answers each).
  assert right == {(task, w): 20 for task, ws in words.items() for w in ws}


def test_corpus_covers_the_templates(pairs):
  _, records, _ = pairs
  some_text = [r for r in records if r.subset == "text-capital"][:1]
  texts = corpus(some_text + [r for r in records if r.modality == "audio"])
  joined = "\n".join(texts)
  assert all(city in joined for city in CAPITALS.values())  # not only the one drawn
  assert judge_instructions("audio") in texts and judge_instructions("text") in texts
  assert "How many tones do you hear?" in joined and "Is the tone high or low?" in joined
  assert "Which way does the shape move?" not in joined  # no video records, no video phrases


def test_the_tiny_configs_kinds_are_omni_tasks(tmp_path):
  from omni_rrm_jax.synthetic.mixture import mixed_pairs
  text = mixed_pairs(4, 0, ("colour", "sum"))
  media = mixed_pairs(2, 0, ("image", "video"), media_root=str(tmp_path))
  assert [r.subset for r in text] == ["text-colour", "text-sum", "text-colour", "text-sum"]
  assert [r.modality for r in media] == ["image", "video"]
  assert [r.subset for r in media] == ["image-square", "video-square"]
  with pytest.raises(ValueError, match="unknown synthetic kinds"):
    mixed_pairs(1, 0, ("smell",))
  assert {t for r in text + media for t in (r.prompt, r.rationale)} <= set(corpus(text + media))


def test_swap_twins_mirror_each_pair_and_leave_the_pairs_unchanged(pairs, tmp_path):
  _, plain, _ = pairs
  both, _ = generate_omni_pairs(48, 11, str(tmp_path), prefix="train", teacher_noise=NOISY,
                                swap_twins=True)
  assert [r for r in both if not is_swap_twin(r)] == plain
  assert len(both) == 96
  for record, twin in zip(both[::2], both[1::2]):
    assert twin.id == record.id + "-swap" and is_swap_twin(twin)
    assert (twin.response_a, twin.response_b) == (record.response_b, record.response_a)
    assert twin.label == {"A": "B", "B": "A"}[record.label]
    assert twin.scores == {"A": record.scores["B"], "B": record.scores["A"]}
    assert (twin.prompt, twin.media, twin.modality) == (record.prompt, record.media,
                                                         record.modality)
    # The rationale is the pair's, told the other way round: its verdict follows the
    # content, so it names the other letter.
    verdict, mirrored = parse_judgment(record.rationale), parse_judgment(twin.rationale)
    assert verdict.ok and mirrored.ok
    assert mirrored.judgment.better == twin.label != verdict.judgment.better == record.label
    assert twin.rationale != record.rationale


def test_task_weights_scale_each_tasks_share_and_keep_twins_adjacent(pairs, tmp_path):
  _, plain, _ = pairs
  both, _ = generate_omni_pairs(48, 11, str(tmp_path), prefix="train", teacher_noise=NOISY,
                                swap_twins=True)
  by_task = collections.Counter(r.subset for r in plain)
  weights = {"audio-direction": 2.0, "text-colour": 0.5}
  out = weight_tasks(both, weights, seed=0)
  # Every unit is a pair followed by its own twin.
  assert all(t.id == r.id + "-swap" for r, t in zip(out[::2], out[1::2]))
  got = collections.Counter(r.subset for r in out[::2])
  assert got == {t: round(weights.get(t, 1.0) * n) for t, n in by_task.items()}
  ids = collections.Counter(r.id for r in out[::2])
  # Above 1 every pair of the task comes back in turn; below 1 its first pairs stay.
  assert {ids[r.id] for r in plain if r.subset == "audio-direction"} == {2}
  colour = [r.id for r in plain if r.subset == "text-colour"]
  assert [i for i in colour if ids[i]] == colour[:got["text-colour"]]
  assert all(ids[r.id] == 1 for r in plain if r.subset not in weights)
  # Seeded: the same order for the same seed, another for another; tasks interleave.
  assert [r.id for r in weight_tasks(both, weights, seed=0)] == [r.id for r in out]
  assert [r.id for r in weight_tasks(both, weights, seed=1)] != [r.id for r in out]
  assert len({r.subset for r in out[:24:2]}) > 2
  # No weights: the same records, twins still adjacent; without twins a unit is one pair.
  assert collections.Counter(r.id for r in weight_tasks(both, {}, 0)) == collections.Counter(
      r.id for r in both)
  assert collections.Counter(r.subset for r in weight_tasks(plain, weights, 0)) == got


def test_task_weights_name_a_bad_entry():
  assert task_weights("") == {}
  assert task_weights(" audio-direction:2, text-colour:0.5 ") == {"audio-direction": 2.0,
                                                                   "text-colour": 0.5}
  for spec, message in (("audio-direction", "write name:weight, e.g. audio-direction:2"),
                        ("audio-direction:0", "must be a positive number"),
                        ("audio-direction:-1", "must be a positive number"),
                        ("audio-direction:nan", "'nan' is not a finite number"),
                        ("audio-direction:two", "'two' is not a finite number"),
                        ("audio-direction:2,audio-direction:3", "lists 'audio-direction' twice"),
                        ("image-color:2", "names 'image-color'")):
    with pytest.raises(ValueError, match=message):
      task_weights(spec)
  # A task the data does not hold (its kind left out, or not among data.tasks).
  with pytest.raises(ValueError, match="names 'audio-level', which is no task"):
    task_weights("audio-level:2", kinds=("text", "image"))
  with pytest.raises(ValueError, match="names 'image-count'"):
    task_weights("image-count:2", tasks={"image": ["image-colour"]})
  assert task_weights("image-colour:3", tasks={"image": ["image-colour"]}) == {"image-colour": 3.0}
  # The message names the setting it came from.
  with pytest.raises(ValueError, match=r"^bad setting: data\.rm_task_weights has text-colour:0;"):
    task_weights("text-colour:0", setting="data.rm_task_weights")
  with pytest.raises(ValueError, match=r"data\.rm_task_weights names 'text-color'"):
    task_weights("text-color:2", setting="data.rm_task_weights")
