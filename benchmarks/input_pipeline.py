"""Media decoding records/s: the project's Grain workers vs a PyTorch DataLoader.

Writes synthetic media files to a temporary folder, at the sizes the demo uses:
PNG images of 56-112 px a side, 4-frame 56x56 MPEG-4 videos, 1-2 s WAV clips
at 16 kHz. Each record is decoded by `data.media.encode.encode_media` with the
training defaults' media settings (`config/sections.py` `media`: images 56²-112² px,
video frames 56² px, at most 4 frames; audio with the Qwen2.5-Omni
processor's defaults), keeping only the clip's own log-mel frames as the
training pipeline does before batching.

Three ways over the same records, per modality:

  grain     `grain.MapDataset.source(records).map(decode).to_iter_dataset()`
            prefetched by `--workers` worker processes, the structure of
            `data.pipeline.make_dataset` (which also tokenises and batches).
  torch     a `torch.utils.data.Dataset` whose `__getitem__` runs the same
            decode step, read by `torch.utils.data.DataLoader(num_workers=
            --workers, batch_size=None)` with a collate that passes the arrays
            on as they are (PyTorch's defaults otherwise: forked workers, two
            records prefetched per worker).
  baseline  a plain single-process loop calling the same decode per record.

Each round runs grain, torch, then baseline over the same `--records` records.
Each grain and torch round starts fresh worker processes, so none keeps
decoding ahead while another side runs. Start-up is left out of the timed part
on both sides alike: each worker decodes one record once when it starts (the
first decode's one-off set-up; Grain's workers are spawned, PyTorch's fork
from an already warm process), then waits at a start gate until all of them
are up, and the round is timed from then to the last record (start-up is
reported apart as `grain_startup_s` / `torch_startup_s`), which is the rate a
long training run sees. Each side's rate is the median over `--rounds`;
`ratio_vs_torch` is grain / torch and `ratio_vs_loop` grain / baseline (at
most about the number of free cores: the workers share them with the consuming
process). Prints one JSON line.

    python benchmarks/input_pipeline.py                  # ~3 min on 2 CPU cores
    python benchmarks/input_pipeline.py --workers 4 --records 64 --modalities audio
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import tempfile
import threading
import time
from typing import Any

import av
import grain
import numpy as np
import soundfile
from PIL import Image

from omni_rrm_jax.data.media.config import MediaConfig
from omni_rrm_jax.data.media.encode import encode_media
from omni_rrm_jax.data.records import PreferenceRecord

MODALITIES = ("image", "video", "audio")
# Records per round: enough for ~0.1 s or more of decoding per round.
RECORDS = {"image": 256, "video": 128, "audio": 24}
IMAGE_SIDES = (56, 84, 112)
VIDEO_SIDE, VIDEO_FRAMES, VIDEO_FPS = 56, 4, 2
AUDIO_RATE = 16000
# The media settings of the training defaults (config/sections.py media.preprocess).
MEDIA = dict(image_min_pixels=56 * 56, image_max_pixels=112 * 112, video_min_pixels=56 * 56,
             video_max_pixels=56 * 56, video_max_frames=4, video_fps=2.0)


def _square(height: int, width: int, left: int, rng: np.random.Generator) -> np.ndarray:
  """uint8 [H, W, 3]: a coloured square on a light background, as the demo draws."""
  frame = np.full((height, width, 3), rng.integers(200, 250), np.uint8)
  side = min(height, width) * 3 // 4
  top = (height - side) // 2
  frame[top:top + side, left:left + side] = rng.integers(0, 256, 3, dtype=np.uint8)
  return frame


def _write_png(path: str, rng: np.random.Generator) -> None:
  height, width = (int(s) for s in rng.choice(IMAGE_SIDES, size=2))
  left = int(rng.integers(0, width - min(height, width) * 3 // 4 + 1))
  Image.fromarray(_square(height, width, left, rng)).save(path)


def _write_mp4(path: str, rng: np.random.Generator) -> None:
  side = VIDEO_SIDE * 3 // 4
  colours_seed = int(rng.integers(2**31))
  with av.open(path, "w") as container:
    stream = container.add_stream("mpeg4", rate=VIDEO_FPS)
    stream.width = stream.height = VIDEO_SIDE
    stream.pix_fmt = "yuv420p"
    for i in range(VIDEO_FRAMES):
      # Same colours every frame (a fresh generator from one seed), moving right.
      frame = _square(VIDEO_SIDE, VIDEO_SIDE, (VIDEO_SIDE - side) * i // (VIDEO_FRAMES - 1),
                      np.random.default_rng(colours_seed))
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    container.mux(stream.encode())


def _write_wav(path: str, rng: np.random.Generator) -> None:
  seconds = rng.uniform(1.0, 2.0)
  t = np.arange(int(seconds * AUDIO_RATE)) / AUDIO_RATE
  wave = 0.3 * np.sin(2 * np.pi * rng.uniform(200, 2000) * t)
  soundfile.write(path, wave.astype(np.float32), AUDIO_RATE, subtype="PCM_16")


_WRITERS = {"image": ("png", _write_png), "video": ("mp4", _write_mp4),
            "audio": ("wav", _write_wav)}


def write_records(root: str, modality: str, n: int, seed: int = 0) -> list[PreferenceRecord]:
  """`n` distinct files of one modality under `root`, and a record naming each."""
  suffix, write = _WRITERS[modality]
  rng = np.random.default_rng(seed)
  records = []
  for i in range(n):
    rel = f"{modality}-{i}.{suffix}"
    write(os.path.join(root, rel), rng)
    media = {"images": [rel] if modality == "image" else [],
             "video": rel if modality == "video" else None,
             "audio": rel if modality == "audio" else None}
    records.append(PreferenceRecord(id=f"{modality}-{i}", prompt="Describe it.",
                                    response_a="A", response_b="B", label="A",
                                    modality=modality, media=media))
  return records


def decode(record: PreferenceRecord, root: str, cfg: MediaConfig) -> dict[str, np.ndarray]:
  """A record's model inputs, as far as the workers take them before batching."""
  arrays = encode_media(record, root, cfg)
  if "input_features" in arrays:
    # The pipeline sends on only the clip's frames, not the whole padded chunk.
    frames_f = arrays.pop("feature_attention_mask")[0].astype(bool)
    arrays["input_features"] = np.ascontiguousarray(arrays["input_features"][0][:, frames_f])
  return arrays


class Decode(grain.transforms.Map):
  """The decode step as a picklable Grain map, behind a start gate.

  Worker processes start one after the other (each imports the media
  libraries), and a worker that is up early decodes ahead while the others
  start. So each worker's first call writes its ready time to `gate_dir` and
  waits until every worker is ready: decoding starts everywhere at once, and
  the latest ready time is when the timed part of a round begins.
  """

  def __init__(self, root: str, cfg: MediaConfig, gate_dir: str | None, workers: int):
    self.root, self.cfg = root, cfg
    self.gate_dir, self.workers = gate_dir, workers
    self._open = gate_dir is None

  def _wait_at_gate(self) -> None:
    path = os.path.join(self.gate_dir, f"ready-{os.getpid()}")
    if not os.path.exists(path):
      # Grain's reader threads may all get here; each writes its own file.
      tmp = f"{path}.{threading.get_ident()}.tmp"
      with open(tmp, "w") as f:
        f.write(repr(time.time()))
      os.replace(tmp, path)  # readers never see a half-written file
    while len(_ready_times(self.gate_dir)) < self.workers:
      time.sleep(0.001)
    self._open = True

  def map(self, record: PreferenceRecord) -> dict[str, np.ndarray]:
    if not self._open:
      self._wait_at_gate()
    return decode(record, self.root, self.cfg)


def _warm_up(record: PreferenceRecord, root: str, cfg: MediaConfig, *worker_ids: int) -> None:
  """Worker init for both sides: one decode, so the timed part starts warm."""
  del worker_ids  # Grain passes (index, count), PyTorch (id,)
  decode(record, root, cfg)


def _ready_times(gate_dir: str) -> list[float]:
  names = [n for n in os.listdir(gate_dir) if n.startswith("ready-") and "." not in n]
  times = []
  for name in names:
    with open(os.path.join(gate_dir, name)) as f:
      times.append(float(f.read()))
  return times


def grain_round(records, root: str, cfg: MediaConfig, workers: int) -> tuple[float, float]:
  """(seconds until every worker is ready, seconds from then to the last record)."""
  with tempfile.TemporaryDirectory(prefix="gate_") as gate_dir:
    decode_step = Decode(root, cfg, gate_dir if workers > 0 else None, workers)
    ds = grain.MapDataset.source(list(records)).map(decode_step).to_iter_dataset()
    if workers > 0:
      ds = ds.mp_prefetch(grain.multiprocessing.MultiprocessingOptions(num_workers=workers),
                          worker_init_fn=functools.partial(_warm_up, records[0], root, cfg))
    start = time.time()
    it = iter(ds)
    for _ in range(len(records)):
      next(it)  # dropped at once, freeing its shared memory
    # Stop at the last record: noticing the end of the data takes the workers
    # a polling interval or more, which no training run waits for.
    end = time.time()
    it.close()  # stops the workers before the next side runs
    ready = max(_ready_times(gate_dir)) if workers > 0 else start
  return ready - start, end - ready


def _passthrough(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The DataLoader's collate: the record's arrays as they are, not as tensors."""
  return arrays


def torch_round(records, root: str, cfg: MediaConfig, workers: int) -> tuple[float, float]:
  """As `grain_round`, with a PyTorch DataLoader over the same decode step and gate."""
  import torch.utils.data  # here, so Grain's spawned workers do not import torch

  class Records(torch.utils.data.Dataset):
    """The records, each decoded by `__getitem__`: the work of the grain map."""

    def __init__(self, decode_step: Decode):
      self.records, self.decode_step = list(records), decode_step

    def __len__(self) -> int:
      return len(self.records)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
      return self.decode_step.map(self.records[index])

  with tempfile.TemporaryDirectory(prefix="gate_") as gate_dir:
    decode_step = Decode(root, cfg, gate_dir if workers > 0 else None, workers)
    # The local class is not picklable, so the workers fork (PyTorch's default on Linux).
    loader = torch.utils.data.DataLoader(
        Records(decode_step), batch_size=None, num_workers=workers, collate_fn=_passthrough,
        worker_init_fn=functools.partial(_warm_up, records[0], root, cfg),
        multiprocessing_context="fork" if workers > 0 else None)
    start = time.time()
    it = iter(loader)
    for _ in range(len(records)):
      next(it)
    end = time.time()
    for _ in it:  # the end of the data: the loader stops its workers
      pass
    ready = max(_ready_times(gate_dir)) if workers > 0 else start
  return ready - start, end - ready


def baseline_round(records, root: str, cfg: MediaConfig) -> float:
  """Seconds for a plain loop to decode every record in this process."""
  start = time.time()
  for record in records:
    decode(record, root, cfg)
  return time.time() - start


def _ensure_absl_flags_parsed() -> None:
  # Grain's workers read absl flags; this script does not parse any.
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def _summary(arrays: dict[str, Any]) -> dict[str, list[int]]:
  return {k: list(v.shape) for k, v in sorted(arrays.items())}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workers", type=int, default=2, help="Grain worker processes")
  parser.add_argument("--records", type=int, default=None,
                      help=f"records per round (default: per modality, {RECORDS})")
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--modalities", default=",".join(MODALITIES))
  parser.add_argument("--audio_chunk_seconds", type=int, default=MediaConfig.audio_chunk_seconds,
                      help="every clip's features are padded to this (the processor's "
                           "chunk_length: 300 for Qwen2.5-Omni, 30 for Whisper)")
  args = parser.parse_args()
  cfg = MediaConfig(**MEDIA, audio_chunk_seconds=args.audio_chunk_seconds)
  _ensure_absl_flags_parsed()
  modalities = args.modalities.split(",")
  results = {}
  with tempfile.TemporaryDirectory(prefix="input_pipeline_bench_") as root:
    for modality in modalities:
      records = write_records(root, modality, args.records or RECORDS[modality])
      example = _summary(decode(records[0], root, cfg))
      seconds = {"grain": [], "torch": [], "baseline": []}
      startup = {"grain": [], "torch": []}
      for _ in range(args.rounds):
        for side, run in (("grain", grain_round), ("torch", torch_round)):
          start_s, timed_s = run(records, root, cfg, args.workers)
          startup[side].append(start_s)
          seconds[side].append(timed_s)
        seconds["baseline"].append(baseline_round(records, root, cfg))
      rate = {side: len(records) / statistics.median(s) for side, s in seconds.items()}
      results[modality] = {
          "records_per_round": len(records),
          "grain_records_per_s": round(rate["grain"], 1),
          "torch_records_per_s": round(rate["torch"], 1),
          "baseline_records_per_s": round(rate["baseline"], 1),
          "ratio_vs_torch": round(rate["grain"] / rate["torch"], 2),
          "ratio_vs_loop": round(rate["grain"] / rate["baseline"], 2),
          **{f"{side}_startup_s": round(statistics.median(s), 2) for side, s in startup.items()},
          **{f"{side}_s_per_round": [round(t, 3) for t in s] for side, s in seconds.items()},
          "arrays": example}
  print(json.dumps({
      "benchmark": "input_pipeline", "workers": args.workers, "rounds": args.rounds,
      "audio_chunk_seconds": cfg.audio_chunk_seconds, "per_modality": results,
      "cpu_count": os.cpu_count(), "load_avg": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
  main()
