"""The model-based reward: an exported scalar RM folder scores like transformers does."""

from __future__ import annotations

import numpy as np
import pytest

from omni_rrm_jax.core.batch_contract import RM_BATCH
from omni_rrm_jax.data.records import PreferenceRecord
from omni_rrm_jax.data.tokenize import ExampleEncoder
from omni_rrm_jax.rl.model_reward import ModelReward
from omni_rrm_jax.sharding.mesh import make_mesh

MAX_LENGTH = 48


@pytest.fixture(scope="module")
def rm_folder(tiny_rm_folder) -> str:
  return tiny_rm_folder


PROMPTS = ["What colour is the sky?", "Add 3 and 4.", "Name the colour of the leaf. " * 12,
           [{"role": "user", "content": "What is 2 plus 2?"}], "Which colour does snow have?"]
COMPLETIONS = ["It is blue.", "The answer is 7.", "It is green.", "4.", ""]


def test_scores_match_transformers_sequence_classification(rm_folder):
  import torch
  from transformers import AutoModelForSequenceClassification

  reward = ModelReward(rm_folder, batch_size=8, max_length=MAX_LENGTH, bucket=16,
                       mesh=make_mesh())
  scores = reward(PROMPTS, COMPLETIONS, label=["A"] * 5)
  ids = [reward.encode(p, c) for p, c in zip(PROMPTS, COMPLETIONS)]
  assert len(ids[2]) == MAX_LENGTH  # the long prompt was cut (from the left)
  hf = AutoModelForSequenceClassification.from_pretrained(rm_folder).eval()
  with torch.no_grad():
    expected = [float(hf(torch.tensor([x])).logits[0, 0]) for x in ids]
  np.testing.assert_allclose(scores, expected, atol=1e-4, rtol=0)
  assert np.std(scores) > 1e-3  # distinct inputs, distinct scores


def test_sequences_are_what_rm_training_scores(rm_folder):
  reward = ModelReward(rm_folder, batch_size=8, max_length=MAX_LENGTH, bucket=16)
  record = PreferenceRecord(id="r", prompt=PROMPTS[2], response_a="It is green.",
                            response_b="It is red.", label="A")
  trained = ExampleEncoder(reward.encoder.tokenizer, MAX_LENGTH, RM_BATCH).encode(record)
  assert reward.encode(record.prompt, record.response_a) == list(trained["chosen"])


def test_rejects_a_causal_lm(tmp_path):
  from tests.models.hf_fixtures import saved_model
  with pytest.raises(ValueError, match="ForSequenceClassification"):
    ModelReward(saved_model("qwen2_lm"))
