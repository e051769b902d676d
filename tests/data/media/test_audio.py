"""Audio decoding and log-mel features against transformers' WhisperFeatureExtractor."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import soxr
from transformers import WhisperFeatureExtractor
from transformers.audio_utils import mel_filter_bank as hf_mel_filter_bank

from omni_rrm_jax.data.media import audio as media_audio
from omni_rrm_jax.data.media.audio import load_audio, log_mel_features, process_audio
from omni_rrm_jax.data.media.config import MediaConfig
from omni_rrm_jax.data.records import BadRecord
from tests.data.media.media_files import tone, truncate, write_audio, write_mp4, write_vbr_mp3

# torch float32 STFT (transformers' path when torch is installed) against our
# float64 one: differences come from float32 rounding in low-energy bins.
TORCH_ATOL = 1e-4
# transformers' own numpy (float64) path: only our final float32 cast differs.
NUMPY_ATOL = 1e-6


def _reference(waveform, chunk_seconds):
  extractor = WhisperFeatureExtractor(feature_size=128, chunk_length=chunk_seconds)
  # What Qwen2_5OmniProcessor._process_audio passes.
  return extractor([waveform], sampling_rate=16000, padding="max_length",
                   return_attention_mask=True, return_tensors="np")


def _signals():
  rng = np.random.default_rng(0)
  t = np.arange(int(7.3 * 16000)) / 16000
  return {
      "tones_and_noise": 0.5 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3000 * t)
                         + 0.01 * rng.standard_normal(len(t)),
      "chirp": np.sin(2 * np.pi * (100 + 700 * t) * t),
      "gap": np.where((t > 1) & (t < 3), 0.0, np.sin(2 * np.pi * 500 * t)),
      "square": np.sign(np.sin(2 * np.pi * 220 * t)),
      "tiny": 0.3 * np.sin(2 * np.pi * 440 * t[:200]),
      "silence": np.zeros(8000),
  }


@pytest.mark.parametrize("name", list(_signals()))
def test_features_match_whisper_feature_extractor(name):
  waveform = _signals()[name].astype(np.float32)
  cfg = MediaConfig(audio_chunk_seconds=30)
  features, mask = log_mel_features(waveform, cfg)
  ref = _reference(waveform, 30)
  assert features.shape == (128, 3000) and features.dtype == np.float32
  np.testing.assert_allclose(features, ref["input_features"][0], rtol=0, atol=TORCH_ATOL)
  np.testing.assert_array_equal(mask, ref["attention_mask"][0])
  assert mask.dtype == np.int32 and mask.sum() == int(np.ceil(len(waveform) / 160))
  padded = np.zeros(480000, np.float32)
  padded[:len(waveform)] = waveform
  extractor = WhisperFeatureExtractor(feature_size=128)
  numpy_ref = extractor._np_extract_fbank_features(padded[None], "cpu")[0]
  np.testing.assert_allclose(features, numpy_ref, rtol=0, atol=NUMPY_ATOL)


def test_omni_chunk_of_300_seconds_and_truncation():
  # Qwen2.5-Omni's preprocessor_config has chunk_length 300: every clip is
  # padded to 30000 frames; a longer clip would be cut there.
  cfg = MediaConfig()
  assert cfg.audio_chunk_seconds == 300
  waveform = tone(3.0, 16000, freqs=(300.0, 1200.0))
  features, mask = log_mel_features(waveform, cfg)
  ref = _reference(waveform, 300)
  assert features.shape == (128, 30000)
  np.testing.assert_allclose(features, ref["input_features"][0], rtol=0, atol=TORCH_ATOL)
  np.testing.assert_array_equal(mask, ref["attention_mask"][0])
  # A clip longer than the chunk: cut at it, as the processor's truncation.
  small = MediaConfig(audio_chunk_seconds=2)
  long_clip = tone(2.5, 16000, freqs=(700.0,))
  features, mask = log_mel_features(long_clip, small)
  ref = _reference(long_clip, 2)
  np.testing.assert_allclose(features, ref["input_features"][0], rtol=0, atol=TORCH_ATOL)
  assert mask.all() and features.shape == (128, 200)


def test_mel_filter_bank_matches_transformers():
  ours = media_audio.mel_filter_bank(128, 400, 16000)
  ref = hf_mel_filter_bank(num_frequency_bins=201, num_mel_filters=128, min_frequency=0.0,
                           max_frequency=8000.0, sampling_rate=16000, norm="slaney",
                           mel_scale="slaney")
  np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-15)


def test_wav_stereo_44k_is_mixed_and_resampled(tmp_path):
  left, right = tone(1.5, 44100, freqs=(440.0,)), tone(1.5, 44100, freqs=(1000.0,))
  path = write_audio(tmp_path / "stereo.wav", np.stack([left, right], axis=1), 44100)
  cfg = MediaConfig(audio_chunk_seconds=30)
  waveform = load_audio(path, cfg)
  assert waveform.dtype == np.float32 and len(waveform) == int(np.ceil(len(left) * 160 / 441))
  # The documented resampler, applied to the mono mix of the decoded PCM.
  pcm_nc, _ = soundfile.read(str(path), dtype="float32")
  expected = soxr.resample(pcm_nc.astype(np.float64).mean(axis=1), 44100, 16000, quality="HQ")
  np.testing.assert_allclose(waveform, expected, atol=1e-6)
  # Both tones survive at the right frequencies.
  spectrum = np.abs(np.fft.rfft(waveform))
  peaks = sorted(np.argsort(spectrum)[-2:] * 16000 / len(waveform))
  np.testing.assert_allclose(peaks, [440, 1000], atol=2)
  features = process_audio(path, cfg)
  ref = _reference(waveform, 30)
  assert features["input_features"].shape == (1, 128, 3000)
  np.testing.assert_allclose(features["input_features"], ref["input_features"], rtol=0,
                             atol=TORCH_ATOL)
  np.testing.assert_array_equal(features["feature_attention_mask"], ref["attention_mask"])


@pytest.mark.parametrize("fmt", ["flac", "ogg"])
def test_other_soundfile_formats(tmp_path, fmt):
  path = write_audio(tmp_path / f"a.{fmt}", tone(1.0, 22050), 22050)
  waveform = load_audio(path, MediaConfig(audio_chunk_seconds=30))
  assert abs(len(waveform) - 16000) <= 1
  assert np.abs(waveform).max() == pytest.approx(0.3, abs=0.03)


def test_audio_track_of_an_mp4(tmp_path):
  path = write_mp4(tmp_path / "av.mp4", num_frames=20, fps=10, audio_rate=44100)
  waveform = load_audio(path, MediaConfig(audio_chunk_seconds=30))
  assert abs(len(waveform) - 32000) < 1600  # 2 s, give or take AAC priming
  spectrum = np.abs(np.fft.rfft(waveform))
  assert abs(np.argmax(spectrum) * 16000 / len(waveform) - 440) < 2


def test_long_audio_is_cut_at_max_seconds(tmp_path):
  path = write_audio(tmp_path / "long.wav", tone(12.0, 8000), 8000)
  cfg = MediaConfig(audio_chunk_seconds=30, max_audio_seconds=2.5)
  waveform = load_audio(path, cfg)
  assert len(waveform) == 40000
  out = process_audio(path, cfg)
  assert out["feature_attention_mask"].sum() == 250
  assert out["input_features"].shape == (1, 128, 3000)


def test_max_audio_seconds_cannot_exceed_the_chunk():
  with pytest.raises(ValueError, match="max_audio_seconds"):
    MediaConfig(audio_chunk_seconds=30, max_audio_seconds=31)


def test_bad_audio_files_raise_bad_record(tmp_path):
  wav = write_audio(tmp_path / "ok.wav", np.stack([tone(1.0, 44100)] * 2, axis=1), 44100)
  flac = write_audio(tmp_path / "ok.flac", tone(1.0, 44100), 44100)
  truncate(wav, tmp_path / "cut.wav", 0.5)
  truncate(wav, tmp_path / "header.wav", 0.0002)
  truncate(flac, tmp_path / "cut.flac", 0.5)
  (tmp_path / "zero.wav").write_bytes(b"")
  (tmp_path / "junk.m4a").write_bytes(np.random.default_rng(0).bytes(3000))
  write_mp4(tmp_path / "silent.mp4", num_frames=4, fps=10)
  cases = {"cut.wav": "truncated", "header.wav": "", "cut.flac": "", "zero.wav": "empty file",
           "junk.m4a": "", "silent.mp4": "no audio stream"}
  for file, detail in cases.items():
    with pytest.raises(BadRecord) as e:
      process_audio(tmp_path / file, MediaConfig(audio_chunk_seconds=30), name=f"snd/{file}")
    text = str(e.value)
    assert e.value.reason == "unreadable audio", text
    assert f"snd/{file}: " in text and detail in text
    assert "\n" not in text and str(tmp_path) not in text
  with pytest.raises(BadRecord, match="media file not found"):
    process_audio(tmp_path / "missing.wav", MediaConfig(), name="snd/missing.wav")


def _reference_pipeline(path: str) -> np.ndarray:
  """What transformers' audio loading and the Qwen2.5-Omni utilities compute:
  librosa.load(path, sr=16000) (float32 mono mix, then soxr_hq), then the
  Whisper feature extractor as the Omni processor calls it."""
  pcm_nc, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
  mono = pcm_nc.mean(axis=1)
  waveform = soxr.resample(mono, rate, 16000, quality="soxr_hq").astype(np.float32)
  return _reference(waveform, 30)["input_features"][0]


@pytest.mark.parametrize("rate,channels", [(8000, 1), (22050, 1), (44100, 2), (48000, 2)])
def test_resampled_features_match_the_reference_pipeline(tmp_path, rate, channels):
  rng = np.random.default_rng(rate)
  t = np.arange(int(2.3 * rate)) / rate
  # Speech-like content: harmonics of a gliding pitch plus noise, different per channel.
  pitch = 120 + 60 * t
  left = sum(0.2 / k * np.sin(2 * np.pi * k * pitch * t) for k in range(1, 8))
  right = 0.3 * np.sin(2 * np.pi * 700 * t) + 0.02 * rng.standard_normal(len(t))
  pcm = np.stack([left, right], 1)[:, :channels] + 0.005 * rng.standard_normal((len(t), channels))
  path = write_audio(tmp_path / f"clip_{rate}.wav", pcm.astype(np.float32), rate)
  ours = process_audio(path, MediaConfig(audio_chunk_seconds=30))["input_features"][0]
  ref = _reference_pipeline(path)
  diff = np.abs(ours - ref)
  # Only float32 rounding in low-energy bins remains (scipy's polyphase filter
  # differed from this reference by up to 0.55-0.81 in log-mel on these clips).
  assert diff.mean() < 1e-3 and diff.max() < 2e-2, (diff.mean(), diff.max())



def test_vbr_mp3_without_a_length_header_is_read_to_its_end(tmp_path):
  rate = 22050
  # Silence, noise, a tone: three bitrates in one file.
  noise = 0.5 * np.random.default_rng(0).standard_normal(rate * 15)
  samples = np.concatenate([np.zeros(rate * 15), noise, tone(15, rate)]).astype(np.float32)
  bare = write_vbr_mp3(tmp_path / "bare.mp3", samples, rate, xing=False)
  headed = write_vbr_mp3(tmp_path / "headed.mp3", samples, rate, xing=True)
  # libsndfile guesses the bare file's length from its size: the guess is off.
  assert abs(soundfile.info(str(bare)).frames / rate - 45) > 5
  cfg = MediaConfig(sampling_rate=16000, audio_chunk_seconds=90)
  for path in (bare, headed):
    audio = load_audio(path, cfg)
    assert abs(len(audio) / 16000 - 45.0) < 0.2, path.name  # all 45 s, and no more
  # With a Xing frame the length is stated, so a cut file is still caught.
  truncate(headed, tmp_path / "cut.mp3", 0.5)
  with pytest.raises(BadRecord, match="truncated"):
    load_audio(tmp_path / "cut.mp3", cfg)
