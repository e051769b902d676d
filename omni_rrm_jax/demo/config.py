"""Settings of the main job: `omni-rrm demo --workdir DIR [--config.a.b=v]`.

The whole mission at toy scale on a CPU: seeded omni preference pairs with
real PNG / MP4 / WAV files, a tiny BPE tokenizer, a tiny Qwen2.5-Omni thinker
from scratch trained as a scalar RM and as a rubric judge (SFT, then GRPO),
evaluated per modality before and after GRPO, exported and reloaded.

Hardware: 2 CPU cores. Expected time: about 13 minutes (the budget is 15).
Expected result: see the README's results table (written from a run of this
config) and DIR/report.json.

Every stage writes its result under DIR/<stage>/; running the command again
reuses the stages that finished and resumes the one that did not.
"""

from __future__ import annotations

import ml_collections

OMNI = "Qwen2_5OmniThinkerForConditionalGeneration"


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  """The demo defaults; `arg` "smoke" shrinks every stage to seconds (for tests)."""
  c = ml_collections.ConfigDict()
  c.task = "demo"
  c.seed = 0

  c.data = ml_collections.ConfigDict(dict(
      kinds="text,image,video,audio",
      # Kept pairs per modality after teacher reconciliation: what the RM stage
      # reads per modality (800 x 16 / 4), so it sees each pair about once and
      # cannot fit a ranking of answers that ignores the question.
      train_per_kind=3200,
      eval_per_kind=32,
      teacher_noise=0.15,  # chance that a simulated teacher misjudges a pair
      worker_count=2,  # Grain worker processes decoding media
      # True draws each training batch from one modality: text pairs then pad
      # to ~32 tokens instead of the audio pairs' ~80 and a batch runs only its
      # encoder. Measured on the demo's RM (800 steps): about 1.4x the steps
      # per second, but 52% held-out accuracy instead of 65%, as one-modality
      # steps pull the shared decoder in turn. So off here.
      group_by_modality=False,
      tokenizer_vocab=1024))

  # The thinker's text decoder (model.config), vision and audio towers: small
  # enough to train in minutes on two cores, every part of the real model.
  c.model = ml_collections.ConfigDict()
  c.model.architecture = OMNI
  c.model.config = ml_collections.ConfigDict(dict(
      hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
      num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=True))
  # The init std of every tower's weights (text decoder, vision, audio). The
  # released configs' 0.02 suits widths of a few thousand; at width 128 it
  # shrinks the signal through each layer and training sits at ln 2 for
  # hundreds of steps (single-task image-colour RM: 250 steps at 0.02, 65 at 0.06).
  c.model.initializer_range = 0.06

  # Length buckets fit the demo's rows: RM pairs are at most ~32 (text),
  # ~50 (image, video) and ~80 (audio) tokens, judge SFT rows ~365-420; a
  # mixed batch pads to its longest row, so one working bucket each (the
  # larger one only covers max_length).
  # RM weight decay 0.1 halves the merged vision tokens' norm (7 against 15
  # after 1,500 steps with 0.01; text embeddings: 0.7); at 0.01 the image
  # rows' rewards stop depending on the response.
  c.rm = ml_collections.ConfigDict(dict(
      num_steps=800, batch_size=16, learning_rate=1e-3, warmup_steps=40, weight_decay=0.1,
      max_length=160, buckets=(80, 160)))
  # sft.init_from_rm starts the judge from the RM's trunk (score head left out).
  # Measured after an 800-step RM: held-out judge accuracy 50% vs 46% from
  # scratch (chance both), and at temperature 1 its samples keep the judgment
  # format less often (format reward 0.61 vs 0.74), so GRPO starts lower. Off.
  c.sft = ml_collections.ConfigDict(dict(
      num_steps=300, batch_size=8, learning_rate=1e-3, warmup_steps=30, weight_decay=0.01,
      max_length=576, buckets=(448, 576), init_from_rm=False))
  c.grpo = ml_collections.ConfigDict(dict(
      num_steps=10, prompts_per_step=4, num_generations=4, max_new_tokens=224,
      learning_rate=2e-5, temperature=1.0, max_prompt_length=448, prompt_bucket=448,
      eval_prompts=16, functions="judge_format:0.4,judge_content:0.4,judge_rubric:0.2"))
  c.eval = ml_collections.ConfigDict(dict(max_new_tokens=224, batch_size=16, max_length=576,
                                          buckets=(512, 576)))
  # Patches per row (image + video) and log-mel frames per row (audio) are
  # padded to these buckets; each (length, patch, frame) bucket is one compile.
  # Clips are at most 2 s: decoding them into 2 s log-mel chunks (instead of
  # Whisper's 30 s) gives the same features at a fifteenth of the work.
  c.media = ml_collections.ConfigDict(dict(patch_buckets=(0, 64), audio_frame_buckets=(0, 200),
                                           audio_chunk_seconds=2))
  c.progress_bar = True

  if arg == "smoke":
    c.data.train_per_kind = 16
    c.data.eval_per_kind = 4
    c.data.worker_count = 0
    c.model.config.update(hidden_size=32, intermediate_size=64, num_hidden_layers=1)
    c.rm.num_steps = 4
    c.sft.num_steps = 4
    c.grpo.update(num_steps=2, prompts_per_step=4, num_generations=2, max_new_tokens=16,
                  eval_prompts=4)
    c.eval.max_new_tokens = 16
    c.progress_bar = False
  elif arg:
    raise ValueError(f"unknown demo variant {arg!r}; choose '' or smoke")
  return c
