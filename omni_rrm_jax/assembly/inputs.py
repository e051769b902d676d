"""What every training task reads before it builds its model: records, tokenizer
and media decoding, from the `model`, `data` and `media` sections."""

from __future__ import annotations

import dataclasses

from omni_rrm_jax.assembly import media as media_lib
from omni_rrm_jax.assembly import models, sources
from omni_rrm_jax.data.bad_records import BadRecordCounter
from omni_rrm_jax.data.media_batching import MediaSpec
from omni_rrm_jax.data.records import PreferenceRecord
from omni_rrm_jax.synthetic.corpus import corpus


@dataclasses.dataclass
class TaskInputs:
  """A training task's records, tokenizer and media decoding."""

  train_records: list[PreferenceRecord]
  eval_records: list[PreferenceRecord]
  counters: dict[str, BadRecordCounter]  # split -> skipped records by reason
  tokenizer: object  # a transformers tokenizer
  tokenizer_dir: str
  media: MediaSpec | None  # None: a text model
  media_root: str  # where record media paths resolve


def task_inputs(*, model, data, media, tokenizer: str, workdir: str,
                classifier: bool) -> TaskInputs:
  """Reads the splits of `data`, loads (or trains, on them) the tokenizer, and
  tells how the `model` section's model decodes media per `media`."""
  train, evals, counters = sources.data_splits(data, workdir)
  tok, tok_dir = models.tokenizer_for(tokenizer, model.path, workdir, corpus(train))
  root = sources.media_root(data, workdir)
  spec = media_lib.media_spec(media, models.model_config(model, tok, classifier=classifier), tok,
                              root=root, model_path=model.path, strict=data.strict)
  return TaskInputs(train, evals, counters, tok, tok_dir, spec, root)


def eval_worker_count(data) -> int:
  """Grain worker processes for the held-out set of the `data` section."""
  return data.worker_count if data.eval_worker_count < 0 else data.eval_worker_count
