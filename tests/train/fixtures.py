"""Tiny models, optimizers and synthetic batches shared by the train tests."""

from __future__ import annotations

import numpy as np

import omni_rrm_jax as orj
from omni_rrm_jax.train.optimizer import make_optimizer
from omni_rrm_jax.train.state import init_train_state
from omni_rrm_jax.train.step import make_eval_step, make_train_step
from omni_rrm_jax.train.task_kind import task_kind

TINY = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
            num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, num_labels=1,
            tie_word_embeddings=False)
OPT = dict(learning_rate=1e-3, warmup_steps=0, total_steps=100, end_lr_factor=0.1,
           weight_decay=0.01, b1=0.9, b2=0.999, eps=1e-8, grad_clip_norm=1.0)
MARKER = 7  # the token that makes a response "chosen" in the learnable task


def tiny_model(kind: str, mesh=None, seed: int = 0, dtype: str = "float32"):
  arch = "Qwen2ForSequenceClassification" if kind == "rm" else "Qwen2ForCausalLM"
  return orj.from_config(arch, TINY, mesh=mesh, seed=seed, dtype=dtype, param_dtype="float32")


def tiny_optimizer(**overrides):
  return make_optimizer(dict(OPT, **overrides))


def _right_padded(rng: np.random.Generator, b: int, t: int, min_len: int):
  lengths = rng.integers(min_len, t + 1, size=b)
  ids = rng.integers(1, TINY["vocab_size"], size=(b, t)).astype(np.int32)
  mask = (np.arange(t)[None, :] < lengths[:, None]).astype(np.int32)
  return np.where(mask > 0, ids, 0).astype(np.int32), mask


def rm_batch(seed: int, b: int = 8, t: int = 12, marker: bool = False) -> dict:
  """A preference batch with margin and valid (so every test shares one trace).

  With `marker`, chosen responses contain the marker token and rejected ones
  never do: a preference a tiny model can learn.
  """
  rng = np.random.default_rng(seed)
  c_ids, c_mask = _right_padded(rng, b, t, t // 2)
  r_ids, r_mask = _right_padded(rng, b, t, t // 2)
  if marker:
    r_ids = np.where(r_ids == MARKER, MARKER + 1, r_ids)
    c_ids = np.where(c_ids == MARKER, MARKER + 1, c_ids)
    pos = rng.integers(0, t // 2, size=b)
    c_ids[np.arange(b), pos] = MARKER
  return {
      "chosen_input_ids": c_ids, "chosen_attention_mask": c_mask,
      "rejected_input_ids": r_ids, "rejected_attention_mask": r_mask,
      "margin": rng.uniform(0.0, 0.5, size=b).astype(np.float32),
      "valid": np.ones(b, np.float32),
  }


def sft_batch(seed: int, b: int = 8, t: int = 12) -> dict:
  """Uneven target counts: even rows (micro-batch 0 when split in two) have
  one answer token, odd rows many, so token weighting matters."""
  rng = np.random.default_rng(seed)
  ids, mask = _right_padded(rng, b, t, t - 2)
  lengths = mask.sum(1)
  prompt = np.where(np.arange(b) % 2 == 0, lengths - 1, 2)
  loss_mask = ((np.arange(t)[None, :] >= prompt[:, None]) & (mask > 0)).astype(np.int32)
  return {"input_ids": ids, "attention_mask": mask, "loss_mask": loss_mask,
          "valid": np.ones(b, np.float32)}


class Setup:
  """A one-device model, optimizer and steps (accumulating or not), compiled
  once per test session (see conftest.py)."""

  def __init__(self, kind: str):
    self.kind = task_kind(kind)
    self.model = tiny_model(kind)
    self.tx, self.schedule = tiny_optimizer()
    self.graphdef, _ = init_train_state(self.model, self.tx)
    center = 0.01 if kind == "rm" else 0.0
    self.steps = {a: make_train_step(self.graphdef, self.tx, self.kind, grad_accum_steps=a,
                                     schedule=self.schedule, max_nonfinite_streak=2,
                                     center_coef=center)
                  for a in (1, 2)}
    self.eval_step = make_eval_step(self.graphdef, self.kind, center_coef=center)

  def fresh_state(self):
    """A new state with the same initial values (the steps donate theirs)."""
    return init_train_state(self.model, self.tx, seed=0)[1]


def saved_arrays(folder) -> list[str]:
  """The key paths of the arrays in a checkpoint's `state` item (`<step>/state`)."""
  import jax
  import orbax.checkpoint as ocp
  meta = ocp.StandardCheckpointer().metadata(folder)
  tree = getattr(meta, "item_metadata", meta)
  tree = tree.tree if hasattr(tree, "tree") else tree
  return [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
