"""The thinker's host-side text positions equal the jittable rule's."""

import numpy as np
import pytest

from omni_rrm_jax.models import omni_rope


@pytest.mark.parametrize("masked", [False, True])
def test_host_text_positions_match_the_jittable_rule(masked):
  rng = np.random.default_rng(0)
  batch, length = 4, 9
  mask_bt = (rng.random((batch, length)) < 0.7).astype(np.int32) if masked else None
  if masked:
    mask_bt[0] = 0  # a row of padding only
  ids_bt = rng.integers(5, 50, (batch, length))
  position_3bt, deltas_b = omni_rope.get_rope_index(
      ids_bt, mask_bt, image_token_id=1, video_token_id=2, audio_token_id=3,
      spatial_merge_size=2, position_id_per_seconds=25.0, seconds_per_chunk=2.0)
  want_3bt, want_b = omni_rope.text_position_ids(mask_bt, batch, length)
  assert isinstance(position_3bt, np.ndarray) and position_3bt.dtype == np.int32
  np.testing.assert_array_equal(position_3bt, np.asarray(want_3bt))
  np.testing.assert_array_equal(deltas_b, np.asarray(want_b))
