"""Rule rewards for policies that answer in `<think>...</think><answer>...</answer>`.

Reference answers come from the per-sample column `reference` (or `answer` when
`reference` is absent or None): a string, or a list of acceptable strings. A
sample with no usable reference is a data error: it scores the function's
minimum and is counted in `contract.error_counts()`.

The scored answer is `extract_answer(completion)`: the last `<answer>` block,
else the text after the last `</think>`, else the whole completion. Format is
rewarded separately (`think_answer_format`), so the accuracy rewards still see
an answer the policy forgot to tag.
"""

from __future__ import annotations

import operator
import re
import unicodedata
from typing import Any, Callable, Mapping

from omni_rrm_jax.rewards import text_overlap
from omni_rrm_jax.rewards.contract import is_finite_number, reward_range, score_samples

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
_TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)

ACCURACY_METRICS = ("bleu", "rouge_l", "meteor")
DEFAULT_ACCURACY_WEIGHTS = {"bleu": 1 / 3, "rouge_l": 1 / 3, "meteor": 1 / 3}

CHOICE_LETTERS = "ABCDE"

DEFAULT_LENGTH_TARGET = 256
DEFAULT_LENGTH_TOLERANCE = 128


def extract_answer(text: str) -> str:
  """The answer part of a completion, stripped.

  Args:
    text: the completion.

  Returns:
    The content of the last `<answer>...</answer>` block (or everything after a
    last unclosed `<answer>`, for a truncated sample); else the text after the
    last `</think>`; else the whole text.
  """
  start = text.rfind(ANSWER_OPEN)
  if start >= 0:
    end = text.find(ANSWER_CLOSE, start)
    return text[start + len(ANSWER_OPEN):end if end >= 0 else len(text)].strip()
  think_end = text.rfind(THINK_CLOSE)
  if think_end >= 0:
    return text[think_end + len(THINK_CLOSE):].strip()
  return text.strip()


def _references(row: Mapping[str, Any]) -> list[str]:
  value = row.get("reference")
  if value is None:
    value = row.get("answer")
  if isinstance(value, str):
    value = [value]
  if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
    raise ValueError(f"no reference answer in column 'reference' or 'answer', got {value!r:.60}")
  references = [v for v in value if v.strip()]
  if not references:
    raise ValueError("the reference answer is empty")
  return references


def _is_strict_format(text: str) -> bool:
  text = text.strip()
  if not (text.startswith(THINK_OPEN) and text.endswith(ANSWER_CLOSE)):
    return False
  if any(text.count(tag) != 1 for tag in _TAGS):
    return False
  think_end, answer_start = text.find(THINK_CLOSE), text.find(ANSWER_OPEN)
  if answer_start < think_end or text[think_end + len(THINK_CLOSE):answer_start].strip():
    return False
  thought = text[len(THINK_OPEN):think_end]
  answer = text[answer_start + len(ANSWER_OPEN):-len(ANSWER_CLOSE)]
  return bool(thought.strip()) and bool(answer.strip())


def _is_lenient_format(text: str) -> bool:
  think_start = text.find(THINK_OPEN)
  think_end = text.find(THINK_CLOSE, think_start + len(THINK_OPEN)) if think_start >= 0 else -1
  answer_start = text.find(ANSWER_OPEN, think_end + len(THINK_CLOSE)) if think_end >= 0 else -1
  answer_end = text.find(ANSWER_CLOSE, answer_start + len(ANSWER_OPEN)) if answer_start >= 0 else -1
  if answer_end < 0:
    return False
  thought = text[think_start + len(THINK_OPEN):think_end]
  answer = text[answer_start + len(ANSWER_OPEN):answer_end]
  return bool(thought.strip()) and bool(answer.strip())


@reward_range(0.0, 1.0)
def think_answer_format(prompts: Any, completions: Any, *, strict: bool = True,
                        **columns: Any) -> list[float]:
  """1 for a completion in the `<think>...</think><answer>...</answer>` format, else 0.

  Strict: the whole completion (give or take surrounding whitespace) is one
  non-empty think block, optional whitespace, one non-empty answer block; each
  tag appears exactly once. Lenient: somewhere in the text a non-empty think
  block is followed by a non-empty answer block; anything else is allowed.

  Args:
    prompts: unused.
    completions: the policy's outputs.
    strict: which of the two rules to apply.
    **columns: unused.

  Returns:
    One score in {0, 1} per completion.
  """
  del prompts
  check = _is_strict_format if strict else _is_lenient_format
  name = "think_answer_format" if strict else "think_answer_format_lenient"
  return score_samples(name, 0.0, completions, columns, lambda text, row: float(check(text)))


@reward_range(0.0, 1.0)
def think_answer_format_lenient(prompts: Any, completions: Any, **columns: Any) -> list[float]:
  """`think_answer_format` with `strict=False`, under its own registry name."""
  columns.pop("strict", None)
  return think_answer_format(prompts, completions, strict=False, **columns)


def _metric_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
  weights = dict(DEFAULT_ACCURACY_WEIGHTS if weights is None else weights)
  unknown = sorted(set(weights) - set(ACCURACY_METRICS))
  if unknown:
    raise ValueError(f"unknown accuracy metrics {unknown}; known: {', '.join(ACCURACY_METRICS)}")
  for name, weight in weights.items():
    if not is_finite_number(weight) or weight < 0:
      raise ValueError(f"weight of {name} must be a finite number >= 0, got {weight!r}")
  total = sum(weights.values())
  if total <= 0:
    raise ValueError("accuracy weights must not all be zero")
  return {name: weight / total for name, weight in weights.items() if weight > 0}


@reward_range(0.0, 1.0)
def answer_accuracy(
    prompts: Any,
    completions: Any,
    *,
    accuracy_weights: Mapping[str, float] | None = None,
    bleu_tokenize: str | None = None,
    max_tokens: int = text_overlap.DEFAULT_MAX_TOKENS,
    **columns: Any,
) -> list[float]:
  """Overlap of the extracted answer with the reference: weighted BLEU, ROUGE-L, METEOR.

  All three metrics share `text_overlap.unicode_tokens`, which keeps non-Latin
  text and splits Chinese characters (see `text_overlap` for METEOR without
  WordNet and for the token cap).

  Args:
    prompts: unused.
    completions: the policy's outputs.
    accuracy_weights: `{"bleu": w, "rouge_l": w, "meteor": w}` (missing metrics
      weigh 0); normalised to sum to 1. Default: 1/3 each.
    bleu_tokenize: None, or a sacrebleu tokenizer name for BLEU on raw text.
    max_tokens: token cap per text for all three metrics.
    **columns: `reference` or `answer`, one per completion.

  Returns:
    One score in [0, 1] per completion.

  Raises:
    ValueError: on unknown metrics or invalid weights (a config error).
  """
  del prompts
  weights = _metric_weights(accuracy_weights)
  metrics: dict[str, Callable[[str, list[str]], float]] = {
      "bleu": lambda h, r: text_overlap.bleu(h, r, tokenize=bleu_tokenize, max_tokens=max_tokens),
      "rouge_l": lambda h, r: text_overlap.rouge_l(h, r, max_tokens=max_tokens),
      "meteor": lambda h, r: text_overlap.meteor(h, r, max_tokens=max_tokens),
  }

  def score_one(text: str, row: Mapping[str, Any]) -> float:
    references = _references(row)
    answer = extract_answer(text)
    return sum(weight * metrics[name](answer, references) for name, weight in weights.items())

  return score_samples("answer_accuracy", 0.0, completions, columns, score_one)


_SPACES = re.compile(r"\s+")


def _strip_edges(text: str) -> str:
  """Removes whitespace, punctuation and backticks at both ends."""
  def is_edge(char: str) -> bool:
    return char.isspace() or char == "`" or unicodedata.category(char).startswith("P")

  start, end = 0, len(text)
  while start < end and is_edge(text[start]):
    start += 1
  while end > start and is_edge(text[end - 1]):
    end -= 1
  return text[start:end]


def normalize_answer(text: str) -> str:
  """Canonical form for exact matching.

  NFKC (full-width -> ASCII forms), case-folded, whitespace runs collapsed to
  one space, punctuation stripped at both ends only ("Paris." == "paris", but
  "3.5" != "35").
  """
  text = unicodedata.normalize("NFKC", text).casefold()
  return _strip_edges(_SPACES.sub(" ", text))


@reward_range(0.0, 1.0)
def exact_match(prompts: Any, completions: Any, **columns: Any) -> list[float]:
  """1 when the extracted answer equals a reference after `normalize_answer`, else 0.

  Args:
    prompts: unused.
    completions: the policy's outputs.
    **columns: `reference` or `answer`, one per completion.

  Returns:
    One score in {0, 1} per completion.
  """
  del prompts

  def score_one(text: str, row: Mapping[str, Any]) -> float:
    references = {normalize_answer(r) for r in _references(row)}
    return float(normalize_answer(extract_answer(text)) in references)

  return score_samples("exact_match", 0.0, completions, columns, score_one)


# Possessive quantifiers (*+) keep these linear on adversarial whitespace runs.
_CHOICE_WRAPPERS = "*_`'\"()[]{}<>.,:;!?"
# "E.g." and "A.M." start with a letter and a dot too, hence the lookahead.
_LEADING_CHOICE = re.compile(r"[\s*_(\[{]*+([A-E])(?:\.(?![A-Za-z])|[):\]}]|\s*+[-–—:]\s)")
_STATED_CHOICE = re.compile(
    r"(?<![A-Za-z])(?i:answer|option|choice)"
    r"(?:\s++(?i:is|would\s++be|should\s++be))?+\s*+[:：]?+\s*+"
    r"[*_(\[{]*+([A-E])(?![A-Za-z0-9_])")
_STANDALONE_CHOICE = re.compile(
    r"(?<![A-Za-z0-9_])(A(?![A-Za-z0-9_])(?!\s++[a-z])|[B-E](?![A-Za-z0-9_]))")


def extract_choice(text: str) -> str | None:
  """Finds the option letter (A-E) an answer picks, or None.

  Tried in order, first hit wins:
  1. the whole text is a letter, give or take wrappers: "b", "(B)", "**B**", "B.";
  2. it starts with a letter and a delimiter: "B. Paris", "(C) red", "D: 4";
  3. the last statement like "the answer is (C)", "Answer: D", "option B";
  4. exactly one distinct standalone capital A-E in the text ("A" before a
     lower-case word is taken as the article and skipped).

  Args:
    text: an extracted answer (or a reference such as "B" or "(B) Paris").

  Returns:
    "A".."E" or None.
  """
  bare = text.strip().strip(_CHOICE_WRAPPERS).strip()
  if len(bare) == 1 and bare.upper() in CHOICE_LETTERS:
    return bare.upper()
  match = _LEADING_CHOICE.match(text)
  if match:
    return match.group(1)
  last = None
  for match in _STATED_CHOICE.finditer(text):
    last = match.group(1)
  if last:
    return last
  letters = set()
  for match in _STANDALONE_CHOICE.finditer(text):
    letters.add(match.group(1))
    if len(letters) > 1:
      return None
  return letters.pop() if letters else None


@reward_range(0.0, 1.0)
def multiple_choice(prompts: Any, completions: Any, **columns: Any) -> list[float]:
  """1 when the extracted answer picks the reference's option letter, else 0.

  Both sides go through `extract_choice`; a reference with no letter is a data
  error (counted, scores 0).

  Args:
    prompts: unused.
    completions: the policy's outputs.
    **columns: `reference` or `answer` holding the correct option ("B", "(B)", ...).

  Returns:
    One score in {0, 1} per completion.
  """
  del prompts

  def score_one(text: str, row: Mapping[str, Any]) -> float:
    correct = {extract_choice(r) for r in _references(row)} - {None}
    if not correct:
      raise ValueError(f"no option letter A-E in the reference {_references(row)!r:.60}")
    return float(extract_choice(extract_answer(text)) in correct)

  return score_samples("multiple_choice", 0.0, completions, columns, score_one)


def _token_counter(tokenizer: Any) -> Callable[[str], int]:
  """A `text -> token count` function from what the caller passed."""
  if tokenizer is None:
    return lambda text: len(text.split())
  encode = getattr(tokenizer, "encode", None)
  if callable(encode):
    def count(text: str) -> int:
      ids = encode(text)
      return len(getattr(ids, "ids", ids))  # `tokenizers` returns an Encoding.
    return count
  if callable(tokenizer):
    return tokenizer
  raise ValueError(
      f"tokenizer must have .encode or be a callable returning a count, got {tokenizer!r:.60}")


@reward_range(0.0, 1.0)
def length_reward(
    prompts: Any,
    completions: Any,
    *,
    length_target: int = DEFAULT_LENGTH_TARGET,
    length_tolerance: int = DEFAULT_LENGTH_TOLERANCE,
    tokenizer: Any = None,
    **columns: Any,
) -> list[float]:
  """Rewards a completion length near a target, in tokens.

  The reward is `max(0, 1 - |n - length_target| / length_tolerance)`: 1 at the
  target, falling linearly to 0 at target +- tolerance, 0 beyond.

  Args:
    prompts: unused.
    completions: the policy's outputs.
    length_target: the ideal number of tokens.
    length_tolerance: how far from the target the reward reaches 0 (> 0).
    tokenizer: how to count tokens: an object with `.encode(text)` (a Hugging
      Face or `tokenizers` tokenizer; note HF's `encode` may add special
      tokens), or a callable `text -> int`. None counts whitespace-separated
      words.
    **columns: unused.

  Returns:
    One score in [0, 1] per completion.

  Raises:
    ValueError: on a negative target, a tolerance <= 0 or an unusable tokenizer
      (config errors).
  """
  del prompts
  if length_target < 0 or length_tolerance <= 0:
    raise ValueError(f"need length_target >= 0 and length_tolerance > 0, got "
                     f"{length_target!r} and {length_tolerance!r}")
  count_tokens = _token_counter(tokenizer)

  def score_one(text: str, row: Mapping[str, Any]) -> float:
    del row
    n = count_tokens(text)
    if isinstance(n, bool) or operator.index(n) < 0:  # index() accepts numpy ints, rejects floats.
      raise ValueError(f"token count must be an int >= 0, got {n!r:.60}")
    n = operator.index(n)
    return max(0.0, 1.0 - abs(n - length_target) / length_tolerance)

  return score_samples("length_reward", 0.0, completions, columns, score_one)

