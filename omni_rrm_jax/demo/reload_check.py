"""Reloading an exported folder: our loader and, when torch is installed, transformers.

The judge folder (a Qwen2.5-Omni thinker) must give the same logits under
transformers' `Qwen2_5OmniThinkerForConditionalGeneration` as under
`from_pretrained`; the scalar RM folder (our Omni classifier: the thinker's
trunk plus `score.weight`) must give the same score when transformers' thinker
computes the trunk and the score head is applied to its last hidden state.
"""

from __future__ import annotations

import json
import os

import numpy as np

from omni_rrm_jax.data.readers import read_records
from omni_rrm_jax.data.templates import judge_messages, rm_messages

TOLERANCE = 1e-4


def _text_prompt_ids(tokenizer, eval_path: str, is_rm: bool) -> np.ndarray:
  """Token ids [1, T] of the first held-out text record (judge prompt or RM turn)."""
  records = [r for r in read_records(eval_path, "native") if r.modality == "text"]
  if not records:
    raise ValueError(f"{eval_path}: no text record to check the export with")
  record = records[0]
  messages = (rm_messages(record, record.response_a) if is_rm else judge_messages(record))
  text = tokenizer.apply_chat_template(messages, tokenize=False,
                                       add_generation_prompt=not is_rm)
  return np.asarray([tokenizer(text, add_special_tokens=False)["input_ids"]], np.int32)


def _transformers_outputs(folder: str, ids: np.ndarray, is_rm: bool):
  """(logits [1, T, V] or last hidden [1, T, E]) from transformers; None without torch."""
  try:
    import torch
    import transformers
  except ImportError:
    return None
  with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
    architecture = json.load(f)["architectures"][0]
  if architecture.startswith("Qwen2_5OmniThinker"):
    cls = transformers.Qwen2_5OmniThinkerForConditionalGeneration
  else:
    cls = transformers.AutoModelForCausalLM
  # The RM folder's score head is not part of the thinker transformers builds
  # (we compare the trunk's hidden states); its load report would say so on the
  # console at every run.
  verbosity = transformers.logging.get_verbosity()
  transformers.logging.set_verbosity_error()
  try:
    model = cls.from_pretrained(folder, dtype=torch.float32).eval()
  finally:
    transformers.logging.set_verbosity(verbosity)
  with torch.no_grad():
    out = model(input_ids=torch.from_numpy(ids.astype(np.int64)),
                attention_mask=torch.ones(ids.shape, dtype=torch.long),
                output_hidden_states=is_rm)
  if is_rm:
    return out.hidden_states[-1].float().numpy()
  return out.logits.float().numpy()


def reload_check(folder: str, tokenizer_dir: str, eval_path: str) -> dict:
  """Loads `folder` with `from_pretrained` (and transformers) and compares outputs.

  Returns:
    {"architecture", "num_params", "ours_finite", "transformers_max_abs_diff"
    (None without torch), "ok"}.
  """
  import jax
  from flax import nnx
  from transformers import AutoTokenizer

  from omni_rrm_jax.models.architectures import get_architecture
  from omni_rrm_jax.models.pretrained import from_pretrained

  model = from_pretrained(folder)
  architecture = model.cfg.architecture
  is_rm = get_architecture(architecture).is_classifier
  tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
  ids = _text_prompt_ids(tokenizer, eval_path, is_rm)
  out = model(jax.numpy.asarray(ids), attention_mask=jax.numpy.ones(ids.shape, jax.numpy.int32))
  ours = np.asarray(out.logits)
  num_params = int(sum(np.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param))))
  theirs = _transformers_outputs(folder, ids, is_rm)
  diff = None
  if theirs is not None:
    if is_rm:
      # The score head on transformers' final hidden state at the last token.
      kernel = np.asarray(model.score.kernel[...])
      theirs = theirs[:, -1] @ kernel.reshape(kernel.shape[0], -1)
    diff = float(np.max(np.abs(theirs - ours)))
  finite = bool(np.isfinite(ours).all())
  return {"architecture": architecture, "num_params": num_params, "ours_finite": finite,
          "transformers_max_abs_diff": diff,
          "ok": finite and (diff is None or diff <= TOLERANCE)}
