"""The task-kind registry and the batch contracts the pipeline and the steps share (no model)."""

import numpy as np
import pytest

from omni_rrm_jax.core.batch_contract import RM_BATCH, SFT_BATCH, BatchContract
from omni_rrm_jax.data.batching import collate
from omni_rrm_jax.data.tokenize import ExampleEncoder
from omni_rrm_jax.models.architectures import get_architecture
from omni_rrm_jax.config.tasks import TASK_CONFIGS
from omni_rrm_jax.train.task_kind import RM, SFT, TASK_KINDS, kind_for_model, task_kind


def test_lookup_by_name_and_unknown_names_list_the_known_ones():
  assert task_kind("rm") is RM and task_kind("sft") is SFT
  with pytest.raises(KeyError, match="unknown task kind 'grpo'; known: rm, sft"):
    task_kind("grpo")
  assert sorted(TASK_KINDS) == ["rm", "sft"]


@pytest.mark.parametrize("name", ["rm", "sft"])
def test_classifier_follows_the_architecture(name):
  kind = task_kind(name)
  assert get_architecture(TASK_CONFIGS[name]().model.architecture).is_classifier == kind.classifier
  assert kind_for_model(kind.classifier) is kind


def _meta() -> dict:
  return {"valid": True, "invalid_reason": 0, "truncated": False, "modality": 0, "index": 0}


@pytest.mark.parametrize("kind, example", [
    (RM, {"chosen": [1, 2, 3], "rejected": [1, 4], "margin": 0.5}),
    (SFT, {"input_ids": [1, 2, 3], "loss_mask": [0, 1, 1]}),
])
def test_collated_batches_hold_exactly_the_contract_keys(kind, example):
  batch = collate([{**example, **_meta()}], kind=kind.batch, batch_size=2, buckets=(4,),
                  pad_id=0)
  device = kind.batch.select(batch)
  kind.batch.check(device)
  assert set(kind.batch.required) <= set(device)
  assert set(batch) - set(device) == {"invalid_reason", "truncated", "modality", "index"}


def test_contract_check_names_missing_unknown_and_partial_media():
  batch = {k: np.zeros((2, 4), np.int32) for k in SFT_BATCH.required}
  SFT_BATCH.check(batch)
  with pytest.raises(KeyError, match=r"missing \['loss_mask'\], unknown \['margin'\]"):
    SFT_BATCH.check({**{k: v for k, v in batch.items() if k != "loss_mask"},
                     "margin": np.zeros(2)})
  with pytest.raises(KeyError, match="rm batch: .*core keys missing"):
    RM_BATCH.check({**{k: np.zeros((2, 4)) for k in RM_BATCH.required},
                    "vision_patches": np.zeros((2, 4, 3))})


def test_an_encoder_takes_a_contract_not_a_name():
  with pytest.raises(ValueError, match="batch contract"):
    ExampleEncoder(tokenizer=None, max_length=8, kind="rm")
  assert BatchContract.token_keys("chosen") == ("chosen_input_ids", "chosen_attention_mask")
  assert BatchContract.token_keys("input_ids") == ("input_ids", "attention_mask")
