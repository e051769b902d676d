"""Seeded omni preference pairs (text, image, video, audio) filtered by two teachers.

`generate_omni_pairs` is the data of the main demo job. For each requested kind
it draws questions from that kind's tasks in turn (`TASKS`; see
`text.py`, `vision.py`, `audio.py`), puts the
correct ("strong model") and the wrong ("weak model") answer in random A/B
order with true scores (correct 7-10, wrong 1-4), lets two noisy teachers
score the pair and keeps it only if they agree (`teachers.py`). A kept pair
carries the reconciled scores and label and a rationale rendered for them
(`question.render_rationale`); its media file is written only then,
under `media_root`, and the record names it relative to that root:

  images/<prefix>-<seed>-image-<j>.png    videos/<prefix>-<seed>-video-<j>.mp4
  audio/<prefix>-<seed>-audio-<j>.wav

Candidates are drawn until each kind has its share of `n` (equal shares, the
first kinds taking the remainder; within a kind its tasks take turns), so a
call returns exactly `n` records, interleaved by kind. Every kind has its own
random streams, seeded by (prefix, seed, kind), so the same arguments give the
same records and the same media bytes (PNG and WAV always; MP4 with the same
FFmpeg build), and adding a kind does not change the others.

Train and held-out text pairs cannot coincide: a text pair's
(prompt, response A, response B) hashes (SHA-256) to one of `HOLDOUT_BUCKETS`
buckets; bucket 0 is held out. A training call (`held_out=False`, the default
for prefix "train") redraws any text pair that falls in it; a held-out call
keeps only those. Held-out pairs still ask the same facts in other words,
orders or wrong answers, so they measure what training could teach. Held-out
image, video and audio pairs take each task's right answers in equal turns, so a
constant preference among the answers scores chance on them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
from typing import Iterable, Mapping, Sequence

from omni_rrm_jax.core.weight_spec import parse_weights
from omni_rrm_jax.data.records import PreferenceRecord, empty_media
from omni_rrm_jax.synthetic.audio import AUDIO_TASKS
from omni_rrm_jax.synthetic.question import Question, Task, render_rationale
from omni_rrm_jax.synthetic.text import TEXT_TASKS
from omni_rrm_jax.synthetic.vision import EASY_TASKS, IMAGE_TASKS, VIDEO_TASKS
from omni_rrm_jax.synthetic.teachers import (ReconcileStats, TeacherNoise, reconcile_records,
                                        simulate_teacher)

KINDS = ("text", "image", "video", "audio")
# The main job's mix: every task of a kind takes its turn.
TASKS: dict[str, dict[str, Task]] = {"text": TEXT_TASKS, "image": IMAGE_TASKS,
                                     "video": VIDEO_TASKS, "audio": AUDIO_TASKS}
# Every task by name, with its kind (the easy colour tasks of the tiny configs too).
TASK_KINDS: dict[str, str] = {
    **{name: kind for kind, group in TASKS.items() for name in group},
    **{name: name.split("-")[0] for name in EASY_TASKS}}
_TASK_BY_NAME: dict[str, Task] = {**{n: t for g in TASKS.values() for n, t in g.items()},
                                  **EASY_TASKS}
MEDIA_FOLDERS = {"image": "images", "video": "videos", "audio": "audio"}
HOLDOUT_BUCKETS = 8
TRUE_GOOD_SCORES = (7, 10)
TRUE_BAD_SCORES = (1, 4)
# A kind that keeps fewer than 1 in this many candidates is an error, not a hang.
MAX_CANDIDATES_PER_RECORD = 20

_MEDIA_KEYS = {"image": "images", "video": "video", "audio": "audio"}


def is_held_out_text(prompt: str, response_a: str, response_b: str) -> bool:
  """Whether a text pair belongs to the held-out bucket (see the module docstring)."""
  digest = hashlib.sha256("\x1f".join((prompt, response_a, response_b)).encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") % HOLDOUT_BUCKETS == 0


def _quotas(n: int, num_kinds: int) -> list[int]:
  return [n // num_kinds + (1 if i < n % num_kinds else 0) for i in range(num_kinds)]


def _candidate(kind: str, task: Task, index: int, rng: random.Random, prefix: str, seed: int,
               held_out: bool) -> tuple[PreferenceRecord, Question, dict[str, str]]:
  """One unscored pair: (record with the true label and scores, its question,
  {"A": value, "B": value})."""
  while True:
    question = task(rng)
    good_first = rng.random() < 0.5
    a, b = (question.good, question.bad) if good_first else (question.bad, question.good)
    if kind != "text" or is_held_out_text(question.prompt, a, b) == held_out:
      break
  better, worse = ("A", "B") if good_first else ("B", "A")
  scores = {better: rng.randint(*TRUE_GOOD_SCORES), worse: rng.randint(*TRUE_BAD_SCORES)}
  values = {better: question.good_value, worse: question.bad_value}
  name = f"{prefix}-{seed}-{kind}-{index}"
  media = empty_media()
  if kind != "text":
    path = f"{MEDIA_FOLDERS[kind]}/{name}{question.suffix}"
    media[_MEDIA_KEYS[kind]] = [path] if kind == "image" else path
  record = PreferenceRecord(id=name, prompt=question.prompt, response_a=a, response_b=b,
                            label=better, modality=kind, media=media,
                            scores={"A": scores["A"], "B": scores["B"]}, subset=question.subset)
  return record, question, values


# A swap twin's id: the pair's id and this suffix.
SWAP_SUFFIX = "-swap"


def swap_twin(record: PreferenceRecord, question: Question,
              values: Mapping[str, str]) -> PreferenceRecord:
  """A kept pair shown the other way round: responses, label and scores swapped,
  the rationale rendered for the new order; the same prompt and media.

  `values`: {"A": value, "B": value} of `record` as generated.
  """
  scores = {"A": record.scores["B"], "B": record.scores["A"]}
  label = {"A": "B", "B": "A"}.get(record.label, record.label)
  return dataclasses.replace(
      record, id=record.id + SWAP_SUFFIX, response_a=record.response_b,
      response_b=record.response_a, label=label, scores=scores,
      rationale=render_rationale(question, {"A": values["B"], "B": values["A"]}, scores))


def is_swap_twin(record: PreferenceRecord) -> bool:
  return record.id.endswith(SWAP_SUFFIX)


def _generate_kind(kind: str, tasks: Sequence[Task], quota: int, seed: int, media_root: str,
                   prefix: str, noise: TeacherNoise, held_out: bool,
                   stats: ReconcileStats, twins: dict[str, PreferenceRecord] | None
                   ) -> list[PreferenceRecord]:
  """`quota` kept pairs of one kind; with `twins`, each pair's swap twin too, by id."""
  rng = random.Random(f"omni/{prefix}/{seed}/{kind}")
  teacher_rng = random.Random(f"omni/{prefix}/{seed}/{kind}/teachers")
  kept: list[PreferenceRecord] = []
  answer_turns: dict[str | None, dict[str, int]] = {}  # task -> right answer -> pairs kept
  limit = MAX_CANDIDATES_PER_RECORD * quota + 100
  index = 0
  while len(kept) < quota:
    if index >= limit:
      raise ValueError(f"{kind}: teachers kept only {len(kept)} of {index} pairs; "
                       f"teacher noise {noise} is too high")
    # The task follows the kept count, so a dropped pair is replaced by the same
    # task and every task gets an equal share of the kind.
    task = tasks[len(kept) % len(tasks)]
    record, question, values = _candidate(kind, task, index, rng, prefix, seed, held_out)
    if held_out and kind != "text":
      # Held-out media pairs take each task's right answers in equal turns, so a
      # model that ignores the media and always prefers one answer (e.g. "rising"
      # over silence) scores chance on the media-blind control, not the split's
      # chance imbalance (22 of 32 rising pairs in one 64-pair draw).
      turns = answer_turns.setdefault(question.subset, {})
      for value in (question.good_value, question.bad_value):
        turns.setdefault(value, 0)
      if turns[question.good_value] > min(turns.values()):
        index += 1
        continue
    verdicts = (simulate_teacher(record.scores, noise, teacher_rng),
                simulate_teacher(record.scores, noise, teacher_rng))
    new, _ = reconcile_records(
        [record], [verdicts], lambda _, scores: render_rationale(question, values, scores), stats)
    if new and question.write is not None:
      question.write(os.path.join(media_root, new[0].media_paths()[0]))
    if new and held_out and kind != "text":
      answer_turns[question.subset][question.good_value] += 1
    kept.extend(new)
    if new and twins is not None:
      twins[new[0].id] = swap_twin(new[0], question, values)
    index += 1
  return kept


def tasks_by_kind(names: str) -> dict[str, list[str]]:
  """"image-colour,audio-level" -> {"image": ["image-colour"], "audio": ["audio-level"]}.

  Raises:
    ValueError: a name that is no task of `TASK_KINDS`.
  """
  out: dict[str, list[str]] = {}
  for name in (n.strip() for n in names.split(",")):
    if not name:
      continue
    if name not in TASK_KINDS:
      raise ValueError(f"bad setting: data.tasks names {name!r}, which is no task; choose from "
                       f"{', '.join(sorted(TASK_KINDS))}")
    out.setdefault(TASK_KINDS[name], []).append(name)
  return out


def task_weights(spec: str, kinds: Sequence[str] = KINDS,
                 tasks: Mapping[str, Sequence[str]] | None = None, *,
                 setting: str = "data.sft_task_weights") -> dict[str, float]:
  """"audio-direction:2,text-colour:0.5" -> {"audio-direction": 2.0, "text-colour": 0.5}.

  `kinds` and `tasks` (as `generate_omni_pairs` takes them) say which tasks the
  data holds; a weight for any other task is a mistake. `setting` names the
  config key in the messages.

  Raises:
    ValueError: a malformed entry (`core/weight_spec.py:parse_weights`), a name
      that is no task of the data, or a weight that is not positive.
  """
  out = parse_weights(spec, setting, example="audio-direction:2")
  for name, weight in out.items():
    if weight <= 0:
      raise ValueError(f"bad setting: {setting} has {name}:{weight:g}; a task's "
                       "weight must be a positive number, e.g. audio-direction:2")
    kind = TASK_KINDS.get(name)
    held = kind in kinds and name in ((tasks or {}).get(kind) or TASKS[kind])
    if not held:
      raise ValueError(f"bad setting: {setting} names {name!r}, which is no task "
                       "of data.kinds / data.tasks")
  return out


def weight_tasks(records: Sequence[PreferenceRecord], weights: Mapping[str, float],
                 seed: int) -> list[PreferenceRecord]:
  """`records` with each task's share scaled by its weight (1 when not named).

  A unit is a record, with its swap twin when the twin follows it (the two stay
  adjacent). A task with n units and weight w keeps round(w * n) of them: its
  first ones when w < 1, all of them repeated in turn when w > 1. The units come
  out in an order seeded by `seed`, the tasks interleaved.
  """
  units: dict[str, list[list[PreferenceRecord]]] = {}
  i = 0
  while i < len(records):
    unit = list(records[i:i + 2]) if (
        i + 1 < len(records) and records[i + 1].id == records[i].id + SWAP_SUFFIX) else [records[i]]
    units.setdefault(records[i].subset or "", []).append(unit)
    i += len(unit)
  out = [group[j % len(group)] for task, group in units.items()
         for j in range(round(weights.get(task, 1.0) * len(group)))]
  random.Random(f"weight_tasks/{seed}").shuffle(out)
  return [r for unit in out for r in unit]


def generate_omni_pairs(
    n: int,
    seed: int,
    media_root: str,
    kinds: Sequence[str] = KINDS,
    prefix: str = "train",
    teacher_noise: TeacherNoise | Mapping[str, float] | float | None = None,
    held_out: bool | None = None,
    tasks: Mapping[str, Sequence[str]] | None = None,
    swap_twins: bool = False,
) -> tuple[list[PreferenceRecord], dict]:
  """`n` teacher-reconciled preference records and their media, the same for the same seed.

  Args:
    n: records to return, split equally between `kinds`.
    seed: with `prefix`, seeds everything: questions, media, A/B order, scores,
      teacher noise.
    media_root: the folder for `images/`, `videos/` and `audio/`; created as
      needed. Records' media paths are relative to it.
    kinds: any of "text", "image", "video", "audio", in the order records
      interleave.
    prefix: record id and file name prefix; train and eval calls must differ.
    teacher_noise: a `TeacherNoise`, a mapping of its fields, a float (the
      chance a teacher misjudges a pair, `TeacherNoise.from_rate`), or None
      for the defaults.
    held_out: draw text pairs from the held-out bucket; None means
      `prefix != "train"`.
    tasks: {kind: task names} for some kinds (names from `TASK_KINDS`, of
      that kind); a kind not named takes turns over all of `TASKS[kind]`.
    swap_twins: follow each record by its swap twin (`swap_twin`, id + "-swap"):
      2n records, of which the n others are those of `swap_twins=False`.

  Returns:
    (records, stats): stats is `ReconcileStats.as_dict()`, JSON-ready:
    {"generated": candidates scored, "kept": n, "filtered": {"inconsistent": .,
    "tie": ., "disagreement": .}, "kept_against_truth": ., "by_kind":
    {kind: {"generated": ., "kept": .}}}.

  Raises:
    ValueError: an unknown or repeated kind, negative `n`, or noise so high
      that a kind keeps fewer than 1 in `MAX_CANDIDATES_PER_RECORD` pairs.
  """
  kinds = list(kinds)
  unknown = [k for k in kinds if k not in TASKS]
  if unknown or not kinds or len(set(kinds)) != len(kinds):
    raise ValueError(f"kinds must be distinct names from {', '.join(KINDS)}; got {kinds}")
  if n < 0:
    raise ValueError(f"n must be >= 0, got {n}")
  chosen = {kind: list(TASKS[kind].values()) for kind in kinds}
  for kind, names in (tasks or {}).items():
    wrong = [n for n in names if TASK_KINDS.get(n) != kind]
    if kind not in chosen or wrong or not names:
      raise ValueError(f"tasks[{kind!r}]={list(names)}: each kind asked for takes task names "
                       f"of that kind from {', '.join(sorted(TASK_KINDS))}")
    chosen[kind] = [_TASK_BY_NAME[n] for n in names]
  noise = TeacherNoise.from_any(teacher_noise)
  held_out = prefix != "train" if held_out is None else held_out
  for kind in kinds:
    if kind in MEDIA_FOLDERS:
      os.makedirs(os.path.join(media_root, MEDIA_FOLDERS[kind]), exist_ok=True)
  stats = ReconcileStats()
  twins: dict[str, PreferenceRecord] | None = {} if swap_twins else None
  per_kind = [_generate_kind(kind, chosen[kind], quota, seed, media_root, prefix, noise,
                            held_out, stats, twins)
              for kind, quota in zip(kinds, _quotas(n, len(kinds)))]
  records = [group[i] for i in range(max(map(len, per_kind), default=0))
             for group in per_kind if i < len(group)]
  if twins is not None:
    records = [r for record in records for r in (record, twins[record.id])]
  return records, stats.as_dict()


def phrasebook(subsets: Iterable[str | None], draws: int = 100) -> list[str]:
  """Prompts, answers and rationales of `draws` questions of each omni task named
  in `subsets` (others are ignored), for tokenizer training; no media is written."""
  tasks = _TASK_BY_NAME
  out = []
  for name in sorted(s for s in set(subsets) if s in tasks):
    rng = random.Random(f"phrasebook/{name}")
    for i in range(draws):
      q = tasks[name](rng)
      first, second = (q.good_value, q.bad_value) if i % 2 else (q.bad_value, q.good_value)
      scores = {"A": 9, "B": 2} if i % 2 else {"A": 2, "B": 9}
      out += [q.prompt, q.good, q.bad, render_rationale(q, {"A": first, "B": second}, scores)]
  return out
