"""Plain-Python rewards: the judge's judgment format and parser, rule rewards, the registry.

Nothing here imports JAX; the metric packages load on first use. Every reward
function follows `(prompts, completions, **columns) -> list[float]` and never
raises on its inputs (see `contract`).
"""

from __future__ import annotations

from omni_rrm_jax.rewards.contract import error_counts, reset_error_counts
from omni_rrm_jax.rewards.judge_rewards import (
    judge_content, judge_format, judge_reward, judge_rubric, make_judge_reward)
from omni_rrm_jax.rewards.judgment import (
    BETTER_VALUES, DIMENSION_NAMES, DIMENSIONS, FORMAT_CHECKS, JUDGMENT_KEYS, KEY_BETTER,
    KEY_FINAL_VERDICT, KEY_REASONING, KEY_SCORE_A, KEY_SCORE_B, MAX_JUDGMENT_CHARS, VERDICTS,
    Dimension, FormatChecks, Judgment, ParseResult, parse_judgment, render_judgment)
from omni_rrm_jax.rewards.registry import REWARDS, combine
from omni_rrm_jax.rewards.rubric import rubric_coverage, rubric_score
from omni_rrm_jax.rewards.text_overlap import meteor_uses_wordnet, unicode_tokens
from omni_rrm_jax.rewards.text_rewards import (
    answer_accuracy, exact_match, extract_answer, extract_choice, length_reward, multiple_choice,
    normalize_answer, think_answer_format, think_answer_format_lenient)
from omni_rrm_jax.rewards.weighted_reward import RewardBreakdown, WeightedReward
