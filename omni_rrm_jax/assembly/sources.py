"""Where a task's records come from: files, or the synthetic source by name."""

from __future__ import annotations

import logging
import os

from omni_rrm_jax.config.sections import SYNTHETIC
from omni_rrm_jax.core.multihost import written_by_one
from omni_rrm_jax.data.bad_records import BadRecordCounter
from omni_rrm_jax.data.readers import read_records
from omni_rrm_jax.data.records import PreferenceRecord
from omni_rrm_jax.synthetic import mixture

log = logging.getLogger(__name__)


def load_split(path: str, fmt: str, *, strict: bool, media_root: str, limit: int = 0,
               name: str, max_record_bytes: int
               ) -> tuple[list[PreferenceRecord], BadRecordCounter]:
  """Reads a whole split, skipping (and counting) bad records."""
  counter = BadRecordCounter()
  records = list(read_records(path, fmt, counter=counter, strict=strict,
                              media_root=media_root or None, limit=limit or None,
                              max_record_bytes=max_record_bytes))
  log.info("%s data %s: %s", name, path, counter.summary())
  if not records:
    raise ValueError(f"{path}: no usable records ({counter.summary()})")
  return records, counter


def is_synthetic(data) -> bool:
  return data.train_path == SYNTHETIC


def media_root(data, workdir: str) -> str:
  """Where record media paths resolve: `data.media_root`, else the synthetic
  media folder, else the training file's folder."""
  if data.media_root:
    return data.media_root
  if is_synthetic(data):
    return os.path.join(workdir, "data", "media")
  return os.path.dirname(os.path.abspath(data.train_path))


def data_splits(data, workdir: str):
  """(train records, eval records, {split: BadRecordCounter}) of the `data` section.

  `data.train_path="synthetic"` generates seeded pairs of `data.synthetic_kinds`
  into `workdir/data/` (process 0 writes them, the others wait and read them),
  media files under `workdir/data/media/`; `data.eval_path` then defaults to
  the generated held-out split.
  """
  if not data.train_path:
    raise ValueError("data.train_path is empty: set a file or folder of preference "
                     f"records, or {SYNTHETIC!r} for generated pairs")
  train_path, eval_path = data.train_path, data.eval_path
  root = media_root(data, workdir)
  if is_synthetic(data):
    kinds = mixture.parse_kinds(data.synthetic_kinds)
    folder = os.path.join(workdir, "data")
    train_path, generated_eval = os.path.join(folder, "train.jsonl"), os.path.join(
        folder, "eval.jsonl")
    eval_path = eval_path or generated_eval
    written_by_one("synthetic data", lambda: mixture.write_splits(
        folder, root, kinds=kinds, n_train=data.synthetic_train, n_eval=data.synthetic_eval,
        seed=data.seed))
  kw = dict(strict=data.strict,
            media_root=root if (data.media_root or is_synthetic(data)) else "",
            max_record_bytes=data.max_record_bytes)
  train, train_counter = load_split(train_path, data.train_format, name="train", **kw)
  counters = {"train": train_counter}
  evals: list[PreferenceRecord] = []
  if eval_path:
    evals, counters["eval"] = load_split(eval_path, data.eval_format, name="eval",
                                         limit=data.eval_limit, **kw)
  return train, evals, counters
