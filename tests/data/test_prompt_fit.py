"""The one prompt-fitting rule (content cut from the left, framing never) and its buckets."""

import numpy as np
import pytest

from omni_rrm_jax.core.buckets import bucket_size, round_up
from omni_rrm_jax.data.prompt_fit import PromptPieces, fit_prompt
from omni_rrm_jax.data.records import PreferenceRecord
from omni_rrm_jax.data.tokenize import INVALID_REASONS
from omni_rrm_jax.rl import rollout

PIECES = PromptPieces(prefix=[1, 2], content=[10, 11, 12, 13], suffix=[3])


def test_fit_prompt_cuts_the_content_from_the_left_only():
  assert fit_prompt(PIECES, 100) == ([1, 2, 10, 11, 12, 13, 3], False)
  assert fit_prompt(PIECES, 7) == ([1, 2, 10, 11, 12, 13, 3], False)
  assert fit_prompt(PIECES, 5) == ([1, 2, 12, 13, 3], True)
  assert fit_prompt(PIECES, 3) == ([1, 2, 3], True)
  assert fit_prompt(PIECES, 2) is None  # the framing is never cut
  # A response that must fit whole takes its room first.
  assert fit_prompt(PIECES, 7, reserve=2) == ([1, 2, 12, 13, 3], True)
  assert fit_prompt(PIECES, 4, reserve=2) is None


class _Encoder:
  """Just enough of an ExampleEncoder for a text prompt."""
  media = None

  def prompt_pieces(self, messages):
    del messages
    return PIECES


def test_a_text_prompt_whose_framing_does_not_fit_is_invalid_not_over_long():
  # Before, the text prompt paths kept the framing whole past max_prompt_length,
  # and the sampler's padding failed mid-run; now the prompt is skipped and counted.
  record = PreferenceRecord(id="r", prompt="q", response_a="a", response_b="b", label="A")
  fits = rollout.encode_prompt(_Encoder(), record, "policy", max_prompt_length=5)
  np.testing.assert_array_equal(fits["prompt_ids"], [1, 2, 12, 13, 3])
  assert fits["valid"]
  too_long = rollout.encode_prompt(_Encoder(), record, "policy", max_prompt_length=2)
  assert not too_long["valid"]
  assert INVALID_REASONS[too_long["invalid_reason"]] == "prompt too long"
  assert len(too_long["prompt_ids"]) == 1


def test_buckets():
  assert bucket_size(0, (8, 4)) == 4 and bucket_size(5, (4, 8)) == 8
  with pytest.raises(ValueError, match="size of 9 .* the largest patch bucket 8"):
    bucket_size(9, (4, 8), "patch")
  assert round_up(5, 4) == 8 and round_up(5, 4, max_length=6) == 6
  with pytest.raises(ValueError, match=">= 1"):
    round_up(0, 4)
