"""The media-blind control: blank files keep the originals' shape, blind records
differ from the real ones only in their media paths."""

from __future__ import annotations

import dataclasses
import os

import av
import numpy as np
import pytest
import soundfile
from PIL import Image

from omni_rrm_jax.data.media.encode import encode_media
from omni_rrm_jax.synthetic.blank_media import (BLANK_RGB, blank_copy, blind_records,
                                                video_shape)
from omni_rrm_jax.synthetic.omni import generate_omni_pairs
from tests.synthetic.test_omni import MEDIA_CFG


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
  root = tmp_path_factory.mktemp("blind")
  records, _ = generate_omni_pairs(12, 5, str(root), prefix="eval")
  return str(root), records, blind_records(records, str(root))


def _by_suffix(records, suffix):
  return [p for r in records for p in r.media_paths() if p.endswith(suffix)]


def test_blank_png_has_the_size_and_one_colour(held_out):
  root, records, blind = held_out
  for real, blank in zip(_by_suffix(records, ".png"), _by_suffix(blind, ".png"), strict=True):
    with Image.open(os.path.join(root, real)) as a, Image.open(os.path.join(root, blank)) as b:
      assert a.size == b.size and a.mode == b.mode
      pixels = np.asarray(b)
    assert (pixels == BLANK_RGB).all()


def test_blank_mp4_has_the_frames_size_rate_and_one_colour(held_out):
  root, records, blind = held_out
  for real, blank in zip(_by_suffix(records, ".mp4"), _by_suffix(blind, ".mp4"), strict=True):
    assert video_shape(os.path.join(root, blank)) == video_shape(os.path.join(root, real))
    with av.open(os.path.join(root, blank)) as container:
      frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    # One colour up to the codec's rounding, and the same in every frame.
    assert all(np.abs(f.astype(int) - BLANK_RGB).max() <= 3 for f in frames)


def test_blank_wav_has_the_length_rate_and_silence(held_out):
  root, records, blind = held_out
  for real, blank in zip(_by_suffix(records, ".wav"), _by_suffix(blind, ".wav"), strict=True):
    a, b = soundfile.info(os.path.join(root, real)), soundfile.info(os.path.join(root, blank))
    assert (a.frames, a.samplerate, a.channels, a.subtype) == (
        b.frames, b.samplerate, b.channels, b.subtype)
    samples, _ = soundfile.read(os.path.join(root, blank))
    assert not samples.any()


def test_blank_media_encode_to_the_same_shapes(held_out):
  # Same patches and log-mel frames as the real files: the control changes
  # what the encoders see, not how much of it.
  root, records, blind = held_out
  for real, blank in zip([r for r in records if r.media_paths()], blind, strict=True):
    a, b = encode_media(real, root, MEDIA_CFG), encode_media(blank, root, MEDIA_CFG)
    assert a.keys() == b.keys()
    for key in a:
      assert np.shape(a[key]) == np.shape(b[key]), (real.id, key)
      if not key.startswith(("pixel_values", "input_features")):
        np.testing.assert_array_equal(a[key], b[key])  # grids, timing, frame masks


def test_blind_records_differ_only_in_media_paths(held_out):
  root, records, blind = held_out
  with_media = [r for r in records if r.media_paths()]
  assert len(blind) == len(with_media) == 9  # text records have no media to blank
  for real, blank in zip(with_media, blind):
    assert dataclasses.replace(blank, media=real.media) == real
    assert blank.media_paths() == [f"blind/{p}" for p in real.media_paths()]
    for path in blank.media_paths():
      assert os.path.isfile(os.path.join(root, path))


def test_an_unknown_suffix_is_an_error(tmp_path):
  with pytest.raises(ValueError, match="no blank writer for '.gif'"):
    blank_copy(str(tmp_path / "a.gif"), str(tmp_path / "b.gif"))
