"""What the training tasks share before the loop: data, tokenizer and model."""

from __future__ import annotations

import logging
import os
from typing import Sequence

import jax

from omni_rrm_jax.data.bad_records import BadRecordCounter
from omni_rrm_jax.data.readers import read_records
from omni_rrm_jax.data.records import PreferenceRecord
from omni_rrm_jax.data.synthetic import corpus, generate_text_pairs, write_jsonl
from omni_rrm_jax.data.tokenizer_train import train_tiny_tokenizer
from omni_rrm_jax.models.factory import from_config
from omni_rrm_jax.models.pretrained import from_pretrained

log = logging.getLogger(__name__)


def load_split(path: str, fmt: str, *, strict: bool, media_root: str, limit: int = 0,
               name: str) -> tuple[list[PreferenceRecord], BadRecordCounter]:
  """Reads a whole split, skipping (and counting) bad records."""
  counter = BadRecordCounter()
  records = list(read_records(path, fmt, counter=counter, strict=strict,
                              media_root=media_root or None, limit=limit or None))
  log.info("%s data %s: %s", name, path, counter.summary())
  if not records:
    raise ValueError(f"{path}: no usable records ({counter.summary()})")
  return records, counter


def data_splits(config, workdir: str):
  """(train records, eval records, {split: BadRecordCounter}).

  Without `config.data.train_path`, seeded synthetic pairs are generated into
  `workdir/data/` (every process generates the same ones).
  """
  d = config.data
  train_path, eval_path = d.train_path, d.eval_path
  if not train_path:
    kinds = [k.strip() for k in d.synthetic_kinds.split(",") if k.strip()]
    folder = os.path.join(workdir, "data")
    train_path = os.path.join(folder, "train.jsonl")
    eval_path = eval_path or os.path.join(folder, "eval.jsonl")
    if not os.path.exists(train_path) and jax.process_index() == 0:
      train = generate_text_pairs(d.synthetic_train, d.seed, kinds, prefix="train")
      seen = {(r.prompt, r.response_a, r.response_b) for r in train}
      held_out = [r for r in generate_text_pairs(4 * d.synthetic_eval, d.seed + 1, kinds,
                                                 prefix="eval")
                  if (r.prompt, r.response_a, r.response_b) not in seen][:d.synthetic_eval]
      write_jsonl(held_out, eval_path)
      write_jsonl(train, train_path)
  kw = dict(strict=d.strict, media_root=d.media_root)
  train, train_counter = load_split(train_path, d.train_format, name="train", **kw)
  counters = {"train": train_counter}
  evals: list[PreferenceRecord] = []
  if eval_path:
    evals, counters["eval"] = load_split(eval_path, d.eval_format, name="eval",
                                         limit=d.eval_limit, **kw)
  return train, evals, counters


def tokenizer_for(config, workdir: str, texts: Sequence[str]):
  """The configured tokenizer, the model folder's, or a tiny BPE trained on `texts`."""
  from transformers import AutoTokenizer

  folder = config.tokenizer or config.model.path
  if not folder:
    folder = os.path.join(workdir, "tokenizer")
    if not os.path.exists(os.path.join(folder, "tokenizer_config.json")):
      train_tiny_tokenizer(texts, folder, vocab_size=512)
  tok = AutoTokenizer.from_pretrained(folder)
  if tok.pad_token_id is None:
    raise ValueError(f"{folder}: the tokenizer has no pad token; set one in tokenizer_config.json")
  if not tok.chat_template:
    raise ValueError(f"{folder}: the tokenizer has no chat template")
  return tok, folder


def build_model(config, tokenizer, mesh, rules):
  """A Hugging Face checkpoint (with a fresh score head for an RM), or a random init."""
  m = config.model
  kw = dict(mesh=mesh, rules=rules, dtype=m.dtype, param_dtype=m.param_dtype, remat=m.remat)
  is_rm = config.task == "rm"
  if m.path:
    extra = dict(num_labels=1, pad_token_id=tokenizer.pad_token_id) if is_rm else {}
    return from_pretrained(m.path, architecture=m.architecture,
                           init_missing=("score",) if is_rm else (), seed=config.seed,
                           **extra, **kw)
  hf = dict(m.config)
  hf.update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id)
  if not is_rm:
    hf.pop("num_labels", None)
  return from_config(m.architecture, hf, seed=config.seed, **kw)


def texts_for_tokenizer(records: Sequence[PreferenceRecord]) -> list[str]:
  return corpus(records)
