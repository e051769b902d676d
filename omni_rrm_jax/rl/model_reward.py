"""A scalar reward model as a GRPO reward function, scored in batches on device.

  rm = ModelReward("/runs/rm/hf", batch_size=16, max_length=1024, mesh=mesh)
  scores = rm(prompts, completions)      # list[float], the RM's logit per completion

The folder is any `*ForSequenceClassification` Hugging Face checkpoint with one
label (ours: a `rm` run's `WORKDIR/hf` export). Each (prompt, completion) is
the conversation the RM was trained on (`data.templates.rm_messages`: the
prompt as the user turn, the completion as the assistant turn), tokenized as
`data.tokenize.ExampleEncoder` does for RM training; a prompt too long for
`max_length` loses its oldest content first, as in training. Sequences are
right-padded into length buckets and fixed-size batches, so a run compiles
a few shapes only.

It lives in `rl/` rather than `rewards/` because it runs a JAX model, and
`rewards/` stays JAX-free. Text only: media in a prompt is not shown to the RM.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from omni_rrm_jax.data.tokenize import ExampleEncoder
from omni_rrm_jax.models.pretrained import from_pretrained
from omni_rrm_jax.rewards.contract import as_text, completion_list
from omni_rrm_jax.rl.rollout import local_rows
from omni_rrm_jax.sampling.prompts import bucket_length
from omni_rrm_jax.sharding.batch import to_global
from omni_rrm_jax.sharding.rules import DEFAULT_RULES, Rules, activation_sharding


def _user_messages(prompt: Any) -> list[dict[str, Any]]:
  """A prompt as chat messages ending in the user turn: a string is one user turn."""
  if isinstance(prompt, str):
    return [{"role": "user", "content": prompt}]
  if isinstance(prompt, (list, tuple)) and prompt and isinstance(prompt[-1], dict):
    return [dict(m) for m in prompt]
  return [{"role": "user", "content": as_text(prompt)}]


def _text_only(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
  out = []
  for m in messages:
    content = m["content"]
    if not isinstance(content, str):
      content = "".join(p.get("text", "") for p in content if p.get("type") == "text")
    out.append({**m, "content": content})
  return out


class ModelReward:
  """`(prompts, completions, **columns) -> list[float]` from a scalar RM folder.

  Args:
    path: the RM folder (config.json, safetensors, tokenizer files).
    batch_size: rows per forward pass (a multiple of the mesh's batch axes).
    max_length: the longest sequence scored; longer prompts are cut from the left.
    bucket: sequences are right-padded to a multiple of this (capped at
      `max_length`); with several processes every batch is padded to
      `max_length`, so all processes run the same shapes.
    tokenizer: a tokenizer folder; default: `path`.
    mesh: device mesh for the RM's parameters and batches.
    rules: logical -> mesh axis rules.
    dtype: compute dtype.
  """

  def __init__(self, path: str, *, batch_size: int = 16, max_length: int = 1024,
               bucket: int = 128, tokenizer: str | None = None, mesh=None,
               rules: Rules = DEFAULT_RULES, dtype: str = "float32"):
    from transformers import AutoTokenizer

    model = from_pretrained(path, mesh=mesh, rules=rules, dtype=dtype)
    if not model.cfg.architecture.endswith("ForSequenceClassification") or model.cfg.num_labels != 1:
      raise ValueError(f"{path}: a reward model must be a *ForSequenceClassification with "
                       f"num_labels=1, got {model.cfg.architecture} with {model.cfg.num_labels}")
    tok = AutoTokenizer.from_pretrained(tokenizer or path)
    self.pad_id = model.cfg.pad_token_id if model.cfg.pad_token_id is not None else tok.pad_token_id
    if self.pad_id is None:
      raise ValueError(f"{path}: neither config.json nor the tokenizer names a pad token")
    self.encoder = ExampleEncoder(tok, max_length, "rm")
    self.batch_size, self.max_length, self.bucket = batch_size, max_length, bucket
    self.mesh, self.rules = mesh, tuple(rules)
    self.__name__ = "model_reward"
    self._graphdef, self._params = nnx.split(model)
    graphdef, mesh_, rules_ = self._graphdef, mesh, self.rules

    @jax.jit
    def score(params, ids_bt, mask_bt):
      with activation_sharding(mesh_, rules_):
        return nnx.merge(graphdef, params)(ids_bt, attention_mask=mask_bt).logits[:, 0].astype(
            jnp.float32)

    self._score = score

  def encode(self, prompt: Any, completion: Any) -> list[int]:
    """The token ids the RM scores for one (prompt, completion)."""
    messages = _text_only(_user_messages(prompt))
    pieces = self.encoder.prompt_pieces(messages)
    response = self.encoder.response_ids(messages, as_text(completion))[-self.max_length:]
    budget = self.max_length - len(response) - len(pieces.prefix) - len(pieces.suffix)
    content = pieces.content[max(len(pieces.content) - budget, 0):] if budget > 0 else []
    ids = pieces.prefix + content + pieces.suffix + response
    return ids[-self.max_length:]

  def score_ids(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
    """RM scores [n] of token sequences, in batches of `batch_size`."""
    out = []
    multi = jax.process_count() > 1
    for start in range(0, len(sequences), self.batch_size):
      chunk = [list(s) for s in sequences[start:start + self.batch_size]]
      n = len(chunk)
      chunk += [chunk[0]] * (self.batch_size - n)  # filler rows keep the shape fixed
      t = self.max_length if multi else bucket_length(
          max(len(s) for s in chunk), self.bucket, self.max_length)
      ids = np.full((self.batch_size, t), self.pad_id, np.int32)
      mask = np.zeros((self.batch_size, t), np.int32)
      for row, s in enumerate(chunk):
        ids[row, :len(s)], mask[row, :len(s)] = s, 1
      batch = {"ids": ids, "mask": mask}
      if self.mesh is not None:
        batch = to_global(batch, self.mesh, self.rules)
      scores = self._score(self._params, batch["ids"], batch["mask"])
      out.append(local_rows(scores)[:n])
    return np.concatenate(out) if out else np.zeros((0,), np.float32)

  def __call__(self, prompts: Any, completions: Any, **columns: Any) -> list[float]:
    del columns
    completions = completion_list(completions)
    prompts = list(prompts) if isinstance(prompts, (list, tuple)) else [prompts]
    if len(prompts) != len(completions):
      raise ValueError(f"{len(prompts)} prompts for {len(completions)} completions")
    ids = [self.encode(p, c) for p, c in zip(prompts, completions)]
    return [float(x) for x in self.score_ids(ids)]
