"""Synthetic data is a source asked for by name, never what an empty path means."""

import os

import pytest

from omni_rrm_jax.assembly.sources import data_splits, media_root
from omni_rrm_jax.config.tasks import rm_config


def test_empty_train_path_is_an_error_not_synthetic_data(tmp_path):
  data = rm_config().data
  with pytest.raises(ValueError, match="data.train_path is empty.*'synthetic'"):
    data_splits(data, str(tmp_path))
  assert not os.path.exists(tmp_path / "data")


def test_synthetic_source_writes_both_splits_into_the_workdir(tmp_path):
  data = rm_config().data
  data.update(train_path="synthetic", synthetic_kinds="colour,sum", synthetic_train=40,
              synthetic_eval=8)
  train, evals, counters = data_splits(data, str(tmp_path))
  assert len(train) == 40 and len(evals) == 8
  assert {r.subset for r in train} == {"text-colour", "text-sum"}
  assert os.path.exists(tmp_path / "data" / "train.jsonl")
  assert media_root(data, str(tmp_path)) == str(tmp_path / "data" / "media")
  seen = {(r.prompt, r.response_a, r.response_b) for r in train}
  assert not any((r.prompt, r.response_a, r.response_b) in seen for r in evals)
  assert counters["train"].num_skipped == 0 and counters["train"].num_rows == 40


def test_unknown_synthetic_kind_is_named(tmp_path):
  data = rm_config().data
  data.update(train_path="synthetic", synthetic_kinds="colour,smell")
  with pytest.raises(ValueError, match="unknown kind.*smell"):
    data_splits(data, str(tmp_path))
