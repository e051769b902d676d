"""Sampling parameter validation and prompt bucketing (no model)."""

import numpy as np
import pytest

from omni_rrm_jax.sampling.logit_filters import top_k_filter, top_p_filter
from omni_rrm_jax.sampling.params import SamplingParams
from omni_rrm_jax.core.buckets import round_up
from omni_rrm_jax.sampling.prompts import left_pad, left_pad_media


@pytest.mark.parametrize("kwargs, match", [
    (dict(temperature=-1.0), "temperature"),
    (dict(top_k=-1), "top_k"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(num_samples=0), "num_samples"),
])
def test_bad_params_are_one_line_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    SamplingParams(**kwargs)


def test_params_are_hashable_and_zero_temperature_is_greedy():
  assert hash(SamplingParams()) == hash(SamplingParams())
  assert SamplingParams(temperature=0.0).greedy


def test_filters():
  logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]], np.float32))
  assert np.isfinite(np.asarray(top_k_filter(logits, 2))).tolist() == [[True, True, False, False]]
  # 0.5 + 0.3 reaches 0.8: the third token is not needed for p = 0.8, is for 0.81.
  assert np.isfinite(np.asarray(top_p_filter(logits, 0.8))).sum() == 2
  assert np.isfinite(np.asarray(top_p_filter(logits, 0.81))).sum() == 3
  assert np.isfinite(np.asarray(top_p_filter(logits, 1e-9))).sum() == 1


def test_left_pad_buckets():
  assert round_up(1, 64) == 64 and round_up(65, 64) == 128
  assert round_up(65, 64, max_length=100) == 100
  with pytest.raises(ValueError, match="exceed max_length=100"):
    round_up(101, 64, max_length=100)
  ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0, multiple=4)
  np.testing.assert_array_equal(ids, [[0, 5, 6, 7], [0, 0, 0, 8]])
  np.testing.assert_array_equal(mask, [[0, 1, 1, 1], [0, 0, 0, 1]])


def test_left_pad_media_moves_sequence_keys_flush_right():
  media = {"media_index": np.array([[0, 1, -1, -1], [-1, 0, 1, 2]]),
           "position_ids": np.arange(24).reshape(2, 3, 4) * np.array([1, 1, 0, 0]),
           "vision_patches": np.ones((2, 8, 3))}
  out = left_pad_media(media, [2, 4])
  np.testing.assert_array_equal(out["media_index"], [[-1, -1, 0, 1], [-1, 0, 1, 2]])
  np.testing.assert_array_equal(out["position_ids"][0], [[0, 0, 0, 1], [0, 0, 4, 5],
                                                         [0, 0, 8, 9]])
  np.testing.assert_array_equal(out["position_ids"][1], media["position_ids"][1])
  assert out["vision_patches"] is media["vision_patches"]
  with pytest.raises(ValueError, match="does not fit"):
    left_pad_media(media, [2, 5])
