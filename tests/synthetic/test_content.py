"""The correct answer of every omni media task is what its file actually shows or sounds like.

Each check reads the written file back and measures the answer from the
pixels or samples alone (object colour, connected components, centroid,
bounding-box fill, energy runs, FFT peaks), then requires the chosen response
to state it and the rejected one not to. Teachers are noise-free here, so the
label is the truth.
"""

from __future__ import annotations

import collections
import random
import re

import av
import numpy as np
import pytest
import scipy.ndimage
import soundfile
from PIL import Image

from omni_rrm_jax.synthetic.audio import SAMPLE_RATE, tone_sequence
from omni_rrm_jax.synthetic.omni import generate_omni_pairs
from omni_rrm_jax.synthetic.shapes import COLOURS
from omni_rrm_jax.synthetic.vision import COUNT_WORDS
from omni_rrm_jax.synthetic.teachers import TeacherNoise

EXACT = TeacherNoise(score_sd=0.0, flip_prob=0.0, tie_prob=0.0, inconsistent_prob=0.0)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
  root = tmp_path_factory.mktemp("omni")
  records, _ = generate_omni_pairs(120, 5, str(root), kinds=("image", "video", "audio"),
                                   prefix="content", teacher_noise=EXACT)
  return root, records


def _chosen_rejected(record):
  pair = (record.response_a, record.response_b)
  return pair if record.label == "A" else pair[::-1]


def _assert_says(record, value):
  chosen, rejected = (t.lower() for t in _chosen_rejected(record))
  assert value in chosen, (record.id, record.subset, value, chosen)
  assert value not in rejected, (record.id, record.subset, value, rejected)


def _nearest_colour(rgb) -> str:
  return min(COLOURS, key=lambda name: np.abs(np.subtract(COLOURS[name], rgb)).sum())


def _shape_of(mask_hw: np.ndarray) -> str:
  """square / circle / triangle from the object's mask.

  A triangle standing on its base puts most of its area in the lower half of
  its bounding box; a square fills its box, a circle about pi / 4 of it.
  """
  rows, cols = np.nonzero(mask_hw)
  middle = (rows.min() + rows.max()) / 2
  if (rows < middle).sum() < 0.6 * (rows > middle).sum():
    return "triangle"
  fill = mask_hw.sum() / ((np.ptp(rows) + 1) * (np.ptp(cols) + 1))
  return "square" if fill > 0.88 else "circle"


def _foreground(frame_hwc: np.ndarray, tolerance: int) -> np.ndarray:
  """Pixels far from the frame's commonest colour (the background)."""
  flat = [tuple(p) for p in frame_hwc.reshape(-1, 3)]
  background = collections.Counter(flat).most_common(1)[0][0]
  return np.abs(frame_hwc.astype(int) - background).sum(-1) > tolerance


def _side(cy, cx, height, width) -> str:
  dy, dx = cy / height - 0.5, cx / width - 0.5
  if abs(dx) > abs(dy):
    return "left" if dx < 0 else "right"
  return "top" if dy < 0 else "bottom"


def test_images_show_the_chosen_answer(generated):
  root, records = generated
  subsets = set()
  for r in (r for r in records if r.modality == "image"):
    frame = np.asarray(Image.open(root / r.media["images"][0]).convert("RGB"))
    mask = _foreground(frame, tolerance=0)
    labels, count = scipy.ndimage.label(mask)
    colours = {tuple(p) for p in frame[mask]}
    assert len(colours) == 1, r.id  # flat, unblended shapes of one colour
    subsets.add(r.subset)
    if r.subset == "image-count":
      _assert_says(r, COUNT_WORDS[count - 1])
    elif r.subset == "image-colour":
      _assert_says(r, _nearest_colour(colours.pop()))
    elif r.subset == "image-shape":
      _assert_says(r, _shape_of(mask))
    else:
      assert r.subset == "image-position" and count == 1
      rows, cols = np.nonzero(mask)
      _assert_says(r, _side(rows.mean(), cols.mean(), *mask.shape))
  assert subsets == {"image-count", "image-colour", "image-shape", "image-position"}


def _video_frames(path) -> list[np.ndarray]:
  with av.open(str(path)) as container:
    return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def test_videos_show_the_chosen_answer(generated):
  root, records = generated
  subsets = set()
  for r in (r for r in records if r.modality == "video"):
    frames = _video_frames(root / r.media["video"])
    assert len(frames) == 4 and frames[0].shape == (56, 56, 3)
    # MPEG-4 blurs edges by a few levels; shape colours are far from the backgrounds.
    masks = [_foreground(f, tolerance=90) for f in frames]
    subsets.add(r.subset)
    if r.subset == "video-motion":
      centres = np.array([np.argwhere(m).mean(0) for m in masks])  # (row, col) per frame
      dy, dx = centres[-1] - centres[0]
      assert max(abs(dy), abs(dx)) > 20 and min(abs(dy), abs(dx)) < 3, centres
      steps = np.diff(centres[:, 1 if abs(dx) > abs(dy) else 0])
      assert (np.sign(steps) == np.sign(steps[0])).all()  # monotonic motion
      _assert_says(r, ("right" if dx > 0 else "left") if abs(dx) > abs(dy) else
                   ("down" if dy > 0 else "up"))
    else:
      assert r.subset == "video-appear"
      assert masks[0].sum() == masks[1].sum() == 0 and masks[2].sum() > 100
      core = scipy.ndimage.binary_erosion(masks[3], iterations=2)
      colour = _nearest_colour(frames[3][core].mean(0))
      _assert_says(r, f"a {colour} {_shape_of(masks[3])}")
  assert subsets == {"video-motion", "video-appear"}


def _tones(samples: np.ndarray) -> list[float]:
  """Peak frequency (Hz) of each run of sound, in order."""
  window = SAMPLE_RATE // 200  # 5 ms
  energy = np.sqrt(np.mean(samples[:len(samples) // window * window]
                           .reshape(-1, window) ** 2, axis=1))
  loud = energy > 0.05
  runs, _ = scipy.ndimage.label(loud)
  peaks = []
  for i in range(1, runs.max() + 1):
    blocks = np.flatnonzero(runs == i)
    segment = samples[blocks[0] * window:(blocks[-1] + 1) * window]
    spectrum = np.abs(np.fft.rfft(segment * np.hanning(len(segment))))
    peaks.append(np.argmax(spectrum) * SAMPLE_RATE / len(segment))
  return peaks


def test_tone_detector_on_a_known_sequence():
  peaks = _tones(tone_sequence([300.0, 450.0, 675.0], 0.2, 0.15, 0.1))
  np.testing.assert_allclose(peaks, [300, 450, 675], atol=10)


def test_audio_sounds_like_the_chosen_answer(generated):
  root, records = generated
  subsets = set()
  for r in (r for r in records if r.modality == "audio"):
    samples, rate = soundfile.read(root / r.media["audio"], dtype="float32")
    assert rate == SAMPLE_RATE and samples.ndim == 1 and len(samples) <= 2 * SAMPLE_RATE
    peaks = _tones(samples)
    subsets.add(r.subset)
    if r.subset == "audio-count":
      _assert_says(r, COUNT_WORDS[len(peaks) - 1])
    elif r.subset == "audio-direction":
      ratios = np.array(peaks[1:]) / np.array(peaks[:-1])
      assert len(peaks) >= 2 and (np.all(ratios > 1.2) or np.all(ratios < 1 / 1.2)), peaks
      _assert_says(r, "rising" if ratios[0] > 1 else "falling")
    else:
      assert r.subset == "audio-level"
      assert max(peaks) < 400 or min(peaks) > 1700, peaks
      _assert_says(r, "high" if peaks[0] > 1000 else "low")
  assert subsets == {"audio-count", "audio-direction", "audio-level"}


@pytest.mark.parametrize("task", ["image-count", "audio-count"])
def test_count_pairs_do_not_tell_the_right_count_by_their_words(task):
  # For each unordered pair of counts, the right one is the smaller as often as
  # the larger: a reader of the two answers alone stays at chance. (Drawing the
  # right count first and then a neighbour made "one" right in 2/3 of {one, two}.)
  from omni_rrm_jax.synthetic.omni import _TASK_BY_NAME
  rng = random.Random(task)
  smaller_right = collections.Counter()
  seen = collections.Counter()
  for _ in range(3000):
    q = _TASK_BY_NAME[task](rng)
    good, bad = COUNT_WORDS.index(q.good_value), COUNT_WORDS.index(q.bad_value)
    assert abs(good - bad) == 1
    pair = (min(good, bad), max(good, bad))
    seen[pair] += 1
    smaller_right[pair] += good < bad
  assert set(seen) == {(0, 1), (1, 2), (2, 3)}
  for pair, n in seen.items():
    assert abs(smaller_right[pair] / n - 0.5) < 0.05, (pair, smaller_right[pair], n)


def _colours_in_sentence(sentence: str) -> dict[str, str]:
  """{thing: colour} read from a text-reading prompt's first sentence: "a red cup" or
  "the cup is red"."""
  from omni_rrm_jax.synthetic.text import READING_COLOURS, READING_THINGS
  words = re.findall(r"[a-z]+", sentence.lower())
  found = {}
  for i, word in enumerate(words):
    if word in READING_THINGS:
      before, after = words[i - 1], words[i + 2] if i + 2 < len(words) else ""
      found[word] = before if before in READING_COLOURS else after
      assert found[word] in READING_COLOURS, (sentence, word)
  return found


def test_text_reading_is_decided_by_the_prompt_sentence_alone():
  # The chosen answer states the colour the prompt's sentence gives the thing asked
  # about, the rejected one the other thing's colour (so both answers' words are in the
  # prompt), and neither the order of mention nor a colour tells the right answer.
  from omni_rrm_jax.synthetic.omni import _TASK_BY_NAME
  rng = random.Random("text-reading")
  first_right = 0
  right_by_colour, seen_by_colour = collections.Counter(), collections.Counter()
  n = 2000
  for _ in range(n):
    q = _TASK_BY_NAME["text-reading"](rng)
    sentence, question = q.prompt.split(". ", 1)
    colours = _colours_in_sentence(sentence)
    assert len(colours) == 2 and len(set(colours.values())) == 2, q.prompt
    asked = next(t for t in colours if t in re.findall(r"[a-z]+", question.lower()))
    other = next(t for t in colours if t != asked)
    assert colours[asked] in q.good.lower() and colours[asked] not in q.bad.lower(), q
    assert colours[other] in q.bad.lower() and colours[other] not in q.good.lower(), q
    first_right += list(colours).index(asked) == 0
    for colour in colours.values():
      seen_by_colour[colour] += 1
      right_by_colour[colour] += colour == colours[asked]
  assert abs(first_right / n - 0.5) < 0.05
  for colour, seen in seen_by_colour.items():
    assert abs(right_by_colour[colour] / seen - 0.5) < 0.1, (colour, right_by_colour[colour], seen)


@pytest.mark.parametrize("task", ["text-colour", "text-opposite", "text-capital", "text-reading"])
def test_text_facts_name_the_answer_without_restating_the_question(task):
  # As a media task's fact names one fixed subject ("the shape is red"), a text task's
  # names the answer only: the judge recalls it, with no word of the prompt to copy
  # first. The rationale states the chosen answer's value in it.
  from omni_rrm_jax.synthetic.omni import _TASK_BY_NAME
  from omni_rrm_jax.synthetic.question import render_rationale
  rng = random.Random(task)
  questions = [_TASK_BY_NAME[task](rng) for _ in range(200)]
  assert len({q.fact for q in questions}) == 1, {q.fact for q in questions}
  for q in questions:
    subject_words = set(re.findall(r"[a-z]+", q.prompt.lower())) - {
        "the", "of", "is", "colour", "opposite", "capital"}
    assert not subject_words & set(re.findall(r"[a-z]+", q.fact)), (q.prompt, q.fact)
    rationale = render_rationale(q, {"A": q.good_value, "B": q.bad_value}, {"A": 8, "B": 2})
    assert (q.fact.replace("{v}", q.good_value) + "; A says " + q.good_value + ": right"
            in rationale), rationale
