"""Sentence-level BLEU, ROUGE-L and METEOR on text in any script.

One tokenizer feeds all three metrics, so they agree on what a word is:
`unicode_tokens` NFKC-normalises and lower-cases the text, keeps runs of
letters, digits and combining marks in every script (Cyrillic, Arabic,
Devanagari, ...), makes each Chinese character and Japanese kana one token, and
drops punctuation. rouge-score's own tokenizer would erase all of that (it keeps
only ASCII letters and digits).

METEOR uses nltk's implementation. It wants the WordNet corpus for synonym
matches, and this project never downloads data at run time, so nltk gets a
`wordnet` stand-in that forwards to the real corpus when it is installed and
otherwise returns no synsets: METEOR then matches exact words and Porter stems
only. `meteor_uses_wordnet()` says which case holds (scores differ slightly
between the two, so compare runs made on machines in the same state).

Inputs are capped at `max_tokens` tokens per text (default 512) because
ROUGE-L's longest-common-subsequence table is quadratic in pure Python.

The metric packages (sacrebleu, rouge-score, nltk, regex) are imported on first
use, so importing the rewards stays cheap.
"""

from __future__ import annotations

import functools
import itertools
import logging
import unicodedata
from typing import Any, Sequence

_LOG = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 512

# Chinese characters and kana carry a word's worth of meaning each and are
# written without spaces, so each is a token; other scripts split on non-word
# characters. \p{M} keeps combining marks (Indic vowel signs, accents) in words.
_CJK = r"\p{Han}\p{Hiragana}\p{Katakana}"
_TOKEN_PATTERN = rf"[{_CJK}]|(?:(?![{_CJK}])[\p{{L}}\p{{N}}\p{{M}}])+"


@functools.cache
def _token_regex() -> Any:
  import regex  # nltk depends on it; stdlib re has no Unicode script or mark classes.

  return regex.compile(_TOKEN_PATTERN)


def unicode_tokens(text: str, max_tokens: int | None = DEFAULT_MAX_TOKENS) -> list[str]:
  """Splits text into lower-cased word tokens, one token per CJK character.

  Args:
    text: any text.
    max_tokens: keep at most this many tokens (None: all); scanning stops there.

  Returns:
    The tokens, e.g. "Hello, 世界!" -> ["hello", "世", "界"].
  """
  # NFKC first, so full-width forms match their ASCII twins ("２０２４" == "2024").
  matches = _token_regex().finditer(unicodedata.normalize("NFKC", text))
  return [m.group().lower() for m in itertools.islice(matches, max_tokens)]


class _UnicodeRougeTokenizer:
  """The `tokenize(text)` interface rouge-score expects, over `unicode_tokens`."""

  def __init__(self, max_tokens: int | None):
    self._max_tokens = max_tokens

  def tokenize(self, text: str) -> list[str]:
    return unicode_tokens(text, self._max_tokens)


@functools.cache
def _rouge_l_scorer(max_tokens: int | None) -> Any:
  from rouge_score import rouge_scorer

  return rouge_scorer.RougeScorer(["rougeL"], tokenizer=_UnicodeRougeTokenizer(max_tokens))


@functools.cache
def _bleu_metric(tokenize: str) -> Any:
  from sacrebleu.metrics import BLEU

  # The same settings as sacrebleu.sentence_bleu: exp smoothing, effective order
  # (so a one-word exact answer scores 1, not 0).
  return BLEU(tokenize=tokenize, effective_order=True)


def bleu(hypothesis: str, references: Sequence[str], *, tokenize: str | None = None,
         max_tokens: int | None = DEFAULT_MAX_TOKENS) -> float:
  """Sentence BLEU in [0, 1] (sacrebleu, divided by 100).

  Args:
    hypothesis: the candidate answer.
    references: one or more reference answers.
    tokenize: None to use `unicode_tokens` (lower-cased); or a sacrebleu
      tokenizer name ("13a", "intl", "zh", "char", ...) applied to the raw text,
      which is then cut to `max_tokens * 16` characters.
    max_tokens: the token cap per text.

  Returns:
    The score; 0 when the hypothesis or every reference is empty.
  """
  if tokenize is None:
    hypothesis = " ".join(unicode_tokens(hypothesis, max_tokens))
    references = [" ".join(unicode_tokens(r, max_tokens)) for r in references]
    tokenize = "none"
  elif max_tokens is not None:
    hypothesis = hypothesis[:max_tokens * 16]
    references = [r[:max_tokens * 16] for r in references]
  references = [r for r in references if r.strip()]
  if not hypothesis.strip() or not references:
    return 0.0
  score = _bleu_metric(tokenize).sentence_score(hypothesis, references).score / 100.0
  return min(1.0, max(0.0, score))  # sacrebleu gives 100.00000000000004 for a match.


def rouge_l(hypothesis: str, references: Sequence[str], *,
            max_tokens: int | None = DEFAULT_MAX_TOKENS) -> float:
  """ROUGE-L F-measure in [0, 1] (rouge-score with `unicode_tokens`); best over references."""
  scorer = _rouge_l_scorer(max_tokens)
  return max((scorer.score(r, hypothesis)["rougeL"].fmeasure for r in references), default=0.0)


class _WordNetIfInstalled:
  """nltk's WordNet when its corpus is installed; otherwise no synsets at all."""

  def __init__(self):
    self._reader: Any = None
    self._resolved = False

  def available(self) -> bool:
    if not self._resolved:
      from nltk.corpus import wordnet

      try:
        wordnet.synsets  # noqa: B018 -- attribute access makes the lazy loader open the corpus.
      except (LookupError, OSError):
        _LOG.info("WordNet corpus not installed: METEOR matches exact words and stems only")
        self._reader = None
      else:
        self._reader = wordnet
      self._resolved = True
    return self._reader is not None

  def synsets(self, word: str, *args: Any, **kwargs: Any) -> list[Any]:
    if not self.available():
      return []
    return self._reader.synsets(word, *args, **kwargs)


_WORDNET = _WordNetIfInstalled()


def meteor_uses_wordnet() -> bool:
  """Whether METEOR can use WordNet synonyms here (the corpus is installed)."""
  return _WORDNET.available()


def meteor(hypothesis: str, references: Sequence[str], *,
           max_tokens: int | None = DEFAULT_MAX_TOKENS) -> float:
  """METEOR in [0, 1] (nltk) over `unicode_tokens`; best over references.

  Note METEOR's fragmentation penalty applies even to an exact match: a
  one-token exact answer scores 0.5, a two-token one 0.9375. Use `exact_match`
  for short answers.
  """
  from nltk.translate.meteor_score import meteor_score

  hypothesis_tokens = unicode_tokens(hypothesis, max_tokens)
  reference_tokens = [t for t in (unicode_tokens(r, max_tokens) for r in references) if t]
  if not hypothesis_tokens or not reference_tokens:
    return 0.0
  return float(meteor_score(reference_tokens, hypothesis_tokens, wordnet=_WORDNET))
