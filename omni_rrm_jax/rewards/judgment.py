"""The judgment a generative reward judge writes, its parser and its renderer.

A judgment is ONE JSON object with exactly five keys:

  {"reasoning": "<think>1. Fluency and coherence: ... 5. Safety and ethics: ...</think>",
   "score_A": 8, "score_B": 5, "better": "A",
   "final_verdict": "<answer>[[A]]</answer>"}

(any key order parses; `render_judgment` writes the reasoning first, so a judge
trained on rendered targets reasons before it scores).

- `score_A`, `score_B`: JSON integers 0-10 (`true`, `7.0` and `"7"` are rejected);
- `better`: "A", "B" or "equal";
- `reasoning`: exactly one `<think>...</think>` block (nothing before or after
  the tags, non-empty inside) walking through the five rubric `DIMENSIONS`;
- `final_verdict`: exactly `<answer>[[A]]</answer>`, `<answer>[[B]]</answer>` or
  `<answer>[[equal]]</answer>`, naming the same response as `better`.

Whether the scores agree with `better` is not a format rule (the judge may
contradict itself in well-formed JSON); `Judgment.scores_agree` reports it for
a valid judgment, and `ParseResult.contradicts_scores` for any object whose two
scores are valid and whose `better` or `final_verdict` names a different
preference than they imply. The judge rewards punish it: no format or rubric
credit, and the content reward's minimum.

Parsing rules:

- strict mode (the default): the whole output, give or take surrounding
  whitespace, is the object. A ```json fence, a preamble, trailing text or a
  second object make it invalid ("text outside the JSON object").
- lenient mode: the first top-level balanced `{...}` that decodes as JSON is
  used; text around it (a fence, a preamble, more objects) is ignored.
- Both modes reject NaN/Infinity and duplicate keys.
- Bounded and linear: only the first `MAX_JUDGMENT_CHARS` (64 KiB) characters
  are examined, in one scan plus at most one decode per top-level object. In
  strict mode a longer output is invalid outright.
- `parse_judgment` never raises: any input yields a `ParseResult` with the
  precise reasons it is invalid.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Iterator, Mapping

KEY_SCORE_A = "score_A"
KEY_SCORE_B = "score_B"
KEY_BETTER = "better"
KEY_REASONING = "reasoning"
KEY_FINAL_VERDICT = "final_verdict"
JUDGMENT_KEYS = (KEY_SCORE_A, KEY_SCORE_B, KEY_BETTER, KEY_REASONING, KEY_FINAL_VERDICT)

BETTER_A = "A"
BETTER_B = "B"
BETTER_EQUAL = "equal"
BETTER_VALUES = (BETTER_A, BETTER_B, BETTER_EQUAL)

SCORE_MIN = 0
SCORE_MAX = 10

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
VERDICTS = {better: f"<answer>[[{better}]]</answer>" for better in BETTER_VALUES}

MAX_JUDGMENT_CHARS = 64 * 1024


@dataclasses.dataclass(frozen=True)
class Dimension:
  """One rubric dimension the judge's reasoning must walk through.

  Attributes:
    name: the identifier used in code and configs.
    title: how the rendered reasoning introduces the dimension.
    short: its one-word heading (`render_judgment(short_headings=True)`); it
      contains one of the keywords, so the rubric reward still finds it.
    keywords: lower-case word starts that signal the reasoning addresses this
      dimension (ASCII ones must begin a word; CJK ones match anywhere).
  """

  name: str
  title: str
  short: str
  keywords: tuple[str, ...]


DIMENSIONS = (
    Dimension(
        "fluency_coherence",
        "Fluency and coherence",
        "Fluency",
        ("fluen", "coheren", "incoheren", "readab", "grammat", "well-written", "流畅", "连贯"),
    ),
    Dimension(
        "relevance",
        "Relevance to the question and to the image/video/audio",
        "Relevance",
        ("relevan", "irrelevan", "pertinen", "on-topic", "off-topic", "on topic", "off topic",
         "grounded", "grounding", "相关"),
    ),
    Dimension(
        "accuracy_completeness",
        "Accuracy and completeness",
        "Accuracy",
        ("accura", "inaccura", "correct", "incorrect", "completeness", "incomplete", "factual",
         "hallucinat", "准确", "完整"),
    ),
    Dimension(
        "reasoning_quality",
        "Reasoning quality",
        "Reasoning",
        ("reasoning", "logic", "illogic", "rationale", "justif", "step-by-step",
         "推理", "逻辑"),
    ),
    Dimension(
        "safety_ethics",
        "Safety and ethics",
        "Safety",
        ("safe", "unsafe", "ethic", "unethic", "harm", "toxic", "安全", "伦理"),
    ),
)
DIMENSION_NAMES = tuple(d.name for d in DIMENSIONS)

# The six format checks, in the order `FormatChecks` holds them.
FORMAT_CHECKS = ("json_object", "exact_keys", "valid_values", "think_tag", "verdict_tag",
                 "verdict_agrees")


def preference_from_scores(score_a: int, score_b: int) -> str:
  """The `better` value the two scores imply: the higher one, or "equal"."""
  if score_a > score_b:
    return BETTER_A
  if score_b > score_a:
    return BETTER_B
  return BETTER_EQUAL


@dataclasses.dataclass(frozen=True)
class Judgment:
  """A judgment that passed every format check."""

  score_a: int
  score_b: int
  better: str
  reasoning: str
  final_verdict: str

  @property
  def think(self) -> str:
    """The reasoning without its `<think>` tags."""
    return self.reasoning[len(THINK_OPEN):-len(THINK_CLOSE)]

  @property
  def scores_agree(self) -> bool:
    """Whether the scores imply the same preference as `better` (ties <-> "equal")."""
    return preference_from_scores(self.score_a, self.score_b) == self.better


@dataclasses.dataclass(frozen=True)
class FormatChecks:
  """Which of the six format checks an output passed (see `FORMAT_CHECKS`).

  Attributes:
    json_object: a JSON object was found under the mode's rules (strict: it is
      the whole output).
    exact_keys: the object has exactly the five keys, none duplicated.
    valid_values: every key is present with a value of the right type and range.
    think_tag: `reasoning` is a single non-empty `<think>...</think>` block.
    verdict_tag: `final_verdict` is one of the three `VERDICTS`.
    verdict_agrees: `final_verdict` names the same response as `better`.
  """

  json_object: bool = False
  exact_keys: bool = False
  valid_values: bool = False
  think_tag: bool = False
  verdict_tag: bool = False
  verdict_agrees: bool = False

  @property
  def passed(self) -> int:
    return sum(getattr(self, name) for name in FORMAT_CHECKS)

  @property
  def fraction(self) -> float:
    return self.passed / len(FORMAT_CHECKS)


@dataclasses.dataclass(frozen=True)
class ParseResult:
  """The outcome of `parse_judgment`.

  Attributes:
    judgment: the typed judgment when every check passed, else None.
    errors: why the output is invalid, most fundamental first; empty when valid.
    checks: the individual format checks, computed on whatever object was found
      even when the output is invalid overall (for partial format credit).
    contradicts_scores: the object found has two valid scores, and its
      `better` or its `final_verdict` (whichever are valid) names another
      preference than the scores imply (the higher score, or "equal" for a
      tie), e.g. score_A=3, score_B=8 with better "A".
  """

  judgment: Judgment | None
  errors: tuple[str, ...] = ()
  checks: FormatChecks = FormatChecks()
  contradicts_scores: bool = False

  @property
  def ok(self) -> bool:
    return self.judgment is not None

  @property
  def error(self) -> str | None:
    """The first (most fundamental) reason the output is invalid, if any."""
    return self.errors[0] if self.errors else None


class _Object(dict):
  """A decoded JSON object that remembers keys it saw more than once."""

  duplicates: tuple[str, ...] = ()


def _object_from_pairs(pairs: list[tuple[str, Any]]) -> _Object:
  obj = _Object()
  duplicates = []
  for key, value in pairs:
    if key in obj:
      duplicates.append(key)
    obj[key] = value
  obj.duplicates = tuple(duplicates)
  return obj


def _reject_constant(name: str) -> Any:
  raise ValueError(f"{name} is not allowed")


# Only these characters change the scanner's state, so it jumps between them.
_SCANNER_STOPS = re.compile(r'[{}"\\]')


def _top_level_spans(text: str, unclosed: list[bool]) -> Iterator[tuple[int, int]]:
  """Yields (start, end) of each top-level balanced {...}, in one linear pass.

  Quotes count only inside braces: prose outside an object may hold stray ones.
  Sets `unclosed[0]` when the text ends inside an object.
  """
  depth = 0
  start = 0
  in_string = False
  skip_until = -1
  for match in _SCANNER_STOPS.finditer(text):
    i = match.start()
    if i < skip_until:
      continue
    char = match.group()
    if in_string:
      if char == "\\":
        skip_until = i + 2
      elif char == '"':
        in_string = False
    elif char == '"':
      in_string = depth > 0
    elif char == "{":
      if depth == 0:
        start = i
      depth += 1
    elif char == "}" and depth > 0:
      depth -= 1
      if depth == 0:
        yield start, i + 1
  unclosed[0] = depth > 0


def _find_object(text: str) -> tuple[_Object | None, tuple[int, int], str]:
  """The first top-level object that decodes, its span, or why there is none."""
  unclosed = [False]
  first_error = ""
  for start, end in _top_level_spans(text, unclosed):
    try:
      obj = json.loads(text[start:end], parse_constant=_reject_constant,
                       object_pairs_hook=_object_from_pairs)
    except json.JSONDecodeError as e:
      first_error = first_error or f"invalid JSON: {e.msg}"
    except RecursionError:
      first_error = first_error or "invalid JSON: nested too deeply"
    except ValueError as e:  # NaN/Infinity, or an integer too long to convert.
      first_error = first_error or f"invalid JSON: {str(e)[:120]}"
    else:
      return obj, (start, end), ""
  if first_error:
    return None, (0, 0), first_error
  if unclosed[0]:
    return None, (0, 0), "unterminated JSON object"
  return None, (0, 0), "no JSON object found"


def _show(value: Any) -> str:
  """A short JSON rendering of a bad value for an error message."""
  try:
    shown = json.dumps(value, ensure_ascii=True)
  except (ValueError, RecursionError):
    shown = f"<{type(value).__name__}>"
  return shown if len(shown) <= 40 else shown[:37] + "..."


def _list_keys(keys: list[str] | tuple[str, ...]) -> str:
  """Names keys for an error message, escaped and capped (an object may hold thousands)."""
  shown = []
  for key in keys[:5]:
    escaped = json.dumps(key, ensure_ascii=True)[1:-1]
    shown.append(escaped if len(escaped) <= 40 else escaped[:37] + "...")
  more = f" (+{len(keys) - 5} more)" if len(keys) > 5 else ""
  return ", ".join(shown) + more


def _is_score(value: Any) -> bool:
  # bool is a subclass of int; `true` must not pass as 1.
  return type(value) is int and SCORE_MIN <= value <= SCORE_MAX


def _is_think_block(reasoning: str) -> bool:
  return (reasoning.startswith(THINK_OPEN) and reasoning.endswith(THINK_CLOSE)
          and reasoning.count(THINK_OPEN) == 1 and reasoning.count(THINK_CLOSE) == 1
          and bool(reasoning[len(THINK_OPEN):-len(THINK_CLOSE)].strip()))


def _check_object(obj: _Object, errors: list[str]) -> FormatChecks:
  """Runs the five checks that look inside a found object."""
  missing = [key for key in JUDGMENT_KEYS if key not in obj]
  extra = [key for key in obj if key not in JUDGMENT_KEYS]
  if missing:
    errors.append(f"missing keys: {', '.join(missing)}")
  if extra:
    errors.append(f"extra keys: {_list_keys(extra)}")
  if obj.duplicates:
    errors.append(f"duplicate keys: {_list_keys(obj.duplicates)}")
  exact_keys = not (missing or extra or obj.duplicates)

  value_errors = []
  for key in (KEY_SCORE_A, KEY_SCORE_B):
    if key in obj and not _is_score(obj[key]):
      value_errors.append(
          f"{key} must be an integer {SCORE_MIN}-{SCORE_MAX}, got {_show(obj[key])}")
  better = obj.get(KEY_BETTER)
  better_ok = isinstance(better, str) and better in BETTER_VALUES
  if KEY_BETTER in obj and not better_ok:
    value_errors.append(f"better must be one of A, B, equal, got {_show(better)}")
  for key in (KEY_REASONING, KEY_FINAL_VERDICT):
    if key in obj and not isinstance(obj[key], str):
      value_errors.append(f"{key} must be a string, got {_show(obj[key])}")
  errors.extend(value_errors)
  valid_values = not missing and not value_errors

  reasoning = obj.get(KEY_REASONING)
  think_tag = isinstance(reasoning, str) and _is_think_block(reasoning)
  if isinstance(reasoning, str) and not think_tag:
    errors.append("reasoning must be a single non-empty <think>...</think> block")

  verdict = obj.get(KEY_FINAL_VERDICT)
  verdict_tag = isinstance(verdict, str) and verdict in VERDICTS.values()
  if isinstance(verdict, str) and not verdict_tag:
    errors.append(
        f"final_verdict must be one of {', '.join(VERDICTS.values())}, got {_show(verdict)}")

  verdict_agrees = verdict_tag and better_ok and VERDICTS[better] == verdict
  if verdict_tag and better_ok and not verdict_agrees:
    errors.append("final_verdict disagrees with better")

  return FormatChecks(json_object=True, exact_keys=exact_keys, valid_values=valid_values,
                      think_tag=think_tag, verdict_tag=verdict_tag, verdict_agrees=verdict_agrees)


def _contradicts_scores(obj: _Object) -> bool:
  """Whether a valid `better` or verdict tag disagrees with two valid scores."""
  score_a, score_b = obj.get(KEY_SCORE_A), obj.get(KEY_SCORE_B)
  if not (_is_score(score_a) and _is_score(score_b)):
    return False
  implied = preference_from_scores(score_a, score_b)
  better, verdict = obj.get(KEY_BETTER), obj.get(KEY_FINAL_VERDICT)
  stated = [b for b in BETTER_VALUES if b == better or VERDICTS[b] == verdict]
  return any(b != implied for b in stated)


def parse_judgment(text: Any, *, strict: bool = True) -> ParseResult:
  """Parses a judge's output into a `Judgment`, or says precisely why it can't.

  Never raises, whatever `text` is. See the module docstring for the rules.

  Args:
    text: the judge's output. Bytes are decoded as UTF-8 with replacement; any
      other non-string is invalid.
    strict: if True the whole output must be the object; if False the first
      top-level object in it that decodes as JSON is used.

  Returns:
    A `ParseResult`; `.judgment` is set only when every check passed.
  """
  if isinstance(text, (bytes, bytearray, memoryview)):
    text = bytes(text).decode("utf-8", errors="replace")
  if not isinstance(text, str):
    return ParseResult(None, (f"judgment must be a string, got {type(text).__name__}",))

  obj, (start, end), reason = _find_object(text[:MAX_JUDGMENT_CHARS])
  if obj is None:
    if len(text) > MAX_JUDGMENT_CHARS:
      reason += f" in the first {MAX_JUDGMENT_CHARS} characters"
    return ParseResult(None, (reason,))

  errors: list[str] = []
  json_object = True
  if strict and len(text) > MAX_JUDGMENT_CHARS:
    errors.append(f"judgment longer than {MAX_JUDGMENT_CHARS} characters")
    json_object = False
  elif strict and (text[:start].strip() or text[end:].strip()):
    errors.append("text outside the JSON object")
    json_object = False
  checks = dataclasses.replace(_check_object(obj, errors), json_object=json_object)
  contradicts = _contradicts_scores(obj)
  if errors:
    return ParseResult(None, tuple(errors), checks, contradicts)
  judgment = Judgment(score_a=obj[KEY_SCORE_A], score_b=obj[KEY_SCORE_B], better=obj[KEY_BETTER],
                      reasoning=obj[KEY_REASONING], final_verdict=obj[KEY_FINAL_VERDICT])
  return ParseResult(judgment, (), checks, contradicts)


def render_judgment(
    score_a: int,
    score_b: int,
    reasoning_by_dimension: Mapping[str, str],
    better: str | None = None,
    short_headings: bool = False,
) -> str:
  """Writes a judgment in the strict format, e.g. as an SFT target.

  The reasoning lists the five dimensions in `DIMENSIONS` order, one numbered
  line each ("1. Fluency and coherence: <text>"), with each text's whitespace
  collapsed to single spaces so every dimension stays on its own line (the
  rubric reward looks for A-vs-B comparisons within a line). The output parses
  back (strict mode) to the same scores, `better` and reasoning.

  Args:
    score_a: integer score 0-10 for response A.
    score_b: integer score 0-10 for response B.
    reasoning_by_dimension: the reasoning for each of the five dimension names
      in `DIMENSION_NAMES`; all five are required.
    better: "A", "B" or "equal"; derived from the scores when None.
    short_headings: introduce each line with the dimension's one-word heading
      ("1. Fluency: <text>"): fewer tokens for a judge to write.

  Returns:
    The judgment as one line of JSON (non-ASCII text kept as is).

  Raises:
    ValueError: on a score outside 0-10 or not an int, an unknown `better`, a
      `better` the scores contradict, missing or unknown dimensions, or a
      dimension text that is empty or contains a think tag.
  """
  for name, score in (("score_a", score_a), ("score_b", score_b)):
    if not _is_score(score):
      raise ValueError(f"{name} must be an integer {SCORE_MIN}-{SCORE_MAX}, got {score!r}")
  implied = preference_from_scores(score_a, score_b)
  if better is None:
    better = implied
  elif better not in BETTER_VALUES:
    raise ValueError(f"better must be one of {', '.join(BETTER_VALUES)}, got {better!r}")
  elif better != implied:
    raise ValueError(f"better={better!r} contradicts the scores {score_a} vs {score_b}")

  unknown = sorted(set(reasoning_by_dimension) - set(DIMENSION_NAMES))
  missing = [name for name in DIMENSION_NAMES if name not in reasoning_by_dimension]
  if unknown:
    raise ValueError(f"unknown dimensions: {', '.join(map(str, unknown))}; "
                     f"known: {', '.join(DIMENSION_NAMES)}")
  if missing:
    raise ValueError(f"missing dimensions: {', '.join(missing)}")

  lines = []
  for number, dimension in enumerate(DIMENSIONS, start=1):
    text = reasoning_by_dimension[dimension.name]
    if not isinstance(text, str) or not text.strip():
      raise ValueError(f"reasoning for {dimension.name} must be a non-empty string")
    if THINK_OPEN in text or THINK_CLOSE in text:
      raise ValueError(f"reasoning for {dimension.name} must not contain think tags")
    heading = dimension.short if short_headings else dimension.title
    lines.append(f"{number}. {heading}: {' '.join(text.split())}")
  reasoning = THINK_OPEN + "\n".join(lines) + THINK_CLOSE

  # Reasoning first: a judge trained on these targets writes its comparison
  # before it commits to scores and a verdict (JSON objects are unordered, so
  # the format is the same whatever the key order).
  obj = {
      KEY_REASONING: reasoning,
      KEY_SCORE_A: score_a,
      KEY_SCORE_B: score_b,
      KEY_BETTER: better,
      KEY_FINAL_VERDICT: VERDICTS[better],
  }
  return json.dumps(obj, ensure_ascii=False)
