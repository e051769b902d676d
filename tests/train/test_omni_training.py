"""The tiny Qwen2.5-Omni thinker as a scalar RM and a judge on a mixed
text / image / video / audio stream with broken files.

Each run must count the broken files and keep training, compile once per
(length, patch, audio frame) bucket seen, and the RM's export must reload (as
our classifier, and its trunk in transformers) and evaluate on media records.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

import omni_rrm_jax as orj
from omni_rrm_jax.core.batch_contract import RM_BATCH
from omni_rrm_jax.data.records import write_jsonl
from omni_rrm_jax.synthetic.mixture import mixed_pairs
from omni_rrm_jax.data.tokenize import ExampleEncoder
from omni_rrm_jax.eval import run as eval_run
from omni_rrm_jax.assembly import media as media_lib
from omni_rrm_jax.assembly import models as model_lib
from omni_rrm_jax.assembly import sources
from omni_rrm_jax.synthetic.corpus import corpus
from omni_rrm_jax.train.loop import run
from tests.data.audio_records import tone_pairs
from tests.data.media.media_files import tone, truncate, write_audio
from tests.e2e.runs import load_config

OMNI = "Qwen2_5OmniThinkerForConditionalGeneration"
OMNI_RM = "Qwen2_5OmniThinkerForSequenceClassification"
LENGTHS = {"rm": (96,), "sft": (576,)}
PATCH_BUCKETS = (0, 64)
FRAME_BUCKETS = (0, 200)
BROKEN = 4


@functools.cache
def data_dir() -> str:
  """A media root with train.jsonl of 60 pairs (image, video, audio clips of
  0.4-1.9 s, text) and 4 broken rows: a zero-byte PNG, a corrupt MP4, a
  truncated WAV and an escaping path."""
  root = Path(tempfile.mkdtemp(prefix="orj_omni_data_"))
  records = (mixed_pairs(20, 0, ("image", "video"), media_root=str(root)) + tone_pairs(24, 0, str(root))
             + mixed_pairs(12, 0))
  (root / "images" / "zero.png").write_bytes(b"")
  (root / "videos" / "junk.mp4").write_bytes(np.random.default_rng(0).bytes(3000))
  truncate(write_audio(root / "tone.wav", tone(1.0, 16000), 16000), root / "cut.wav", 0.5)
  broken = [dataclasses.replace(records[0], id=f"broken-{i}", modality=modality,
                                media={"images": [], "video": None, "audio": None, **m})
            for i, (modality, m) in enumerate([
                ("image", {"images": ["images/zero.png"]}),
                ("video", {"video": "videos/junk.mp4"}),
                ("audio", {"audio": "cut.wav"}),
                ("audio", {"audio": "../../etc/passwd"})])]
  records = records + broken
  order = np.random.default_rng(0).permutation(len(records))
  write_jsonl([records[i] for i in order], str(root / "train.jsonl"))
  return str(root)


def omni_config(task: str, steps: int):
  config = load_config(task, "tiny_omni")
  config.model.architecture = OMNI
  config.data.train_path = os.path.join(data_dir(), "train.jsonl")
  config.data.media_root = data_dir()
  config.data.max_length = LENGTHS[task][-1]
  config.data.buckets = LENGTHS[task]
  config.media.patch_buckets = PATCH_BUCKETS
  config.media.audio_frame_buckets = FRAME_BUCKETS
  config.data.batch_size = 8
  config.optim.update(learning_rate=1e-3, warmup_steps=1, end_lr_factor=1.0, weight_decay=0.0)
  config.train.update(num_steps=steps, log_every=1, eval_every=1000, progress_bar=False)
  config.checkpoint.update(every=1000, async_save=False)
  return config


@functools.cache
def trained(task: str) -> tuple[str, dict, list]:
  """(workdir, summary, log lines) of one epoch (8 batches of 8) of the task."""
  workdir = tempfile.mkdtemp(prefix=f"orj_omni_{task}_")
  handler = _Capture()
  logger = logging.getLogger("omni_rrm_jax.train.loop")
  logger.addHandler(handler)
  old_level = logger.level
  logger.setLevel(logging.INFO)
  try:
    summary = run(omni_config(task, 8 if task == "rm" else 4), workdir)
  finally:
    logger.removeHandler(handler)
    logger.setLevel(old_level)
  return workdir, summary, handler.lines


class _Capture(logging.Handler):
  def __init__(self):
    super().__init__()
    self.lines = []

  def emit(self, record):
    self.lines.append(record.getMessage())


def _check_run(summary, lines, steps):
  # The escaping path is skipped when read; the other broken files when decoded.
  assert "media path escapes media root: 1" in summary["bad_records"]["train"]
  invalid = summary["inputs"]["invalid"]
  assert set(invalid) <= {"bad media"}, invalid
  assert summary["step"] == steps
  # One compilation per distinct (length, patch, frame) bucket triple, logged.
  assert summary["train_compiles"] == summary["batch_shapes"]
  assert 1 <= summary["train_compiles"] <= (len(PATCH_BUCKETS) * len(FRAME_BUCKETS))
  assert any(f"{summary['train_compiles']} train step compilations" in line for line in lines)


@pytest.mark.parametrize("task", ["rm", "sft"])
def test_omni_trains_on_a_mixed_stream_with_broken_media(task):
  workdir, summary, lines = trained(task)
  steps = 8 if task == "rm" else 4
  _check_run(summary, lines, steps)
  with open(os.path.join(workdir, "summary.json"), encoding="utf-8") as f:
    history = json.load(f)["history"]
  assert len(history) == steps
  assert all(np.isfinite(h["loss"]) and h["skipped"] == 0 for h in history)
  if task == "rm":
    # A whole epoch (63 readable records, then one more): every broken file
    # was met and counted.
    assert summary["inputs"]["examples"] == 64
    assert summary["inputs"]["invalid"]["bad media"] >= BROKEN - 1
  else:
    assert all(h["num_tokens"] > 0 for h in history)


def test_omni_rm_export_reloads_and_evaluates_media(monkeypatch):
  workdir, summary, _ = trained("rm")
  out = summary["export"]
  with open(os.path.join(out, "config.json"), encoding="utf-8") as f:
    assert json.load(f)["architectures"] == [OMNI_RM]
  model = orj.from_pretrained(out)
  assert type(model).__name__ == OMNI_RM
  assert model.cfg.num_labels == 1 and model.cfg.pad_token_id is not None
  _check_transformers_reads_the_trunk(out, model)

  # evaluate_rm hands the media keys to the model (a text-only batch would
  # score the placeholder tokens' embeddings instead).
  config = omni_config("rm", 8)
  records, _, _ = sources.data_splits(config.data, workdir)
  tok, _ = model_lib.tokenizer_for(config.tokenizer, config.model.path, workdir, [])
  spec = media_lib.media_spec(config.media, model.cfg, tok,
                              root=sources.media_root(config.data, workdir),
                              model_path=config.model.path, strict=config.data.strict)
  seen_keys = set()
  scorer = eval_run.rm_rewards

  def spy(m, batch):
    seen_keys.update(batch)
    return scorer(m, batch)

  monkeypatch.setattr(eval_run, "rm_rewards", spy)
  report = eval_run.evaluate_rm(model, ExampleEncoder(tok, 96, RM_BATCH, media=spec), records,
                                batch_size=8, buckets=(96,), mesh=None, rules=(),
                                patch_buckets=PATCH_BUCKETS)
  assert {"vision_patches", "input_features", "media_index", "position_ids"} <= seen_keys
  assert report["unscored"] == {"bad media": BROKEN - 1}
  assert {"image", "video", "audio", "text"} <= set(report["per_modality"])


def _check_transformers_reads_the_trunk(folder: str, ours) -> None:
  """transformers' thinker loads the trunk: its last hidden state times our
  exported `score.weight` is our reward."""
  import torch
  import transformers
  from safetensors.numpy import load_file
  hf = transformers.Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(folder).eval()
  ids = np.asarray([[1, 5, 9, 30, 41, 7, 2]], np.int64)
  with torch.no_grad():
    hidden = hf.model(input_ids=torch.tensor(ids)).last_hidden_state[0, -1].numpy()
  score = load_file(os.path.join(folder, "model.safetensors"))["score.weight"]
  np.testing.assert_allclose(score @ hidden, np.asarray(ours(ids).logits[0]), atol=1e-4)
