"""Small audio preference records for tests: WAV tones written with soundfile.

"Is the tone high or low?" over a sine tone of a given length; the pitch is
only in the audio. Each record carries scores and a strict-format rationale,
so the same records train the scalar RM and the judge.
"""

from __future__ import annotations

import os
import random

from omni_rrm_jax.data.records import PreferenceRecord
from omni_rrm_jax.rewards.judgment import render_judgment
from tests.data.media.media_files import tone, write_audio

RATE = 16000
PITCH = {"high": 1760.0, "low": 220.0}


def _rationale(better: str, worse: str, good: str, score_better: int, score_worse: int) -> str:
  reasoning = {
      "fluency_coherence": f"Both {better} and {worse} are short, fluent answers.",
      "relevance": f"{better} and {worse} both name a pitch for the tone.",
      "accuracy_completeness": f"The tone is {good}: {better} says so, {worse} does not.",
      "reasoning_quality": f"{better} matches what the audio plays, {worse} does not.",
      "safety_ethics": f"Neither {better} nor {worse} raises any safety concern.",
  }
  scores = {better: score_better, worse: score_worse}
  return render_judgment(scores["A"], scores["B"], reasoning)


def tone_pairs(n: int, seed: int, media_root: str, seconds=(0.4, 0.9, 1.3, 1.9),
               prefix: str = "tone") -> list[PreferenceRecord]:
  """`n` audio records, clips of the given lengths in turn, WAVs under `media_root/audio/`."""
  os.makedirs(os.path.join(media_root, "audio"), exist_ok=True)
  rng = random.Random(seed)
  records = []
  for i in range(n):
    level = rng.choice(sorted(PITCH))
    other = "low" if level == "high" else "high"
    rel = f"audio/{prefix}-{seed}-{i}.wav"
    write_audio(os.path.join(media_root, rel), tone(seconds[i % len(seconds)], RATE,
                                                    (PITCH[level],)), RATE)
    good_first = rng.random() < 0.5
    better, worse = ("A", "B") if good_first else ("B", "A")
    good, bad = f"The tone is {level}.", f"The tone is {other}."
    records.append(PreferenceRecord(
        id=f"{prefix}-{seed}-{i}", prompt="Is the tone high or low?",
        response_a=good if good_first else bad, response_b=bad if good_first else good,
        label=better, modality="audio", media={"images": [], "video": None, "audio": rel},
        scores={better: 9, worse: 2}, rationale=_rationale(better, worse, level, 9, 2),
        subset="tone-level"))
  return records
