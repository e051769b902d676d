"""The config sections every task is composed from; each leaf is declared here once.

A task config (`config/tasks.py`) is a set of these sections under their names
(`model`, `data`, `media`, `optim`, `train`, `checkpoint`, ...) plus a few
top-level leaves; a task changes values, never adds leaves, so a setting means
the same in every task that has it and `--config.a.b=v` reaches the same code.
`data` is joined from fragments: what every reader needs, where training
data comes from, how rows are batched, how prompts are cut (GRPO), or the one
file an evaluation reads.

Defaults are the tiny CPU settings; `configs/*.py` variants set larger ones.
"""

from __future__ import annotations

import ml_collections

from omni_rrm_jax.sharding.config import mesh_config, rules_config

SYNTHETIC = "synthetic"  # `data.train_path` value: generated pairs (synthetic_* leaves)
# The multimodal architectures (models/qwen2_5_vl.py, models/omni_config.py): their
# packed rows (data.pack) carry each segment's media and M-RoPE ids (data/packing.py).
MULTIMODAL_ARCHITECTURES = ("Qwen2_5_VLForConditionalGeneration",
                            "Qwen2_5_VLForSequenceClassification",
                            "Qwen2_5OmniThinkerForConditionalGeneration",
                            "Qwen2_5OmniThinkerForSequenceClassification",
                            "Qwen2_5OmniForConditionalGeneration")
# The text decoder's linear layers LoRA may adapt (models/lora.py:LINEAR_LAYERS).
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# How GRPO combines several reward functions (rl/update_batch.py).
REWARD_AGGREGATIONS = ("sum", "per_reward")
# What supervised fine-tuning learns to write (data/tokenize.py:SFT_TARGETS).
SFT_TARGETS = ("judgment", "chosen")


def _section(**leaves) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(leaves)


def model_source() -> ml_collections.ConfigDict:
  """Which checkpoint and at what compute precision (every task that loads a model)."""
  return _section(
      path="",  # a Hugging Face folder; empty: random init from the fields of model_init
      dtype="float32")


def model_init() -> ml_collections.ConfigDict:
  """The model a task builds when `model.path` is empty (tiny Qwen2 by default)."""
  return _section(
      architecture="Qwen2ForCausalLM",
      # The text decoder's transformers config fields.
      config=_section(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=2048, tie_word_embeddings=True,
                      initializer_range=0.02),
      # The vision tower of a multimodal architecture
      # (Qwen2_5_VLForConditionalGeneration, Qwen2_5OmniThinkerForConditionalGeneration);
      # ignored by text architectures and by checkpoints. out_hidden_size follows
      # model.config.hidden_size; for the Omni thinker tokens_per_second becomes
      # its position_id_per_seconds.
      vision=_section(depth=2, hidden_size=32, intermediate_size=64, num_heads=4,
                      patch_size=14, temporal_patch_size=2, spatial_merge_size=2,
                      window_size=56, fullatt_block_indexes=(1,), tokens_per_second=2,
                      initializer_range=0.02),
      # The audio tower of the Omni thinker (transformers'
      # Qwen2_5OmniAudioEncoderConfig fields); output_dim follows
      # model.config.hidden_size; num_mel_bins must match the features (128, as
      # the released checkpoints); windows hold 2 * n_window log-mel frames.
      audio=_section(d_model=32, encoder_layers=2, encoder_attention_heads=4,
                     encoder_ffn_dim=64, num_mel_bins=128, n_window=50,
                     max_source_positions=1500, initializer_range=0.02),
      param_dtype="float32",
      remat=False,
      # How the text decoder computes attention: "reference" (float32 logits,
      # parity with transformers), "xla" / "cudnn" (jax.nn.dot_product_attention),
      # "flash" (the Pallas kernel, for TPU), "blockwise" (the reference's
      # arithmetic one slice of rows, heads and queries at a time, no stored
      # scores: less memory, and faster on CPU for long rows), "cpu_fused" (a C++
      # kernel for CPU, built on first use: the fastest there); see
      # core/attention_impl.py.
      attention="reference",
      # The text decoder's layers stacked and run with nnx.scan: compile time
      # independent of depth, same numerics and checkpoint files.
      scan_layers=False)


def model_training() -> ml_collections.ConfigDict:
  """What of the model trains (the training tasks)."""
  return _section(
      # Module path prefixes whose parameters never train: no gradient, no
      # optimizer state, not checkpointed (e.g. ("visual", "audio_tower")).
      freeze=(),
      # Storage dtype of frozen matrices (the LoRA base, frozen towers), e.g.
      # "bfloat16" with a bfloat16 compute dtype; "": the parameter dtype.
      frozen_dtype="",
      # Positions per vocabulary-head chunk in the SFT loss and GRPO's log-probs:
      # the [B, T, V] float32 logits are never held whole, only [B, chunk, V]
      # (forward and backward). 0: all positions at once. Sequences no longer
      # than this take the plain form.
      logits_chunk=512,
      # > 0: the SFT loss runs the vocabulary head on each row's target positions
      # only, at most this many a row (an example with more targets is skipped as
      # "target too long"); a judge row's judgment is a third of it, and the
      # main job's SFT step alone took a quarter to a third less thread time
      # with it. 0: every position.
      target_logits=0)


def model() -> ml_collections.ConfigDict:
  """`model_source`, `model_init` and `model_training` together (the training tasks)."""
  return join(model_source(), model_init(), model_training())


def lora() -> ml_collections.ConfigDict:
  """Low-rank adapters on the text decoder; everything else but a score head frozen."""
  return _section(
      rank=0,  # 0: off (full training); > 0: adapters of this rank, the base frozen
      alpha=16.0,  # the adapters' output is scaled by alpha / rank
      dropout=0.0,  # dropout on the adapters' inputs in training
      targets=LORA_TARGETS)  # the text decoder's linear layers to adapt


def data_reader() -> ml_collections.ConfigDict:
  """How records are read: every task that reads a dataset."""
  return _section(
      media_root="",  # media paths resolve under it; empty: the data file's folder
      strict=False,  # True: the first bad record stops the run
      max_record_bytes=4 * 2**20,  # a longer row is skipped ("record too large"); 0: no limit
      seed=0)


def data_sources() -> ml_collections.ConfigDict:
  """Where a training task's records come from."""
  return _section(
      # A file or folder (JSONL, Parquet, ArrayRecord, HH-RLHF, LLMBar, ...), or
      # "synthetic": generated pairs of `synthetic_kinds` written into the workdir.
      train_path="",
      train_format="auto",
      eval_path="",  # empty: no held-out evaluation (synthetic: generated too)
      eval_format="auto",
      eval_limit=0,  # 0: the whole eval set
      # comma-separated: colour,sum (text), image,video (colour media), audio (tones)
      synthetic_kinds="colour",
      synthetic_train=2000,
      synthetic_eval=200,
      worker_count=0,  # Grain worker processes (0: decode in the main process)
      # Worker processes for the held-out set (-1: as worker_count). Each evaluation
      # during training reads it anew, and new workers import the stack first
      # (~5 s on 2 cores), so a small held-out set decodes faster in the main process.
      eval_worker_count=-1)


def data_batches() -> ml_collections.ConfigDict:
  """How scored or trained rows are padded and batched."""
  return _section(
      max_length=128,
      buckets=(64, 128),  # rows pad to the smallest bucket that holds them
      batch_size=16)  # global, across all processes


def data_train_batches() -> ml_collections.ConfigDict:
  """Batching choices only a training loop makes."""
  return _section(
      eval_batch_size=32,
      # True: each training batch holds one modality (text / image / video /
      # audio), so it pads to that modality's length bucket and runs only the
      # encoders it needs (data/grouped_shuffle.py). Costs one compilation per
      # modality's bucket shape.
      group_by_modality=False,
      # Consecutive training records shuffled as one block, kept whole in one
      # batch: 2 for a file of pairs each followed by its A/B-swapped twin (the
      # judge's swap augmentation, synthetic/omni.py); must divide each
      # process's share of batch_size and each accumulation microbatch.
      shuffle_block=1,
      # True: several examples share each row (with their media), each a
      # segment with its own positions and attention (data/packing.py); a
      # batch of batch_size examples takes the fewest rows of pack_length
      # tokens that hold it (a multiple of the mesh's batch shards and of
      # optim.grad_accum_steps).
      pack=False,
      pack_length=0,  # tokens per packed row; 0: the largest of data.buckets
      pack_segments=8)  # most examples in one packed row


def data_sft() -> ml_collections.ConfigDict:
  """What supervised fine-tuning learns to write (data/tokenize.py `SFT_TARGETS`)."""
  return _section(
      # "judgment": the judge prompt (both responses) -> the record's rubric
      # judgment; "chosen": the record's prompt and media -> its better response.
      target="judgment",
      # Loss weights of target words, "word:weight,..." (integer weights >= 1):
      # every target token that is one of these words (its text without spaces,
      # in any case) counts `weight` times in the SFT loss, e.g.
      # "right:4,wrong:4" for a judgment's per-response verdicts. "": all 1.
      target_weights="",
      # "GOOD,BAD" (judgment targets only): at the last token of response A and
      # of response B in the judge prompt, the vocabulary head also learns to
      # predict GOOD for the preferred response and BAD for the other (each
      # one token after a space, e.g. "right,wrong", the judgment's verdict
      # words), weighted response_probe_weight each: a per-response correctness
      # signal where each response ends, which the judgment's verdicts read.
      # The prompt's positions are never generated, so sampling is unchanged.
      # "": off. Not with data.pack.
      response_probe="",
      response_probe_weight=1)


def data_prompts() -> ml_collections.ConfigDict:
  """How GRPO builds prompts from records."""
  return _section(
      # "judge": each record becomes the judge prompt (both responses shown) and the
      # rewards see its label / teacher scores; "policy": the record's prompt alone
      # as a chat turn, the better response as the `reference` column.
      recipe="judge",
      max_prompt_length=512,  # prompt content is cut from the left beyond this
      prompt_bucket=64,  # prompts are left-padded to a multiple of this
      # Training prompts shuffled in blocks of this many consecutive records, each
      # block in one step (2: a pair followed by its A/B-swapped twin).
      shuffle_block=1)


def data_file() -> ml_collections.ConfigDict:
  """The one dataset an evaluation reads."""
  return _section(path="", format="auto", limit=0)  # limit 0: every record


def media() -> ml_collections.ConfigDict:
  """Media of multimodal models: buckets and preprocessing."""
  return _section(
      # Patches per row (images + video frames) are padded to one of these
      # (multiples of merge_size²; 0 lets batches without media skip the vision
      # encoder). The largest caps one example's media; each distinct
      # (length, patch, audio frame) bucket triple is one compilation.
      patch_buckets=(0, 64),
      # Log-mel frames per row (100 a second) of models with an audio encoder,
      # padded the same way; the largest caps a clip (longer: "media too long";
      # preprocess.max_audio_seconds cuts instead).
      audio_frame_buckets=(0, 200),
      # Overrides of the preprocessing (data/media/config.py MediaConfig fields);
      # the checkpoint's preprocessor_config.json comes first; None: not overridden.
      # The defaults suit the tiny configs.
      preprocess=_section(image_min_pixels=56 * 56, image_max_pixels=112 * 112,
                          video_min_pixels=56 * 56, video_max_pixels=56 * 56,
                          video_max_frames=4, video_fps=2.0,
                          audio_chunk_seconds=ml_collections.FieldReference(None, int)))


def optim() -> ml_collections.ConfigDict:
  """AdamW with warmup and cosine decay (train/optimizer.py)."""
  return _section(
      learning_rate=1e-3, warmup_steps=20, end_lr_factor=0.1, weight_decay=0.01,
      b1=0.9, b2=0.95, eps=1e-8, grad_clip_norm=1.0,
      grad_accum_steps=1,  # micro-batches per update (RM / SFT / each GRPO minibatch)
      lr_scales="")  # per-module learning-rate factors, e.g. "visual=0.1,audio_tower=0.1"


def loss() -> ml_collections.ConfigDict:
  """The scalar RM's Bradley-Terry extras (train/losses.py)."""
  return _section(margin_scale=0.0, center_coef=0.0)


def train() -> ml_collections.ConfigDict:
  """The training loop: length, logging, held-out evaluation, failure limit."""
  return _section(
      num_steps=300, log_every=20,
      eval_every=100,  # steps between held-out evaluations (0: only at the end)
      max_nonfinite_streak=5,  # consecutive skipped (non-finite) updates that stop a run
      progress_bar=True)


def checkpoint() -> ml_collections.ConfigDict:
  """Orbax checkpoints in the workdir; a run resumes from the newest."""
  return _section(
      every=100, keep=2, async_save=True,
      # Resuming with other settings than the saved ones (beyond run length,
      # logging, evaluation, saving, export and mesh) is refused unless True.
      allow_config_change=False)


def export() -> ml_collections.ConfigDict:
  return _section(at_end=True)  # a Hugging Face folder WORKDIR/hf after the last step


def rollout() -> ml_collections.ConfigDict:
  """GRPO sampling."""
  return _section(
      prompts_per_step=4,  # global, across processes
      num_generations=4,  # G, completions per prompt
      max_new_tokens=256, temperature=1.0, top_k=0, top_p=1.0)


def reward() -> ml_collections.ConfigDict:
  """GRPO rewards: rule functions by name, and an optional scalar reward model."""
  return _section(
      functions="judge_format:1.0",  # "name:weight,..." over omni_rrm_jax.rewards.REWARDS
      # A scalar RM folder (*ForSequenceClassification) scoring prompt+completion; a
      # multimodal one sees the prompt's media, decoded with `data.media_root` and
      # the `media` section (set it as the RM was trained).
      model_path="",
      model_weight=1.0, model_batch_size=16, model_max_length=1024, model_bucket=128,
      # An `omni-rrm serve` URL (http://host:port) scoring each round's completions with
      # one POST /score per process: a served RM's rewards, or a served judge's preference
      # for the completion over the record's reference (policy recipe); a failed or
      # timed-out call scores 0 and is counted.
      remote_url="",
      remote_weight=1.0, remote_timeout_s=60.0,
      remote_api_key_file="")  # a file holding the server's API key; empty: none


def grpo() -> ml_collections.ConfigDict:
  """GRPO advantages, loss and optimisation passes."""
  return _section(
      advantage="grpo",  # rl.advantages.ADVANTAGE_ESTIMATORS
      loss_type="grpo",  # rl.losses.POLICY_LOSSES
      epsilon_low=0.2, epsilon_high=0.2,
      delta=0.0,  # dual-clip constant (> 1); 0 disables it
      beta=0.0,  # KL to the initial policy; > 0 keeps a frozen copy of it
      kl_estimator="k3",
      num_iterations=1,  # mu: optimisation passes over each rollout batch
      num_minibatches=1,  # optimizer updates per pass
      # "sum": one advantage of the weighted total reward; "per_reward": each
      # reward function's advantage on its own, then their weighted sum.
      reward_aggregation="sum")


def shaping() -> ml_collections.ConfigDict:
  """DAPO's switches."""
  return _section(
      dynamic_sampling=False,  # drop zero-variance groups, refill from further prompts
      max_rounds=4,  # cap on rollout rounds per step when refilling
      # With dynamic sampling, a group whose rewards spread (max - min) by at most
      # this much is dropped too (0: only equal rewards).
      min_reward_spread=0.0,
      overlong_penalty=False, overlong_cache=32,  # soft penalty over the last N tokens
      mask_truncated=False)  # completions that hit max_new_tokens leave the loss


def rl_eval() -> ml_collections.ConfigDict:
  """GRPO's held-out evaluation: completions of these prompts (fixed key) scored by
  the same rewards at the start, every `train.eval_every` steps and at the end."""
  return _section(num_prompts=16)


def judge() -> ml_collections.ConfigDict:
  """How an evaluation decodes a judge's verdicts."""
  return _section(max_new_tokens=384)


def report() -> ml_collections.ConfigDict:
  """What an evaluation report adds to the accuracies (eval/metrics.py)."""
  return _section(
      tie_margin=0.0,  # a scalar RM predicts a tie when |reward A - reward B| < this
      ci_samples=1000,  # bootstrap resamples for the 95% intervals (0: no intervals)
      ci_seed=0)


def serve() -> ml_collections.ConfigDict:
  """The HTTP reward server (`omni-rrm serve`, omni_rrm_jax/serve)."""
  return _section(
      host="127.0.0.1", port=8000,  # port 0: any free port (WORKDIR/serve.json names it)
      media_root="",  # media paths in requests resolve under it; empty: no path media
      # Dynamic batching: rows of concurrent requests share one forward pass / sampler
      # call of at most max_batch_rows rows and max_batch_tokens tokens, gathered for at
      # most max_wait_ms; a call is padded to a row bucket (the mesh's batch shards x
      # 2^k, up to max_batch_rows): one compilation per row and length bucket.
      max_batch_rows=8, max_batch_tokens=8192, max_wait_ms=5.0,
      max_length=1024,  # an RM's longest sequence; a judge's longest prompt
      bucket=128,  # an RM's sequences are right-padded to a multiple of this
      max_request_bytes=16 * 2**20, max_items=256,  # larger requests: 413
      request_timeout_s=60.0,  # a request not answered by then: 504
      api_key_file="")  # a file holding the API key clients send as a Bearer token


def mesh() -> ml_collections.ConfigDict:
  return mesh_config()


def rules() -> ml_collections.ConfigDict:
  return rules_config()


def omni_data() -> ml_collections.ConfigDict:
  """The main job's generated data (synthetic/omni.py): seeded pairs of every
  modality with real media files, reconciled by two simulated teachers."""
  return _section(
      kinds="text,image,video,audio",
      # comma-separated task names (synthetic/omni.py TASK_KINDS, e.g.
      # "image-colour,video-square"); a kind none of them names takes turns over
      # all of its tasks; empty: every kind all of its tasks.
      tasks="",
      train_per_kind=3200,  # kept pairs per modality after reconciliation
      eval_per_kind=32,
      teacher_noise=0.15,  # chance that a simulated teacher misjudges a training pair
      # True: the judge SFT trains on data/train_sft.jsonl, each training pair
      # followed by its A/B-swapped twin (the RM keeps data/train.jsonl); with
      # the SFT stage's data.shuffle_block=2 the two share a batch.
      swap_twins=False,
      # "task:weight,..." (e.g. "audio-direction:2"): the judge SFT's training file
      # holds each named task's pairs weight times as often as the others (repeated
      # in turn above 1, fewer below); the RM keeps data/train.jsonl. Empty: as generated.
      sft_task_weights="",
      # The same for the scalar RM's training file (data/train_rm.jsonl when set;
      # the tokenizer still learns from data/train.jsonl, as generated).
      rm_task_weights="",
      tokenizer_vocab=1024,  # the byte-level BPE trained on the generated texts
      seed=0)  # the held-out split uses seed + 1


def endpoint() -> ml_collections.ConfigDict:
  """One OpenAI-compatible chat endpoint (`POST {url}/chat/completions`)."""
  return _section(
      url="",  # e.g. http://127.0.0.1:8000/v1
      model="",  # the request's "model" field
      api_key_env="",  # the environment variable holding its API key; empty: no key
      concurrency=8,  # requests in flight at once
      requests_per_second=0.0,  # 0: no limit
      timeout=120.0,  # seconds per request
      max_retries=4,  # after a 429 / 5xx / timeout / broken reply, each after a backoff
      backoff=1.0,  # seconds before the first retry, doubled for each further one
      max_tokens=1024, temperature=0.0)


def construct() -> ml_collections.ConfigDict:
  """Preference pairs built from live models: responses from a strong and a weak
  endpoint, judged with the rubric by two teacher endpoints in both A/B orders,
  kept where the teachers agree (`construct/`)."""
  return _section(
      prompts_path="",  # JSONL of {"id", "prompt", "media": {...}} (media under data.media_root)
      # Each written pair's A/B order is a coin flip seeded by data.seed and its id.
      strong=endpoint(), weak=endpoint(), teacher_1=endpoint(), teacher_2=endpoint())


def join(*fragments: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """One section from fragments that share no leaf (a shared one is an error)."""
  out = ml_collections.ConfigDict()
  for fragment in fragments:
    for key, value in fragment.items(preserve_field_references=True):
      if key in out:
        raise ValueError(f"config leaf {key!r} is declared by two fragments")
      out[key] = value
  return out
