"""One config schema: every task config, every variant in configs/ and every
stage of the main job is composed from config/sections.py, no leaf declared twice."""

import importlib.util
import pathlib

import ml_collections
import pytest

from omni_rrm_jax.config import sections, tasks
from omni_rrm_jax.demo.config import get_config as demo_config

ROOT = pathlib.Path(__file__).resolve().parents[2]
VARIANTS = {"rm": ("tiny", "tiny_vl", "tiny_omni", "7b", "omni7b", "omni3b"),
            "sft": ("tiny", "tiny_vl", "tiny_omni", "7b", "omni7b", "omni3b"),
            "grpo": ("tiny", "judge", "policy", "judge_7b", "policy_7b", "omni7b", "omni3b"),
            "eval": ("", "rewardbench", "rewardbench2", "vl_rewardbench", "mm_rewardbench",
                     "omni_rewardbench", "pandalm"),
            "bon": ("",), "export": ("",), "construct": ("",), "serve": ("", "tiny")}


def _leaves(c, prefix=""):
  out = set()
  for key, value in c.items():
    if isinstance(value, ml_collections.ConfigDict):
      out |= _leaves(value, f"{prefix}{key}.")
    else:
      out.add(prefix + key)
  return out


def _configs_module(task):
  spec = importlib.util.spec_from_file_location(f"configs_{task}", ROOT / "configs" / f"{task}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_each_leaf_is_declared_by_one_section():
  builders = {name: f for name, f in vars(sections).items()
              if callable(f) and getattr(f, "__module__", "") == sections.__name__
              and not name.startswith("_") and name not in ("join", "model", "mesh", "rules")}
  owner = {}
  for name, build in builders.items():
    c = build()
    assert isinstance(c, ml_collections.ConfigDict), name
    for leaf in _leaves(c):
      # A fragment joined into one section may not repeat another's leaf;
      # separate top-level sections may (e.g. data.seed and omni_data.seed).
      for task, layout in tasks.TASK_SECTIONS.items():
        for section, parts in layout.items():
          if build in parts:
            key = (task, section, leaf)
            assert key not in owner, f"{leaf} declared by {owner[key]} and {name}"
            owner[key] = name


def test_join_refuses_a_leaf_declared_twice():
  with pytest.raises(ValueError, match="'seed' is declared by two fragments"):
    sections.join(sections.data_reader(), sections.omni_data())


@pytest.mark.parametrize("task", sorted(tasks.TASK_SECTIONS))
def test_task_config_is_its_sections(task):
  c = tasks.TASK_CONFIGS[task]()
  expected = {"task", *tasks.TOP_LEVEL[task]}
  for section, parts in tasks.TASK_SECTIONS[task].items():
    expected |= {f"{section}.{leaf}" for part in parts for leaf in _leaves(part())}
  assert _leaves(c) == expected
  with pytest.raises(AttributeError, match="locked"):
    # a task changes values; a new leaf would be a second schema
    c[next(iter(tasks.TASK_SECTIONS[task]))].new_leaf = 1


@pytest.mark.parametrize("task,variant", [(t, v) for t, vs in VARIANTS.items() for v in vs])
def test_every_variant_only_sets_values(task, variant):
  c = _configs_module(task).get_config(variant)
  base = tasks.TASK_CONFIGS[task]()
  assert c.task == base.task
  assert _leaves(c) == _leaves(base)


@pytest.mark.parametrize("variant", ["", "smoke"])
def test_demo_stages_are_task_configs(variant):
  c = demo_config(variant)
  for stage, task in (("rm", "rm"), ("sft", "sft"), ("grpo", "grpo"), ("eval", "eval")):
    assert c[stage].task == task
    assert _leaves(c[stage]) == _leaves(tasks.TASK_CONFIGS[task]()), stage
  assert _leaves(c.data) == _leaves(sections.omni_data())


def test_demo_stages_share_the_model_and_media():
  c = demo_config()
  assert c.rm.model.config == c.sft.model.config
  for stage in (c.sft, c.grpo, c.eval):
    assert stage.media == c.rm.media
  assert c.rm.media.preprocess.audio_chunk_seconds == 2
  assert c.rm.model.config.initializer_range == c.rm.model.audio.initializer_range == 0.06


def test_tiny_variants_ask_for_synthetic_data_by_name():
  assert tasks.rm_config().data.train_path == ""
  for task in ("rm", "sft", "grpo"):
    assert _configs_module(task).get_config("tiny").data.train_path == sections.SYNTHETIC
  assert _configs_module("rm").get_config("7b").data.train_path == ""
