"""Text rewards: tag format, overlap metrics on any script, exact match, choices, length."""

from __future__ import annotations

import types

import pytest

from omni_rrm_jax.rewards import contract, text_overlap as ov, text_rewards as tr


@pytest.mark.parametrize("text, strict, lenient", [
    ("<think>x</think><answer>y</answer>", 1.0, 1.0),
    ("  <think>x</think>\n<answer>y</answer>\n", 1.0, 1.0),
    ("Sure! <think>x</think><answer>y</answer>", 0.0, 1.0),
    ("<think>x</think> so <answer>y</answer>", 0.0, 1.0),
    ("<think>x</think><answer>y</answer><answer>z</answer>", 0.0, 1.0),
    ("<think></think><answer>y</answer>", 0.0, 0.0),
    ("<think>x</think><answer> </answer>", 0.0, 0.0),
    ("<answer>y</answer><think>x</think>", 0.0, 0.0),
    ("<think>x<answer>y</answer></think>", 0.0, 0.0),
    ("<think>x</think><answer>y", 0.0, 0.0),
])
def test_think_answer_format(text, strict, lenient):
  assert tr.think_answer_format(None, [text]) == [strict]
  assert tr.think_answer_format(None, [text], strict=False) == [lenient]
  assert tr.think_answer_format_lenient(None, [text]) == [lenient]


@pytest.mark.parametrize("text, answer", [
    ("<think>t</think><answer> 42 </answer>", "42"),
    ("<answer>1</answer> then <answer>2</answer>", "2"),
    ("<think>t</think> Paris", "Paris"),
    ("<answer>truncated", "truncated"),
    ("plain", "plain"),
])
def test_extract_answer(text, answer):
  assert tr.extract_answer(text) == answer


def test_unicode_tokens_keep_every_script_and_split_cjk():
  tokens = ov.unicode_tokens("Hello, 世界! Привет नमस्ते ＡＢ")
  assert tokens == ["hello", "世", "界", "привет", "नमस्ते", "ab"]
  assert ov.unicode_tokens("a b c d", max_tokens=2) == ["a", "b"]


def test_bleu_and_rouge_identical_is_one_disjoint_is_zero():
  same = "the cat sat on the mat"
  assert ov.bleu(same, [same]) == 1.0
  assert ov.rouge_l(same, [same]) == 1.0
  assert ov.bleu("a b c", ["x y z"]) == 0.0
  assert ov.rouge_l("a b c", ["x y z"]) == 0.0
  assert ov.bleu("paris", ["Paris"]) == 1.0  # effective order: one word can still score 1.


def test_meteor_without_wordnet_matches_words_and_stems():
  # Exact matches still pay METEOR's fragmentation penalty 0.5 * (chunks / matches)^3.
  assert ov.meteor("paris", ["paris"]) == 0.5
  assert ov.meteor("the cat", ["the cat"]) == 0.9375
  assert ov.meteor("cats running", ["cat runs"]) == pytest.approx(0.9375)  # Porter stems.
  assert ov.meteor("a b", ["x y"]) == 0.0


def test_meteor_wordnet_stand_in_returns_no_synsets_without_the_corpus():
  if ov.meteor_uses_wordnet():
    pytest.skip("the WordNet corpus is installed here")
  assert ov._WORDNET.synsets("dog") == []


def test_chinese_overlap_is_not_erased():
  from rouge_score import rouge_scorer

  hypothesis, reference = "今天天气很好", "天气很好"
  # rouge-score's own tokenizer drops non-ASCII text, so it sees two empty strings.
  default = rouge_scorer.RougeScorer(["rougeL"]).score(reference, hypothesis)["rougeL"].fmeasure
  assert default == 0.0
  # One token per character: LCS 4, precision 4/6, recall 4/4 -> F = 0.8.
  assert ov.rouge_l(hypothesis, [reference]) == pytest.approx(0.8)
  assert ov.bleu(hypothesis, [reference]) > 0.0
  assert ov.bleu(hypothesis, [reference], tokenize="zh") > 0.0
  assert ov.bleu(hypothesis, [reference], tokenize="13a") == 0.0  # one "word" each, no match.
  got = tr.answer_accuracy(None, [f"<answer>{hypothesis}</answer>"], reference=[reference],
                           accuracy_weights={"rouge_l": 1.0})
  assert got == pytest.approx([0.8])


def test_answer_accuracy_averages_the_three_metrics():
  same = "the cat sat on the mat"
  completions = [f"<think>x</think><answer>{same}</answer>", "<answer>dog</answer>"]
  got = tr.answer_accuracy(None, completions, reference=[same, "cat"])
  meteor_six_tokens = 1 - 0.5 * (1 / 6) ** 3
  assert got == pytest.approx([(1 + 1 + meteor_six_tokens) / 3, 0.0])


def test_answer_accuracy_weights_and_references():
  got = tr.answer_accuracy(None, ["<answer>paris</answer>"], answer=[["London", "Paris"]],
                           accuracy_weights={"bleu": 3, "meteor": 1})
  assert got == pytest.approx([(3 * 1.0 + 1 * 0.5) / 4])
  with pytest.raises(ValueError, match="unknown accuracy metrics"):
    tr.answer_accuracy(None, ["x"], reference=["x"], accuracy_weights={"chrf": 1})


def test_missing_reference_scores_zero_and_is_counted():
  # The second sample is an exact one-token match: BLEU 1, ROUGE-L 1, METEOR 0.5.
  got = tr.answer_accuracy(None, ["x", "y"], reference=[None, "y"])
  assert got == [0.0, pytest.approx(2.5 / 3)]
  assert tr.exact_match(None, ["x"], reference=[""]) == [0.0]
  assert contract.error_counts() == {"answer_accuracy": 1, "exact_match": 1}


@pytest.mark.parametrize("text, reference, expected", [
    ("<answer> Paris. </answer>", "paris", 1.0),
    ("<answer>ＰＡＲＩＳ</answer>", "Paris", 1.0),
    ("<answer>New   York</answer>", "new york", 1.0),
    ("<answer>3.5</answer>", "35", 0.0),
    ("<answer>Berlin</answer>", ["Paris", "berlin"], 1.0),
    ("<answer>The capital is Paris</answer>", "Paris", 0.0),
])
def test_exact_match(text, reference, expected):
  assert tr.exact_match(None, [text], reference=[reference]) == [expected]


@pytest.mark.parametrize("text, choice", [
    ("b", "B"),
    ("(C)", "C"),
    ("**D**", "D"),
    ("B. Paris", "B"),
    ("[E] none of the above", "E"),
    ("The answer is (C).", "C"),
    ("Answer: D", "D"),
    ("I considered A, but the correct option is B", "B"),
    ("E.g. the answer is (D)", "D"),
    ("I pick C here", "C"),
    ("A cat sat down", None),
    ("Both B and C look right", None),
    ("nothing", None),
    ("", None),
])
def test_extract_choice(text, choice):
  assert tr.extract_choice(text) == choice


def test_multiple_choice_reward():
  completions = ["<answer>B</answer>", "<think>A or B?</think><answer>B. Paris</answer>",
                 "The answer is D.", "I pick C", "", None]
  got = tr.multiple_choice(None, completions, answer=["B", "(B) Paris", "D", "B", "A", "A"])
  assert got == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
  assert contract.error_counts() == {}


def test_length_reward_peaks_at_the_target():
  def words(n):
    return " ".join(["w"] * n)

  got = tr.length_reward(None, [words(n) for n in range(26)], length_target=10, length_tolerance=5)
  assert max(range(26), key=got.__getitem__) == 10
  assert got[10] == 1.0
  assert [got[8], got[12], got[15], got[20], got[0]] == pytest.approx([0.6, 0.6, 0.0, 0.0, 0.0])


def test_length_reward_tokenizers():
  got = tr.length_reward(None, ["abcde"], length_target=5, length_tolerance=1, tokenizer=len)
  assert got == [1.0]
  byte_tokenizer = types.SimpleNamespace(encode=lambda text: list(text.encode("utf-8")))
  assert tr.length_reward(None, ["é"], length_target=2, length_tolerance=1,
                          tokenizer=byte_tokenizer) == [1.0]
  encoding_tokenizer = types.SimpleNamespace(
      encode=lambda text: types.SimpleNamespace(ids=[1, 2, 3]))
  assert tr.length_reward(None, ["x"], length_target=3, length_tolerance=1,
                          tokenizer=encoding_tokenizer) == [1.0]


def test_length_reward_tokenizer_error_is_counted_not_raised():
  def broken(text):
    raise RuntimeError("tokenizer crashed")

  assert tr.length_reward(None, ["a", "b"], tokenizer=broken) == [0.0, 0.0]
  assert contract.error_counts() == {"length_reward": 2}
  with pytest.raises(ValueError, match="length_tolerance > 0"):
    tr.length_reward(None, ["a"], length_tolerance=0)
