"""Default settings shared by the reward-model (`rm`) and judge SFT (`sft`) configs.

The files in `configs/` start from `base_config(task)` and set a variant.
"""

import ml_collections

from omni_rrm_jax.sharding.config import mesh_config, rules_config
from omni_rrm_jax.train.task_kind import task_kind


def base_config(task: str) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = task
  c.seed = 0

  c.model = ml_collections.ConfigDict()
  c.model.architecture = ("Qwen2ForSequenceClassification" if task_kind(task).classifier
                          else "Qwen2ForCausalLM")
  c.model.path = ""  # a Hugging Face folder; empty: random init from model.config
  c.model.config = ml_collections.ConfigDict(dict(
      hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
      num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True,
      num_labels=1))
  # The vision tower of a multimodal architecture (Qwen2_5_VLForConditionalGeneration,
  # Qwen2_5OmniThinkerForConditionalGeneration) built from scratch; ignored by
  # text architectures and by checkpoints. out_hidden_size follows
  # model.config.hidden_size; for the Omni thinker tokens_per_second becomes
  # its position_id_per_seconds.
  c.model.vision = ml_collections.ConfigDict(dict(
      depth=2, hidden_size=32, intermediate_size=64, num_heads=4, patch_size=14,
      temporal_patch_size=2, spatial_merge_size=2, window_size=56, fullatt_block_indexes=(1,),
      tokens_per_second=2))
  # The audio tower of the Omni thinker built from scratch (transformers'
  # Qwen2_5OmniAudioEncoderConfig fields); output_dim follows
  # model.config.hidden_size. num_mel_bins must match the features (128, as
  # the released checkpoints); windows hold 2 * n_window log-mel frames
  # (100 frames a second).
  c.model.audio = ml_collections.ConfigDict(dict(
      d_model=32, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64,
      num_mel_bins=128, n_window=50, max_source_positions=1500))
  c.model.dtype = "float32"
  c.model.param_dtype = "float32"
  c.model.remat = False

  c.tokenizer = ""  # a tokenizer folder; empty: model.path's, or trained on the data

  c.data = ml_collections.ConfigDict()
  c.data.train_path = ""  # empty: generate synthetic pairs into the workdir
  c.data.train_format = "auto"
  c.data.eval_path = ""
  c.data.eval_format = "auto"
  c.data.synthetic_kinds = "colour"  # comma-separated: colour,sum (text), image,video,audio (media)
  c.data.synthetic_train = 2000
  c.data.synthetic_eval = 200
  c.data.media_root = ""  # media paths resolve under it; synthetic media: the workdir's
  # Media of multimodal models: patches per row are padded to one of these
  # (multiples of merge_size²; 0 lets batches without media skip the vision
  # encoder). The largest caps an example's media; each distinct
  # (length bucket, patch bucket) pair is one compilation.
  c.data.patch_buckets = (0, 64)
  # Audio clips of models with an audio encoder: log-mel frames per row are
  # padded to one of these (100 frames a second; 0 lets batches without audio
  # skip the audio encoder). The largest caps a clip (longer: "media too
  # long"; data.media.max_audio_seconds cuts instead); each distinct
  # (length, patch, frame) bucket triple is one compilation.
  c.data.audio_frame_buckets = (0, 200)
  # Overrides of the media preprocessing (data/media/config.py MediaConfig),
  # e.g. the pixel and frame limits; the checkpoint's preprocessor_config.json
  # (if any) comes first. The defaults suit the tiny configs.
  c.data.media = ml_collections.ConfigDict(dict(
      image_min_pixels=56 * 56, image_max_pixels=112 * 112, video_min_pixels=56 * 56,
      video_max_pixels=56 * 56, video_max_frames=4, video_fps=2.0))
  c.data.strict = False  # True: the first bad record stops the run
  c.data.max_record_bytes = 4 * 2**20  # a longer row is skipped ("record too large"); 0: no limit
  c.data.max_length = 128
  c.data.buckets = (64, 128)
  c.data.batch_size = 16  # global, across all processes
  c.data.eval_batch_size = 32
  c.data.worker_count = 0
  c.data.seed = 0
  # True: each training batch holds one modality (text / image / video /
  # audio), so it pads to that modality's length bucket and runs only the
  # encoders it needs (data/grouped_shuffle.py). Costs one compilation per
  # modality's bucket shape.
  c.data.group_by_modality = False
  c.data.eval_limit = 0  # 0: the whole eval set

  c.loss = ml_collections.ConfigDict(dict(margin_scale=0.0, center_coef=0.0))

  c.optim = ml_collections.ConfigDict(dict(
      learning_rate=1e-3, warmup_steps=20, end_lr_factor=0.1, weight_decay=0.01,
      b1=0.9, b2=0.95, eps=1e-8, grad_clip_norm=1.0, grad_accum_steps=1,
      # Per-module learning-rate factors, e.g. "visual=0.1,audio_tower=0.1".
      lr_scales=""))

  c.train = ml_collections.ConfigDict(dict(
      num_steps=300, log_every=20, eval_every=100, checkpoint_every=100, keep_checkpoints=2,
      max_nonfinite_streak=5, async_checkpoint=True, progress_bar=True))

  c.export = ml_collections.ConfigDict(dict(at_end=True))

  c.mesh = mesh_config()
  c.rules = rules_config()
  return c
