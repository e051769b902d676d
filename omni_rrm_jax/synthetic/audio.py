"""Audio omni tasks: tone sequences written as 16 kHz mono WAV files.

A clip is silence-separated sine tones (each with 10 ms fades, so there are no
clicks and the silence between tones is exact zero), at most `MAX_SECONDS`
long, written as 16-bit PCM by soundfile (same samples, same bytes). The tasks:

  audio-count      how many tones (1-4), all at one pitch     one / two / three / four
  audio-direction  whether 2-4 tones rise or fall in pitch,   rising / falling
                   each step at least a factor 1.25
  audio-level      whether a tone (played once or twice) is   high / low
                   high (1.8-3 kHz) or low (200-350 Hz)

The wrong count is one more or one fewer, drawn so that each of the two
counts is right equally often (`question.count_pair`); the other tasks have two
answers.
"""

from __future__ import annotations

import functools
import random
from typing import Sequence

import numpy as np
import soundfile

from omni_rrm_jax.synthetic.question import Question, Task, answer_pair, count_pair

SAMPLE_RATE = 16000
MAX_SECONDS = 2.0
AMPLITUDE = 0.4
FADE_SECONDS = 0.01
COUNT_WORDS = ("one", "two", "three", "four")
LOW_HZ = (200.0, 250.0, 300.0, 350.0)
HIGH_HZ = (1800.0, 2200.0, 2600.0, 3000.0)
MID_HZ = (440.0, 523.0, 659.0, 784.0)


def tone_sequence(freqs_hz: Sequence[float], tone_seconds: float, gap_seconds: float,
                  lead_seconds: float, rate: int = SAMPLE_RATE) -> np.ndarray:
  """float32 [samples]: `lead` silence, then each tone followed by `gap` silence
  (the last by `lead` silence instead)."""
  tone_n, gap_n, lead_n = (int(round(s * rate)) for s in (tone_seconds, gap_seconds,
                                                          lead_seconds))
  fade_n = int(round(FADE_SECONDS * rate))
  envelope = np.ones(tone_n)
  envelope[:fade_n] = np.linspace(0.0, 1.0, fade_n)
  envelope[-fade_n:] = np.linspace(1.0, 0.0, fade_n)
  t = np.arange(tone_n) / rate
  parts = [np.zeros(lead_n)]
  for i, freq in enumerate(freqs_hz):
    parts.append(AMPLITUDE * envelope * np.sin(2 * np.pi * freq * t))
    parts.append(np.zeros(gap_n if i < len(freqs_hz) - 1 else lead_n))
  samples = np.concatenate(parts).astype(np.float32)
  if len(samples) > MAX_SECONDS * rate:
    raise ValueError(f"tone sequence of {len(samples) / rate:.2f} s exceeds {MAX_SECONDS} s")
  return samples


def write_wav(path: str, samples: np.ndarray, rate: int = SAMPLE_RATE) -> None:
  """Writes mono float samples in [-1, 1] as 16-bit PCM WAV."""
  soundfile.write(path, samples, rate, subtype="PCM_16", format="WAV")


def _write_tones(freqs_hz: tuple[float, ...], tone_seconds: float, gap_seconds: float,
                 lead_seconds: float, path: str) -> None:
  write_wav(path, tone_sequence(freqs_hz, tone_seconds, gap_seconds, lead_seconds))


def _audio(rng: random.Random, subset: str, prompts, answers, good: str, bad: str, fact: str,
           freqs_hz: Sequence[float]) -> Question:
  # Timing drawn so that four tones still fit: 0.2 + 4 * 0.25 + 3 * 0.2 = 1.8 s.
  tone_s = rng.choice((0.15, 0.2, 0.25))
  gap_s = rng.choice((0.12, 0.16, 0.2))
  lead_s = 0.1
  good_text, bad_text = answer_pair(rng, answers, good, bad)
  return Question("audio", subset, rng.choice(prompts), good_text, bad_text, good, bad, fact,
                  functools.partial(_write_tones, tuple(freqs_hz), tone_s, gap_s, lead_s),
                  ".wav")


def audio_count(rng: random.Random) -> Question:
  count, wrong = count_pair(rng, len(COUNT_WORDS))
  freq = rng.choice(MID_HZ)
  return _audio(rng, "audio-count",
                ("How many tones do you hear?", "Count the beeps in the audio."),
                ("I count {v}.", "{V}.", "The count is {v}."), COUNT_WORDS[count - 1],
                COUNT_WORDS[wrong - 1], "the count is {v}", [freq] * count)


def audio_direction(rng: random.Random) -> Question:
  direction = rng.choice(("rising", "falling"))
  ratio = rng.choice((1.25, 1.5))
  base = rng.choice(LOW_HZ + (400.0, 500.0))
  freqs = [base * ratio**i for i in range(rng.randint(2, 4))]
  if direction == "falling":
    freqs.reverse()
  return _audio(rng, "audio-direction",
                ("Does the pitch rise or fall?", "Is the melody rising or falling?"),
                ("The pitch is {v}.", "It is {v}.", "{V}."), direction,
                "falling" if direction == "rising" else "rising", "the pitch is {v}", freqs)


def audio_level(rng: random.Random) -> Question:
  level = rng.choice(("high", "low"))
  freq = rng.choice(HIGH_HZ if level == "high" else LOW_HZ)
  return _audio(rng, "audio-level", ("Is the tone high or low?", "Is this a high or a low tone?"),
                ("It is {v}.", "A {v} tone.", "The tone is {v}."), level,
                "low" if level == "high" else "high", "the tone is {v}",
                [freq] * rng.randint(1, 2))


AUDIO_TASKS: dict[str, Task] = {"audio-count": audio_count, "audio-direction": audio_direction,
                                "audio-level": audio_level}
