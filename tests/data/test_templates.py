"""The judge's instructions: the whole format in few words."""

from __future__ import annotations

import re

import pytest

from omni_rrm_jax.data.templates import judge_instructions
from omni_rrm_jax.rewards.judgment import DIMENSIONS, JUDGMENT_KEYS, VERDICTS


@pytest.mark.parametrize("modality", ["text", "image", "video", "audio"])
def test_judge_instructions_name_every_key_and_dimension_briefly(modality):
  text = judge_instructions(modality)
  for key in JUDGMENT_KEYS:
    assert f'"{key}"' in text
  for dimension in DIMENSIONS:
    assert dimension.short.lower() in text
  assert "<think>" in text and "</think>" in text
  assert VERDICTS["A"].replace("[[A]]", "[[better]]") in text
  # It is read again with every pair: under 50 words, where the titled form had 105.
  assert len(re.findall(r"\w+", text)) < 60, text


def test_judge_instructions_point_at_the_media_only_when_there_is_some():
  assert "grounded in the image" in judge_instructions("image")
  assert "grounded in the audio clip" in judge_instructions("audio")
  assert "grounded" not in judge_instructions("text")
