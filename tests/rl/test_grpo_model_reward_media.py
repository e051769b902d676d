"""The model reward with a multimodal scalar RM: prompts' media reach it as in RM training.

A tiny random Qwen2.5-VL (images, video) and Qwen2.5-Omni thinker (audio) RM,
exported as a `rm` run exports it, scores GRPO policy prompts with media; each
score must be what RM training / evaluation computes for the same conversation
(`ExampleEncoder` "rm" examples, `make_dataset` batches, `train.step.rm_rewards`),
and must move when only the media changes. Prompts whose media fail score the
reward's minimum and are counted.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np
import pytest
from flax import nnx

from omni_rrm_jax.core.batch_contract import MEDIA_KEYS, RM_BATCH
from omni_rrm_jax.data.pipeline import make_dataset
from omni_rrm_jax.synthetic.mixture import mixed_pairs
from omni_rrm_jax.data.tokenize import ExampleEncoder
from omni_rrm_jax.models.hf_save import save_pretrained
from omni_rrm_jax.rl.model_reward import ModelReward
from omni_rrm_jax.rl.rollout import policy_messages
from omni_rrm_jax.sharding.mesh import make_mesh
from omni_rrm_jax.assembly import media as media_lib
from omni_rrm_jax.assembly import models as model_lib
from omni_rrm_jax.config.tasks import TASK_CONFIGS
from omni_rrm_jax.synthetic.corpus import corpus
from omni_rrm_jax.train.task_kind import rm_rewards
from tests.data.audio_records import tone_pairs

VL = "Qwen2_5_VLForConditionalGeneration"
OMNI = "Qwen2_5OmniThinkerForConditionalGeneration"
MAX_LENGTH = 96
PATCH_BUCKETS = (0, 64)
FRAME_BUCKETS = (0, 200)
TOL = 1e-5


@dataclasses.dataclass(frozen=True)
class RM:
  folder: str
  media_root: str
  records: list
  config: object

  def reward(self, **kw) -> ModelReward:
    m = self.config.media
    return ModelReward(self.folder, max_length=MAX_LENGTH, bucket=32, media_root=self.media_root,
                       patch_buckets=m.patch_buckets, audio_frame_buckets=m.audio_frame_buckets,
                       media_overrides=m.preprocess, **{"batch_size": 4, **kw})


def _export_rm(root, architecture: str, records) -> RM:
  """A random tiny multimodal RM built and exported as a `rm` run does."""
  config = TASK_CONFIGS["rm"]()
  config.model.architecture = architecture
  config.media.patch_buckets, config.media.audio_frame_buckets = PATCH_BUCKETS, FRAME_BUCKETS
  tok, tok_dir = model_lib.tokenizer_for(config.tokenizer, config.model.path, str(root),
                                         corpus(records))
  model = model_lib.build_model(config.model, tok, None, (), classifier=True, seed=config.seed)
  folder = save_pretrained(model, str(root / "hf"), tokenizer_dir=tok_dir)
  return RM(folder, str(root / "media"), records, config)


@pytest.fixture(scope="module")
def vl_rm(tmp_path_factory) -> RM:
  root = tmp_path_factory.mktemp("vl_rm")
  records = mixed_pairs(4, 0, ("image", "video"), media_root=str(root / "media")) + mixed_pairs(2, 0)
  return _export_rm(root, VL, records)


@pytest.fixture(scope="module")
def omni_rm(tmp_path_factory) -> RM:
  root = tmp_path_factory.mktemp("omni_rm")
  records = tone_pairs(3, 0, str(root / "media")) + mixed_pairs(1, 1, ("image", "video"), media_root=str(root / "media"))
  return _export_rm(root, OMNI, records)


_SCORERS: dict = {}


def _direct(rm: RM):
  """`score(records) -> r_chosen`: RM evaluation's path (eval.run.evaluate_rm) on
  each record's response_a, as the `chosen` row of an "rm" example."""
  if rm.folder in _SCORERS:
    return _SCORERS[rm.folder]
  from transformers import AutoTokenizer

  import omni_rrm_jax as orj
  d = rm.config.media
  model = orj.from_pretrained(rm.folder)
  tok = AutoTokenizer.from_pretrained(rm.folder)
  spec = media_lib.make_media_spec(model.cfg, tok, root=rm.media_root, model_path=rm.folder,
                                    overrides=d.preprocess, patch_buckets=d.patch_buckets,
                                    audio_frame_buckets=d.audio_frame_buckets)
  encoder = ExampleEncoder(tok, MAX_LENGTH, RM_BATCH, media=spec)
  graphdef, params = nnx.split(model)
  rewards = jax.jit(lambda p, b: rm_rewards(nnx.merge(graphdef, p), b)[0])

  def score(records) -> np.ndarray:
    batch = next(iter(make_dataset(
        records, encoder, batch_size=len(records), buckets=(MAX_LENGTH,), pad_id=tok.pad_token_id,
        seed=0, shuffle=False, num_epochs=1, patch_buckets=d.patch_buckets,
        audio_frame_buckets=d.audio_frame_buckets)))
    assert batch["valid"].all() and not batch["truncated"].any()
    return np.asarray(rewards(params, {k: batch[k] for k in (*RM_BATCH.required, *MEDIA_KEYS)
                                       if k in batch}))

  _SCORERS[rm.folder] = score
  return score


def direct_scores(rm: RM, records, completions) -> np.ndarray:
  """The RM's score of each (record's prompt with its media, completion)."""
  pairs = [dataclasses.replace(r, response_a=c, response_b=c + " Maybe not.", label="A")
           for r, c in zip(records, completions)]
  return _direct(rm)(pairs)


def _swap_media(record, other):
  return dataclasses.replace(record, id=record.id + "-swapped", media=other.media,
                             modality=other.modality)


COMPLETIONS = ["It is red.", "The square is blue.", "", "Green, I think.", "It is 7.", "No idea."]


def test_vl_scores_equal_rm_training_path_and_follow_the_media(vl_rm):
  image_a, video, image_b, _, text, _ = vl_rm.records
  assert (image_a.modality, video.modality, image_b.modality, text.modality) == (
      "image", "video", "image", "text")
  swapped = _swap_media(image_a, image_b)  # the same question, the other picture
  records = [image_a, video, image_b, text, swapped, image_a]
  reward = vl_rm.reward(batch_size=8, mesh=make_mesh())
  assert reward.media is not None
  scores = np.asarray(reward([policy_messages(r) for r in records], COMPLETIONS))
  np.testing.assert_allclose(scores, direct_scores(vl_rm, records, COMPLETIONS), atol=TOL, rtol=0)
  assert reward.unscored == {} and reward.stripped == 0

  # Same prompt text and completion, other image: the score moves.
  same_text = reward([policy_messages(image_a), policy_messages(swapped)], ["It is red."] * 2)
  assert abs(same_text[0] - same_text[1]) > 10 * TOL, same_text
  # Without its media a prompt scores differently (the media really reach the RM).
  blind = reward([image_a.prompt], ["It is red."])
  assert abs(blind[0] - same_text[0]) > 10 * TOL


def test_vl_unusable_media_score_the_minimum_and_are_counted(vl_rm):
  image, video = vl_rm.records[:2]
  root = vl_rm.media_root
  with open(os.path.join(root, "images", "zero.png"), "wb"):
    pass
  broken = [dataclasses.replace(image, id="zero", media={**image.media,
                                                           "images": ["images/zero.png"]}),
            dataclasses.replace(image, id="escape", media={**image.media,
                                                             "images": ["../../etc/passwd"]}),
            dataclasses.replace(image, id="audio", modality="audio",
                                media={"images": [], "video": None, "audio": "clip.wav"})]
  # Groups of two completions per prompt, as GRPO sends them.
  records = [image, image, broken[0], broken[0], video, video, broken[1], broken[1],
             broken[2], broken[2]]
  completions = ["It is red.", "Blue.", "Red.", "Blue.", "Green.", "", "Red.", "x", "High.",
                 "Low."]
  reward = vl_rm.reward()
  scores = np.asarray(reward([policy_messages(r) for r in records], completions))
  assert reward.unscored == {"bad media": 2, "unsupported media": 1}  # once per prompt
  fallback = np.isin(np.arange(len(records)), [2, 3, 6, 7, 8, 9])
  np.testing.assert_array_equal(scores[fallback], 0.0)
  ok = ~fallback
  np.testing.assert_allclose(
      scores[ok], direct_scores(vl_rm, [r for r, k in zip(records, ok) if k],
                                [c for c, k in zip(completions, ok) if k]), atol=TOL, rtol=0)
  assert np.all(scores[ok] != 0.0)


def test_vl_placeholder_in_a_completion_is_dropped(vl_rm):
  image = vl_rm.records[0]
  reward = vl_rm.reward()
  example = reward.encode_example(policy_messages(image), "It is <|IMAGE|> red.")
  assert reward.stripped == 1
  ids = np.asarray(example["ids"])
  image_id = reward.media.placeholder_ids["image"]
  # Every placeholder left is one of the image's tokens, each with its feature.
  np.testing.assert_array_equal(np.flatnonzero(ids == image_id),
                                np.flatnonzero(example["media_index"] >= 0))
  assert np.isfinite(reward([policy_messages(image)], ["It is <|IMAGE|> red."])[0])


def test_long_completion_keeps_the_media_and_its_end(vl_rm):
  image = vl_rm.records[0]
  reward = vl_rm.reward()
  long = "It is red. " * 60 + "Final: red."
  example = reward.encode_example(policy_messages(image), long)
  ids = example["ids"]
  assert len(ids) == MAX_LENGTH
  n_media = int((example["media_index"] >= 0).sum())
  assert n_media > 0 and n_media == ids.count(reward.media.placeholder_ids["image"])
  end = reward.encoder.response_ids(policy_messages(image), long)[-5:]
  assert ids[-5:] == end


def test_omni_audio_scores_equal_rm_training_path_and_follow_the_audio(omni_rm):
  tone_a, tone_b, tone_c, image = omni_rm.records
  assert [r.modality for r in omni_rm.records] == ["audio", "audio", "audio", "image"]
  swapped = _swap_media(tone_a, tone_b)
  records = [tone_a, tone_b, image, swapped, tone_c]
  completions = ["The tone is high.", "The tone is low.", "Red.", "The tone is high.", ""]
  reward = omni_rm.reward()
  assert reward.media.has_audio
  scores = np.asarray(reward([policy_messages(r) for r in records], completions))
  np.testing.assert_allclose(scores, direct_scores(omni_rm, records, completions), atol=TOL,
                             rtol=0)
  assert abs(scores[0] - scores[3]) > 10 * TOL, scores  # only the clip differs
  assert reward.unscored == {}


def test_grpo_loop_rewards_media_prompts_with_the_multimodal_rm(vl_rm, tmp_path):
  """The loop hands the RM its media settings: a VL policy on image / video prompts,
  rewarded by the VL RM alone, scores every prompt with its media."""
  import json

  from omni_rrm_jax.config.tasks import grpo_config
  from omni_rrm_jax.data.records import write_jsonl
  from omni_rrm_jax.rl import grpo_loop

  write_jsonl(vl_rm.records[:4], str(tmp_path / "train.jsonl"))  # image, video, image, video
  c = grpo_config("policy")
  c.model.architecture = VL
  c.tokenizer = vl_rm.folder
  c.data.update(train_path=str(tmp_path / "train.jsonl"), media_root=vl_rm.media_root,
                max_prompt_length=64, prompt_bucket=64)
  c.media.update(patch_buckets=PATCH_BUCKETS, audio_frame_buckets=FRAME_BUCKETS)
  c.rollout.update(prompts_per_step=4, num_generations=2, max_new_tokens=4)
  c.reward.update(functions="", model_path=vl_rm.folder, model_max_length=MAX_LENGTH,
                  model_bucket=32, model_batch_size=8)
  c.train.update(num_steps=1, progress_bar=False)
  c.checkpoint.async_save = False
  c.eval.num_prompts = 0
  c.export.at_end = False
  summary = grpo_loop.run(c, str(tmp_path / "run"))
  assert summary["skipped_prompts"] == {} and summary["model_reward_unscored"] == {}
  with open(tmp_path / "run" / "metrics.jsonl", encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
  train = [r for r in rows if r["split"] == "train"]
  assert len(train) == 1 and train[0]["reward/model_reward_std"] > 0
  assert np.isfinite(train[0]["loss"])
