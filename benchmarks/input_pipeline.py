"""Input pipeline batches/s: `data.pipeline.make_dataset` vs a PyTorch DataLoader.

Writes synthetic media files to a temporary folder, at the sizes the demo uses:
PNG images of 56-112 px a side, 4-frame 56x56 MPEG-4 videos, 1-2 s WAV clips
at 16 kHz, one record each. Both sides do the same work per batch: each
record goes through `data.tokenize.ExampleEncoder.encode` (chat template,
tokens, media decoded by `data.media.encode.encode_media` with the training
defaults' media settings, placeholders expanded, vision / audio layouts and
M-RoPE positions), and `--batch_size` encoded records are padded into one
batch by `data.batching.collate` (the defaults' buckets). A tiny tokenizer
trained on the records' text stands in for the model's; the host-side model
hooks are Qwen2.5-VL's (image, video) and the Qwen2.5-Omni thinker's (audio,
`--audio_chunk_seconds`: 300 as its processor, 30 as Whisper's).

Three ways over the same records, per modality, all without shuffling, so
they build the same batches (the first round's are compared: `same_batches`,
and where not, `differences`):

  grain     `make_dataset(..., worker_count=--workers)`: the training
            pipeline itself, its read-ahead settings as they are.
  torch     a `torch.utils.data.Dataset` whose `__getitem__` encodes one
            record, read by `torch.utils.data.DataLoader(num_workers=
            --workers, batch_size=--batch_size, collate_fn=collate)`
            (PyTorch's defaults otherwise: forked workers, two batches
            prefetched per worker, the collate in the workers).
  baseline  a plain single-process loop: encode, then collate.

Rounds alternate grain, torch, baseline over the same `--records` records.
Each grain and torch round starts fresh worker processes, so none keeps
encoding ahead while another side runs. Start-up is left out of the timed part
on both sides alike: each worker's first encode (through `GatedEncoder`)
first encodes one record untimed (the one-off set-up of the media libraries),
then waits at a start gate until all of them are up; the round is timed from
then to the last batch (start-up is reported apart as `grain_startup_s` /
`torch_startup_s`), which is the rate a long training run sees. Each side's
rate is the median over `--rounds`; `ratio_vs_torch` is grain / torch and
`ratio_vs_loop` grain / baseline (at most about the number of free cores: the
workers share them with the consuming process). Prints one JSON line, with
the 1-minute load average before and after.

    python benchmarks/input_pipeline.py                  # ~4 min on 2 CPU cores
    python benchmarks/input_pipeline.py --workers 4 --records 64 --modalities audio
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import statistics
import tempfile
import threading
import time
from typing import Any

import av
import numpy as np
import soundfile
from PIL import Image
from transformers import AutoTokenizer

from omni_rrm_jax.core.batch_contract import RM_BATCH
from omni_rrm_jax.core.huge_pages import huge_pages_asked
from omni_rrm_jax.data.batching import collate
from omni_rrm_jax.data.media.config import MediaConfig
from omni_rrm_jax.data.media_batching import MediaSpec, media_token_ids
from omni_rrm_jax.data.pipeline import make_dataset
from omni_rrm_jax.data.records import PreferenceRecord
from omni_rrm_jax.data.tokenize import ExampleEncoder, as_arrays
from omni_rrm_jax.data.tokenizer_train import train_tiny_tokenizer
from omni_rrm_jax.models.omni_config import OmniHostInputs
from omni_rrm_jax.models.qwen2_5_vl import HostInputs

MODALITIES = ("image", "video", "audio")
# Records per round: enough for ~0.5 s or more of work per round.
RECORDS = {"image": 256, "video": 128, "audio": 64}
IMAGE_SIDES = (56, 84, 112)
VIDEO_SIDE, VIDEO_FRAMES, VIDEO_FPS = 56, 4, 2
AUDIO_RATE = 16000
# The media settings of the training defaults (config/sections.py media.preprocess).
MEDIA = dict(image_min_pixels=56 * 56, image_max_pixels=112 * 112, video_min_pixels=56 * 56,
             video_max_pixels=56 * 56, video_max_frames=4, video_fps=2.0)
# The training defaults' batching (config/sections.py data / media).
MAX_LENGTH, BUCKETS = 128, (64, 128)
PATCH_BUCKETS, AUDIO_FRAME_BUCKETS, MERGE_UNIT = (0, 64), (0, 200), 4


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


class GatedEncoder(ExampleEncoder):
  """The example encoder behind a start gate (picklable: workers get a copy).

  Worker processes start one after the other (each imports the media
  libraries), and a worker that is up early encodes ahead while the others
  start. So each worker's first call encodes `warm_up` once (untimed set-up),
  writes its ready time to `gate_dir` and waits until every worker is ready:
  encoding starts everywhere at once, and the latest ready time is when the
  timed part of a round begins.
  """

  def __init__(self, *args, warm_up: PreferenceRecord, gate_dir: str | None, workers: int,
               **kwargs):
    super().__init__(*args, **kwargs)
    self.warm_up, self.gate_dir, self.workers = warm_up, gate_dir, workers
    self._open = gate_dir is None

  def _wait_at_gate(self) -> None:
    path = os.path.join(self.gate_dir, f"ready-{os.getpid()}")
    if not os.path.exists(path):
      super().encode(self.warm_up)
      # Several reader threads may get here; each writes its own file.
      tmp = f"{path}.{threading.get_ident()}.tmp"
      with open(tmp, "w") as f:
        f.write(repr(time.time()))
      os.replace(tmp, path)  # readers never see a half-written file
    while len(_ready_times(self.gate_dir)) < self.workers:
      time.sleep(0.001)
    self._open = True

  def encode(self, record: PreferenceRecord) -> dict[str, Any]:
    if not self._open:
      self._wait_at_gate()
    return super().encode(record)


def _ready_times(gate_dir: str) -> list[float]:
  names = [n for n in os.listdir(gate_dir) if n.startswith("ready-") and "." not in n]
  times = []
  for name in names:
    with open(os.path.join(gate_dir, name)) as f:
      times.append(float(f.read()))
  return times


@dataclasses.dataclass
class Setup:
  """What both sides share for one modality."""
  records: list[PreferenceRecord]
  tokenizer: Any
  spec: MediaSpec
  batch_size: int

  def encoder(self, gate_dir: str | None, workers: int) -> GatedEncoder:
    return GatedEncoder(self.tokenizer, MAX_LENGTH, RM_BATCH, media=self.spec,
                        warm_up=self.records[0], gate_dir=gate_dir, workers=workers)

  @property
  def collate_kw(self) -> dict[str, Any]:
    return dict(kind=RM_BATCH, batch_size=self.batch_size, buckets=BUCKETS,
                pad_id=self.tokenizer.pad_token_id, patch_buckets=PATCH_BUCKETS,
                merge_unit=MERGE_UNIT, audio_frame_buckets=self.spec.audio_frame_buckets)

  @property
  def num_batches(self) -> int:
    return -(-len(self.records) // self.batch_size)


def make_setup(root: str, modality: str, n: int, cfg: MediaConfig, batch_size: int) -> Setup:
  records = write_records(root, modality, n)
  tok_dir = os.path.join(root, f"tokenizer-{modality}")
  texts = [f"{r.prompt} {r.response_a} {r.response_b}" for r in records[:8]]
  train_tiny_tokenizer(texts * 4 + ["the cat sat on the mat"] * 8, tok_dir, vocab_size=300)
  tok = AutoTokenizer.from_pretrained(tok_dir)
  ids = media_token_ids(tok)
  vl = HostInputs(image_token_id=ids["image"], video_token_id=ids["video"], spatial_merge_size=2,
                  window_size=56, patch_size=14, temporal_patch_size=2, tokens_per_second=2.0)
  if modality == "audio":
    host = OmniHostInputs(**dataclasses.asdict(vl) | dict(audio_token_id=ids["audio"],
                                                           position_id_per_seconds=25.0))
    spec = MediaSpec(root, cfg, host, max_patches=max(PATCH_BUCKETS),
                     audio_frame_buckets=AUDIO_FRAME_BUCKETS)
  else:
    spec = MediaSpec(root, cfg, vl, max_patches=max(PATCH_BUCKETS))
  return Setup(records, tok, spec, batch_size)


def grain_round(setup: Setup, workers: int) -> tuple[float, float, list]:
  """(seconds until every worker is ready, seconds from then to the last batch, batches)."""
  with tempfile.TemporaryDirectory(prefix="gate_") as gate_dir:
    encoder = setup.encoder(gate_dir if workers > 0 else None, workers)
    ds = make_dataset(setup.records, encoder, batch_size=setup.batch_size, buckets=BUCKETS,
                      pad_id=setup.tokenizer.pad_token_id, seed=0, shuffle=False, num_epochs=1,
                      worker_count=workers, patch_buckets=PATCH_BUCKETS)
    start = time.time()
    it = iter(ds)
    batches = [next(it) for _ in range(setup.num_batches)]
    # Stop at the last batch: noticing the end of the data takes the workers
    # a polling interval or more, which no training run waits for.
    end = time.time()
    if workers > 0:
      it.close()  # stops the workers before the next side runs
    ready = max(_ready_times(gate_dir)) if workers > 0 else start
  return ready - start, end - ready, batches


class Records:
  """A map-style PyTorch dataset: `__getitem__` encodes one record, as `make_dataset` does."""

  def __init__(self, records: list[PreferenceRecord], encoder: ExampleEncoder):
    self.records, self.encoder = records, encoder

  def __len__(self) -> int:
    return len(self.records)

  def __getitem__(self, index: int) -> dict[str, Any]:
    return {**as_arrays(self.encoder.encode(self.records[index])), "index": index}


def torch_round(setup: Setup, workers: int) -> tuple[float, float, list]:
  """As `grain_round`, with a PyTorch DataLoader over the same encode and collate."""
  import torch.utils.data  # here, so Grain's spawned workers do not import torch

  with tempfile.TemporaryDirectory(prefix="gate_") as gate_dir:
    encoder = setup.encoder(gate_dir if workers > 0 else None, workers)
    dataset = type("TorchRecords", (Records, torch.utils.data.Dataset), {})(setup.records,
                                                                            encoder)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=setup.batch_size, num_workers=workers,
        collate_fn=functools.partial(collate, **setup.collate_kw),
        multiprocessing_context="fork" if workers > 0 else None)
    start = time.time()
    it = iter(loader)
    batches = [next(it) for _ in range(setup.num_batches)]
    end = time.time()
    for _ in it:  # the end of the data: the loader stops its workers
      pass
    ready = max(_ready_times(gate_dir)) if workers > 0 else start
  return ready - start, end - ready, batches


def baseline_round(setup: Setup) -> float:
  """Seconds for a plain loop to encode and collate every batch in this process."""
  data = Records(setup.records, setup.encoder(None, 0))
  start = time.time()
  for first in range(0, len(data), setup.batch_size):
    rows = [data[i] for i in range(first, min(len(data), first + setup.batch_size))]
    collate(rows, **setup.collate_kw)
  return time.time() - start


def _differences(got: list[dict[str, np.ndarray]], want: list[dict[str, np.ndarray]]
                 ) -> list[str]:
  """Where two runs' batches differ: "batch/key" with the largest difference."""
  out = [] if len(got) == len(want) else [f"{len(got)} vs {len(want)} batches"]
  for step, (g, w) in enumerate(zip(got, want)):
    for key in sorted(set(g) | set(w)):
      a, b = np.asarray(g.get(key)), np.asarray(w.get(key))
      if a.shape != b.shape or a.dtype != b.dtype:
        out.append(f"{step}/{key}: {a.dtype}{list(a.shape)} vs {b.dtype}{list(b.shape)}")
      elif not np.array_equal(a, b):
        out.append(f"{step}/{key}: max |diff| {np.abs(a.astype(float) - b.astype(float)).max():.3g}")
  return out


def _ensure_absl_flags_parsed() -> None:
  # Grain's workers read absl flags; this script does not parse any.
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def _summary(batch: dict[str, Any]) -> dict[str, list[int]]:
  return {k: list(v.shape) for k, v in sorted(batch.items())}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workers", type=int, default=2, help="worker processes of both sides")
  parser.add_argument("--batch_size", type=int, default=8, help="records per batch, both sides")
  parser.add_argument("--records", type=int, default=None,
                      help=f"records per round (default: per modality, {RECORDS})")
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--modalities", default=",".join(MODALITIES))
  parser.add_argument("--audio_chunk_seconds", type=int, default=MediaConfig.audio_chunk_seconds,
                      help="every clip's features are padded to this before its own frames "
                           "are kept (the processor's chunk_length: 300 for Qwen2.5-Omni, "
                           "30 for Whisper)")
  args = parser.parse_args()
  cfg = MediaConfig(**MEDIA, audio_chunk_seconds=args.audio_chunk_seconds)
  _ensure_absl_flags_parsed()
  load_before = os.getloadavg()[0]
  results = {}
  with tempfile.TemporaryDirectory(prefix="input_pipeline_bench_") as root:
    for modality in args.modalities.split(","):
      setup = make_setup(root, modality, args.records or RECORDS[modality], cfg,
                         args.batch_size)
      seconds = {"grain": [], "torch": [], "baseline": []}
      startup = {"grain": [], "torch": []}
      first_batches = {}
      for _ in range(args.rounds):
        for side, run in (("grain", grain_round), ("torch", torch_round)):
          start_s, timed_s, batches = run(setup, args.workers)
          startup[side].append(start_s)
          seconds[side].append(timed_s)
          first_batches.setdefault(side, batches)
          example = _summary(batches[0])
          del batches
        seconds["baseline"].append(baseline_round(setup))
      # Both sides must have built the same batches (their first rounds).
      differences = _differences(first_batches["grain"], first_batches["torch"])
      del first_batches
      n = len(setup.records)
      rate = {side: n / statistics.median(s) for side, s in seconds.items()}
      results[modality] = {
          "records_per_round": n, "batches_per_round": setup.num_batches,
          "grain_records_per_s": round(rate["grain"], 1),
          "torch_records_per_s": round(rate["torch"], 1),
          "baseline_records_per_s": round(rate["baseline"], 1),
          "ratio_vs_torch": round(rate["grain"] / rate["torch"], 2),
          "ratio_vs_loop": round(rate["grain"] / rate["baseline"], 2),
          **{f"{side}_startup_s": round(statistics.median(s), 2) for side, s in startup.items()},
          **{f"{side}_s_per_round": [round(t, 3) for t in s] for side, s in seconds.items()},
          "same_batches": not differences, "differences": differences[:20],
          "batch": example}
  print(json.dumps({
      "benchmark": "input_pipeline", "workers": args.workers, "batch_size": args.batch_size,
      "rounds": args.rounds, "audio_chunk_seconds": cfg.audio_chunk_seconds,
      "per_modality": results, "cpu_count": os.cpu_count(),
      "load_avg_before": round(load_before, 2), "load_avg": round(os.getloadavg()[0], 2),
      "huge_pages": huge_pages_asked()}))


if __name__ == "__main__":
  # Both sides with the host allocator the command line uses (core/huge_pages.py).
  from omni_rrm_jax.core.huge_pages import reexec_with_huge_pages
  reexec_with_huge_pages()
  main()
