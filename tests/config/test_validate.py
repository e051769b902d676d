"""Settings are checked before any work: one line per problem, naming the key."""

import math

import pytest

from omni_rrm_jax.config import tasks
from omni_rrm_jax.config.validate import batch_shards, check, problems


def _problems(config, processes=1, devices=8):
  return problems(config, process_count=processes, device_count=devices)


@pytest.mark.parametrize("task", ["rm", "sft", "grpo", "eval", "serve"])
def test_defaults_are_valid_for_one_and_two_processes(task):
  for processes in (1, 2):
    assert _problems(tasks.TASK_CONFIGS[task](), processes) == []


@pytest.mark.parametrize("key,value,needle", [
    ("data.max_length", -5, "data.max_length=-5: must be a finite number > 0"),
    ("optim.learning_rate", -1e-3, "optim.learning_rate=-0.001: must be a finite number > 0"),
    ("optim.learning_rate", math.nan, "optim.learning_rate=nan"),
    ("optim.learning_rate", math.inf, "optim.learning_rate=inf"),
    ("optim.warmup_steps", 300, "optim.warmup_steps=300: must be < the run's 300 optimizer "
     "updates"),
    ("data.buckets", (128, 64), "data.buckets=(128, 64): must be strictly increasing"),
    ("data.buckets", (32, 64), "the largest bucket must hold max_length=128"),
    ("data.batch_size", 12, "data.batch_size=12: must be a multiple of the 8 batch shards"),
    ("data.eval_batch_size", 0, "data.eval_batch_size=0: must be an integer > 0"),
    ("media.patch_buckets", (64, 0), "media.patch_buckets=(64, 0): must be strictly increasing"),
    ("checkpoint.every", 0, "checkpoint.every=0"),
    ("data.worker_count", -1, "data.worker_count=-1: must be a finite number >= 0"),
    ("data.eval_worker_count", -2, "data.eval_worker_count=-2: must be an integer >= -1"),
    ("train.max_nonfinite_streak", 0, "train.max_nonfinite_streak=0"),
    ("model.attention", "splash", "model.attention='splash': must be one of reference, xla, "
     "cudnn, flash"),
])
def test_each_bad_training_setting_is_one_line_naming_its_key(key, value, needle):
  c = tasks.rm_config()
  section, leaf = key.split(".")
  c[section][leaf] = value
  found = _problems(c)
  assert len(found) == 1 and needle in found[0], found


def test_batches_split_over_processes_and_small_batches_are_replicated():
  c = tasks.sft_config()
  c.data.batch_size = 6
  assert _problems(c, processes=4) == [
      "data.batch_size=6: must be a multiple of the 4 processes"]
  c.data.batch_size = 4  # fewer rows than the 8 batch shards: replicated, allowed
  assert _problems(c, processes=4) == []
  c.mesh.update(data=2, fsdp=2, tensor=2)
  assert batch_shards(c.mesh, c.rules, 8) == 4
  c.data.batch_size, c.data.eval_batch_size = 12, 8
  assert _problems(c) == []


def test_grpo_and_eval_settings():
  g = tasks.grpo_config()
  g.train.num_steps, g.optim.warmup_steps = 8, 10
  g.grpo.update(num_iterations=2, num_minibatches=2)  # 32 updates: the warmup fits
  assert _problems(g) == []
  g.grpo.update(num_iterations=1, num_minibatches=1)
  assert _problems(g) == ["optim.warmup_steps=10: must be < the run's 8 optimizer updates"]
  g = tasks.grpo_config()
  g.rollout.update(top_p=0.0, num_generations=0)
  g.data.prompt_bucket = -64
  assert sorted(k.split("=")[0] for k in _problems(g)) == [
      "data.prompt_bucket", "rollout.num_generations", "rollout.top_p"]
  e = tasks.eval_config()
  e.data.batch_size = 10
  assert _problems(e) == ["data.batch_size=10: must be a multiple of the 8 batch shards of the "
                          "mesh (mesh.data x mesh.fsdp)"]


def test_check_raises_one_line_per_problem():
  c = tasks.rm_config()
  c.data.max_length = -5
  with pytest.raises(ValueError, match=r"^bad setting: data.max_length=-5"):
    check(c, process_count=1, device_count=8)
  c.optim.learning_rate = math.nan
  with pytest.raises(ValueError) as e:
    check(c, process_count=1, device_count=8)
  lines = str(e.value).splitlines()
  assert lines[0] == "bad settings:" and len(lines) == 3


@pytest.mark.parametrize("key,value,needle", [
    ("tie_margin", -0.1, "report.tie_margin=-0.1: must be a finite number >= 0"),
    ("tie_margin", math.nan, "report.tie_margin=nan"),
    ("ci_samples", -1, "report.ci_samples=-1: must be an integer >= 0"),
])
def test_bad_report_setting_is_one_line(key, value, needle):
  c = tasks.eval_config()
  c.report[key] = value
  found = _problems(c)
  assert len(found) == 1 and needle in found[0], found


@pytest.mark.parametrize("task,key,value,needle", [
    ("serve", "serve.max_batch_rows", 12,
     "serve.max_batch_rows=12: must be a multiple of the 8 batch shards"),
    ("serve", "serve.port", 70000, "serve.port=70000: must be an integer in [0, 65535]"),
    ("serve", "serve.max_wait_ms", -1.0, "serve.max_wait_ms=-1.0: must be a finite number >= 0"),
    ("serve", "serve.request_timeout_s", 0.0, "serve.request_timeout_s=0.0"),
    ("serve", "judge.max_new_tokens", 0, "judge.max_new_tokens=0"),
    ("grpo", "reward.remote_url", "localhost:8000",
     "reward.remote_url='localhost:8000': must start with http:// or https://"),
    ("grpo", "reward.remote_timeout_s", 0.0, "reward.remote_timeout_s=0.0"),
    ("grpo", "grpo.reward_aggregation", "mean",
     "grpo.reward_aggregation='mean': must be one of sum, per_reward"),
    ("sft", "data.target", "policy", "data.target='policy': must be one of judgment, chosen"),
])
def test_each_bad_serving_grpo_or_sft_setting_is_one_line_naming_its_key(task, key, value, needle):
  c = tasks.TASK_CONFIGS[task]()
  section, leaf = key.split(".")
  c[section][leaf] = value
  found = _problems(c)
  assert len(found) == 1 and needle in found[0], found


@pytest.mark.parametrize("updates,needle", [
    (dict(pack_length=64), "data.pack_length=64: packed rows must hold an example of "
     "max_length=128"),
    (dict(pack_segments=0), "data.pack_segments=0: must be an integer >= 1"),
    (dict(pack_length=-1), "data.pack_length=-1: must be an integer >= 0"),
])
def test_bad_packing_settings_are_one_line(updates, needle):
  c = tasks.sft_config()
  c.data.update(pack=True, **updates)
  assert [p for p in _problems(c) if needle in p], _problems(c)


def test_packing_is_fine_for_text_and_multimodal_models():
  from omni_rrm_jax.config.sections import MULTIMODAL_ARCHITECTURES
  from omni_rrm_jax.models.architectures import ARCHITECTURES, CONTAINERS, get_architecture
  c = tasks.rm_config()
  c.data.pack = True
  assert _problems(c) == []
  c.model.architecture = "Qwen2_5OmniThinkerForConditionalGeneration"
  assert not [p for p in _problems(c) if "data.pack" in p]
  # The list names exactly the registered architectures with media inputs.
  text = ("qwen2", "qwen3", "llama")
  media = {n for n in ARCHITECTURES.names() if get_architecture(n).family not in text}
  media |= {CONTAINERS.get(n).name for n in CONTAINERS.names()}
  assert set(MULTIMODAL_ARCHITECTURES) == media


@pytest.mark.parametrize("task", ["sft", "grpo"])
def test_logits_chunk_is_a_non_negative_integer(task):
  c = tasks.TASK_CONFIGS[task]()
  for good in (0, 1, 4096):
    c.model.logits_chunk = good
    assert _problems(c) == []
  c.model.logits_chunk = -1
  assert _problems(c) == [
      "model.logits_chunk=-1: must be an integer >= 0 (positions per vocabulary-head chunk; "
      "0: all at once)"]


def test_grpo_grad_accum_divides_each_process_share_of_a_minibatch():
  g = tasks.grpo_config()  # 4 prompts x 4 samples = 16 rows per step
  g.optim.grad_accum_steps = 4
  assert _problems(g) == [] and _problems(g, processes=2) == []  # 16 and 8 rows
  g.grpo.num_minibatches = 2
  assert _problems(g) == []  # 8 rows
  found = _problems(g, processes=4)  # 2 rows per process and minibatch
  assert len(found) == 1 and found[0].startswith(
      "optim.grad_accum_steps=4: must divide each process's 2 rows of a minibatch"), found


def test_shuffle_blocks_must_stay_whole_in_every_batch():
  c = tasks.sft_config()  # batch 16
  c.data.shuffle_block = 2
  assert _problems(c) == [] and _problems(c, processes=2) == []
  assert _problems(c, processes=16) == [
      "data.shuffle_block=2: must divide the 1 rows of each process's (micro-)batch, so "
      "that no block is split"]
  c.optim.grad_accum_steps = 16
  assert len(_problems(c)) == 1
  c.optim.grad_accum_steps = 1
  c.data.group_by_modality = True
  assert _problems(c) == [
      "data.shuffle_block=2: cannot be combined with data.group_by_modality"]
  c.data.group_by_modality = False
  for bad in (0, -2):  # the schema already refuses non-integers
    c.data.shuffle_block = bad
    assert _problems(c) == [f"data.shuffle_block={bad!r}: must be an integer >= 1"]


def test_target_logits_is_a_non_negative_integer_and_not_with_packing():
  c = tasks.sft_config()
  c.model.target_logits = 128
  assert _problems(c) == []
  c.model.target_logits = -1
  assert _problems(c) == [
      "model.target_logits=-1: must be an integer >= 0 (target positions a row given to the "
      "vocabulary head; 0: all)"]
  c.model.target_logits = 128
  c.data.pack = True
  assert _problems(c) == [
      "model.target_logits=128: must be 0 with data.pack=True (a packed row holds the targets "
      "of several examples)"]


@pytest.mark.parametrize("changes,needle", [
    ({"response_probe": "right"}, "data.response_probe='right': expected two different words"),
    ({"response_probe": "right,wrong", "response_probe_weight": 0},
     "data.response_probe_weight=0: expected an integer >= 1"),
    ({"response_probe": "right,wrong", "target": "chosen"}, "needs data.target=judgment"),
    ({"response_probe": "right,wrong", "pack": True}, "cannot be combined with data.pack"),
])
def test_a_bad_response_probe_is_one_line_before_training(changes, needle):
  c = tasks.sft_config()
  c.data.update(changes)
  found = _problems(c)
  assert len(found) == 1 and needle in found[0], found
  c.data.update(response_probe="right,wrong", response_probe_weight=4, target="judgment",
                pack=False)
  assert _problems(c) == []
