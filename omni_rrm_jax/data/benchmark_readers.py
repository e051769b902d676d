"""Readers for the reward-model benchmarks in the form their authors publish them.

Each converter takes one row as published (the Hugging Face parquet or JSON
files, read by `readers.read_records`) and gives native records; the
benchmark's own score is rebuilt from those records by
`omni_rrm_jax.eval.benchmarks`. Formats, by name:

  rewardbench2      RewardBench 2: `prompt`, `chosen` and `rejected` lists
                    (one chosen and three rejected, or several chosen in the
                    Ties subset), `subset`, `id`. A row becomes pairs (every
                    chosen against the first rejected, and the first chosen
                    against every other rejected), so every candidate is
                    scored once; `group` names the candidates, so the
                    best-of-4 result (and the Ties score) is computed per item.
  vl_rewardbench    VL-RewardBench: `query`, `response` (two answers), `image`
                    (a path, or the parquet image struct with its bytes),
                    `human_ranking` (rank per answer, 0 best; equal ranks are
                    a tie), `id`, `query_source`. The subset is the
                    benchmark's group: general, hallucination or reasoning.
  mm_rewardbench    Multimodal RewardBench: `ID`, `Text`, `Image` (a path
                    under the data folder), `Output1`, `Output2`, `Better`
                    ("Output1" | "Output2"), `Category`; safety and reasoning
                    are split by ID as the benchmark reports them
                    (safety/bias, safety/toxicity, reasoning/math,
                    reasoning/coding).
  omni_rewardbench  Omni-RewardBench: `prompt`, `response1`, `response2`,
                    `criteria`, `criteria_preference` ("response1" |
                    "response2" | "tie"), optional `image` / `video` / `audio`
                    paths; the subset is the task (the file's name without
                    "_preferences", or a `task` field). The criteria are
                    appended to the prompt, so the judge and the RM see them.
                    Items whose answers are themselves media (text-to-image,
                    -video, -audio, -3D, image editing) are skipped and
                    counted as "unsupported: answers are media".
  pandalm           PandaLM's test set: `instruction`, `input`, `response1`,
                    `response2`, `annotator1..3` (0 tie, 1 the first, 2 the
                    second); the label is the annotators' majority (with no
                    majority, the first annotator's vote, as PandaLM's own
                    metric script counts it), and a tie stays a tie.

Media bytes inside a row are written once under the media root
(`RowContext.embedded_media`).
"""

from __future__ import annotations

import collections
import math
import re
from typing import Any, Mapping

from omni_rrm_jax.data.chat_rows import prompt_text
from omni_rrm_jax.data.readers import RowContext, chosen_goes_first, register_format
from omni_rrm_jax.data.records import BadRecord


def _text(row: Mapping[str, Any], key: str) -> str:
  value = row.get(key)
  if value is None:
    raise BadRecord(f"missing field {key!r}")
  if not isinstance(value, str):
    raise BadRecord(f"{key} must be a string", f"got {type(value).__name__}")
  return value


def _strings(row: Mapping[str, Any], key: str, *, count: int | None = None) -> list[str]:
  value = row.get(key)
  if value is None:
    raise BadRecord(f"missing field {key!r}")
  if not isinstance(value, (list, tuple)) or not value or not all(
      isinstance(v, str) for v in value):
    raise BadRecord(f"{key} must be a non-empty list of strings")
  if count is not None and len(value) != count:
    raise BadRecord(f"{key} must hold {count} strings", f"got {len(value)}")
  return list(value)


# ---------------------------------------------------------------------------
# RewardBench 2.


def candidate_pairs(num_chosen: int, num_rejected: int) -> list[tuple[int, int]]:
  """(chosen index, rejected index) pairs that score every candidate once or more:
  each chosen against rejected 0, then chosen 0 against each other rejected."""
  return [(i, 0) for i in range(num_chosen)] + [(0, j) for j in range(1, num_rejected)]


@register_format("rewardbench2", "prompt", "chosen", "rejected", "num_correct")
def _rewardbench2(row: Mapping[str, Any], ctx: RowContext) -> list[dict[str, Any]]:
  item = ctx.record_id(row)
  prompt = prompt_text(row.get("prompt"), "prompt")
  chosen, rejected = _strings(row, "chosen"), _strings(row, "rejected")
  num_correct = row.get("num_correct")
  if num_correct is not None and num_correct != len(chosen):
    raise BadRecord("num_correct must equal the number of chosen answers",
                    f"{num_correct} != {len(chosen)}")
  subset = row.get("subset") if isinstance(row.get("subset"), str) and row.get("subset") else None
  pairs = []
  for i, j in candidate_pairs(len(chosen), len(rejected)):
    pair_id = f"{item}/c{i}-r{j}"
    first = ctx.chosen_as_a or chosen_goes_first(pair_id, ctx.seed)
    names = (f"chosen/{i}", f"rejected/{j}")
    texts = (chosen[i], rejected[j])
    a, b = (0, 1) if first else (1, 0)
    pairs.append({
        "id": pair_id, "prompt": prompt, "response_a": texts[a], "response_b": texts[b],
        "label": "A" if first else "B", "modality": "text", "subset": subset,
        "group": {"id": item, "a": names[a], "b": names[b]},
    })
  return pairs


# ---------------------------------------------------------------------------
# VL-RewardBench.

# The benchmark's three groups, by the source of the query (`query_source`,
# or the id's prefix when it is absent).
VL_REWARDBENCH_GROUPS = {"povid": "hallucination", "rlaif": "hallucination",
                         "rlhf": "hallucination", "mathverse": "reasoning",
                         "mmmu": "reasoning", "wildvision": "general",
                         "vlfeedback": "general"}

_MAGIC = ((b"\x89PNG", ".png"), (b"\xff\xd8", ".jpg"), (b"GIF8", ".gif"), (b"RIFF", ".webp"),
          (b"BM", ".bmp"))


def image_path(value: Any, ctx: RowContext, key: str = "image") -> str:
  """A record's image path from a path string, bytes, or the Hugging Face
  image struct `{"bytes": ..., "path": ...}` (bytes win when present)."""
  if isinstance(value, Mapping):
    data, path = value.get("bytes"), value.get("path")
  elif isinstance(value, (bytes, bytearray)):
    data, path = value, None
  else:
    data, path = None, value
  if data:
    suffix = next((s for magic, s in _MAGIC if bytes(data[:4]).startswith(magic)), None)
    if suffix is None:
      raise BadRecord(f"{key} bytes are not a known image format")
    return ctx.embedded_media(bytes(data), suffix)
  if isinstance(path, str) and path:
    return path
  raise BadRecord(f"missing field {key!r}", "no bytes and no path")


def vl_rewardbench_group(row: Mapping[str, Any], record_id: str) -> str:
  source = row.get("query_source")
  keys = [source.lower()] if isinstance(source, str) and source else []
  keys.append(re.split(r"[-_]", record_id, maxsplit=1)[0].lower())
  for key in keys:
    for prefix, group in VL_REWARDBENCH_GROUPS.items():
      if key.startswith(prefix):
        return group
  raise BadRecord("unknown VL-RewardBench source", f"query_source {source!r}, id {record_id!r}")


def _rank_label(ranking: Any) -> str:
  if (not isinstance(ranking, (list, tuple)) or len(ranking) != 2 or
      not all(isinstance(r, int) and not isinstance(r, bool) for r in ranking)):
    raise BadRecord("human_ranking must be two integer ranks", f"got {ranking!r}")
  return "A" if ranking[0] < ranking[1] else "B" if ranking[0] > ranking[1] else "equal"


@register_format("vl_rewardbench", "query", "response", "human_ranking")
def _vl_rewardbench(row: Mapping[str, Any], ctx: RowContext) -> dict[str, Any]:
  record_id = ctx.record_id(row)
  response_a, response_b = _strings(row, "response", count=2)
  return {
      "id": record_id, "prompt": _text(row, "query"), "response_a": response_a,
      "response_b": response_b, "label": _rank_label(row.get("human_ranking")),
      "modality": "image", "media": {"images": [image_path(row.get("image"), ctx)]},
      "subset": vl_rewardbench_group(row, record_id),
  }


# ---------------------------------------------------------------------------
# Multimodal RewardBench.


def mm_rewardbench_category(category: str, record_id: str) -> str:
  """The category the benchmark reports: safety and reasoning split by the ID."""
  category = category.lower()
  if category == "safety":
    return "safety/bias" if record_id.lower().startswith("pairs") else "safety/toxicity"
  if category == "reasoning":
    return "reasoning/math" if record_id.lower().startswith("math") else "reasoning/coding"
  return category


@register_format("mm_rewardbench", "Text", "Output1", "Output2", "Better")
def _mm_rewardbench(row: Mapping[str, Any], ctx: RowContext) -> dict[str, Any]:
  record_id = str(row["ID"]) if isinstance(row.get("ID"), (str, int)) else ctx.record_id(row)
  better = row.get("Better")
  if better not in ("Output1", "Output2"):
    raise BadRecord("Better must be Output1 or Output2", f"got {better!r}")
  category = row.get("Category")
  return {
      "id": record_id, "prompt": _text(row, "Text"), "response_a": _text(row, "Output1"),
      "response_b": _text(row, "Output2"), "label": "A" if better == "Output1" else "B",
      "modality": "image", "media": {"images": [image_path(row.get("Image"), ctx, "Image")]},
      "subset": (mm_rewardbench_category(category, record_id)
                 if isinstance(category, str) and category else None),
  }


# ---------------------------------------------------------------------------
# Omni-RewardBench.

# Tasks whose answers are images, videos, audio or 3D renders: a reward model
# that reads text answers cannot rank them.
OMNI_MEDIA_ANSWER_TASKS = frozenset({"text_to_image", "text_to_video", "text_to_audio",
                                     "text_image_to_image", "text_to_3D"})
_MEDIA_SUFFIX = re.compile(r"\.(png|jpe?g|gif|webp|bmp|mp4|webm|avi|mov|mkv|wav|mp3|flac|"
                           r"ogg|m4a|glb|obj|ply)$", re.IGNORECASE)
OMNI_PREFERENCES = {"response1": "A", "response2": "B", "tie": "equal"}


def omni_task(row: Mapping[str, Any], ctx: RowContext) -> str:
  task = row.get("task")
  if isinstance(task, str) and task:
    return task
  return ctx.stem.removesuffix("_preferences")


def criteria_prompt(prompt: str, criteria: str) -> str:
  """The prompt with the item's evaluation criteria, as every scorer sees it."""
  return f"{prompt}\n\nEvaluation criteria: {criteria}" if criteria.strip() else prompt


@register_format("omni_rewardbench", "prompt", "response1", "response2", "criteria")
def _omni_rewardbench(row: Mapping[str, Any], ctx: RowContext) -> dict[str, Any]:
  task = omni_task(row, ctx)
  response_a, response_b = _text(row, "response1"), _text(row, "response2")
  if task in OMNI_MEDIA_ANSWER_TASKS or (_MEDIA_SUFFIX.search(response_a.strip()) and
                                         _MEDIA_SUFFIX.search(response_b.strip())):
    raise BadRecord("unsupported: answers are media", task)
  preference = row.get("criteria_preference")
  if preference not in OMNI_PREFERENCES:
    raise BadRecord("criteria_preference must be response1, response2 or tie",
                    f"got {preference!r}")
  media = {"images": [row["image"]] if isinstance(row.get("image"), str) else [],
           "video": row.get("video"), "audio": row.get("audio")}
  modality = ("video" if media["video"] else "audio" if media["audio"] else
              "image" if media["images"] else "text")
  return {
      "id": ctx.record_id(row), "prompt": criteria_prompt(_text(row, "prompt"),
                                                         _text(row, "criteria")),
      "response_a": response_a, "response_b": response_b,
      "label": OMNI_PREFERENCES[preference], "modality": modality, "media": media,
      "subset": task,
  }


# ---------------------------------------------------------------------------
# PandaLM.

PANDALM_LABELS = {0: "equal", 1: "A", 2: "B"}


def majority_vote(votes: list[int]) -> int:
  """The most common vote; with no majority, the first vote (Counter keeps
  first-seen order among equal counts)."""
  return collections.Counter(votes).most_common(1)[0][0]


@register_format("pandalm", "instruction", "response1", "response2", "annotator1")
def _pandalm(row: Mapping[str, Any], ctx: RowContext) -> dict[str, Any]:
  votes = []
  for key in ("annotator1", "annotator2", "annotator3"):
    vote = row.get(key)
    if isinstance(vote, bool) or vote not in PANDALM_LABELS:
      raise BadRecord(f"{key} must be 0 (tie), 1 or 2", f"got {vote!r}")
    votes.append(vote)
  extra = row.get("input")
  if isinstance(extra, float) and math.isnan(extra):
    extra = None  # the published file writes a missing input as NaN
  if extra is not None and not isinstance(extra, str):
    raise BadRecord("input must be a string, null or NaN", f"got {type(extra).__name__}")
  has_input = bool(extra and extra.strip())
  instruction = _text(row, "instruction")
  record_id = str(row["idx"]) if isinstance(row.get("idx"), int) else ctx.record_id(row)
  app = row.get("motivation_app")
  return {
      "id": record_id, "prompt": f"{instruction}\n\n{extra}" if has_input else instruction,
      "response_a": _text(row, "response1"), "response_b": _text(row, "response2"),
      "label": PANDALM_LABELS[majority_vote(votes)], "modality": "text",
      "subset": app if isinstance(app, str) and app else None,
  }
