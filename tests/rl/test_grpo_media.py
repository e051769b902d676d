"""GRPO on a tiny Qwen2.5-VL judge with image and video prompts.

The rollout samples with each prompt's media; the policy update recomputes the
log-probs with the same media (so with the sampler's log-probs as the old
policy the ratio is 1), and records whose media fail are skipped and counted.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import os
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from omni_rrm_jax.core.batch_contract import SFT_BATCH
from omni_rrm_jax.data.records import write_jsonl
from omni_rrm_jax.synthetic.mixture import mixed_pairs
from omni_rrm_jax.data.tokenize import INVALID_REASONS, ExampleEncoder
from omni_rrm_jax.eval import judge_eval
from omni_rrm_jax.rl import grpo_loop, rollout, rollout_step
from omni_rrm_jax.config.tasks import grpo_config
from omni_rrm_jax.rl.grpo_step import make_grpo_step, policy_logprobs
from omni_rrm_jax.rl.prompt_media import PROMPT_MEDIA, PromptMedia
from omni_rrm_jax.sampling.params import SamplingParams
from omni_rrm_jax.sampling.scoring import score_completions
from omni_rrm_jax.assembly import media as media_lib
from omni_rrm_jax.assembly import models as model_lib
from omni_rrm_jax.assembly import sources
from omni_rrm_jax.synthetic.corpus import corpus
from omni_rrm_jax.train.optimizer import make_optimizer
from omni_rrm_jax.train.state import init_train_state

VL = "Qwen2_5_VLForConditionalGeneration"
PROMPT_LENGTH = 352  # the tiny judge prompt (~270 tokens) plus its media tokens
G = 2
N = 8


@functools.cache
def data_dir() -> str:
  """Five image / video pairs, two text pairs, and two records whose media fail:
  a zero-byte PNG (found when its prompt is built) and a path escaping the media
  root (refused when the data set is read)."""
  root = Path(tempfile.mkdtemp(prefix="orj_grpo_media_"))
  media = mixed_pairs(5, 0, ("image", "video"), media_root=str(root))
  (root / "images" / "zero.png").write_bytes(b"")
  broken = [dataclasses.replace(media[0], id=f"broken-{i}",
                                media={"images": [path], "video": None, "audio": None})
            for i, path in enumerate(["images/zero.png", "../../etc/passwd"])]
  records = media[:2] + broken[:1] + media[2:] + mixed_pairs(2, 0) + broken[1:]
  write_jsonl(records, str(root / "train.jsonl"))
  return str(root)


def vl_config():
  c = grpo_config("judge")
  c.model.architecture = VL
  c.data.train_path = os.path.join(data_dir(), "train.jsonl")
  c.data.media_root = data_dir()
  c.data.max_prompt_length = PROMPT_LENGTH
  c.data.prompt_bucket = PROMPT_LENGTH
  c.rollout.max_new_tokens = N
  c.rollout.num_generations = G
  return c


@dataclasses.dataclass(frozen=True)
class Inputs:
  records: list
  tokenizer: object
  spec: object
  encoder: ExampleEncoder


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Inputs:
  """Records, tokenizer and media spec as the GRPO loop builds them."""
  config, workdir = vl_config(), str(tmp_path_factory.mktemp("grpo_media"))
  records, _, _ = sources.data_splits(config.data, workdir)
  tok, _ = model_lib.tokenizer_for(config.tokenizer, config.model.path, workdir, corpus(records))
  spec = media_lib.media_spec(
      config.media, model_lib.model_config(config.model, tok, classifier=False),
      tok, root=sources.media_root(config.data, workdir), model_path=config.model.path,
      strict=config.data.strict)
  return Inputs(records, tok, spec, ExampleEncoder(tok, PROMPT_LENGTH, SFT_BATCH, media=spec))


@pytest.fixture(scope="module")
def judge(inputs):
  """A random tiny Qwen2.5-VL judge, built as the GRPO loop builds it."""
  config = vl_config()
  return model_lib.build_model(config.model, inputs.tokenizer, None, (), classifier=False,
                               seed=config.seed)


def first_prompts(inputs: Inputs):
  """(records, tokenizer, prompt media, the first four prompts in file order)."""
  media = PromptMedia.from_spec(inputs.spec, vl_config().media.patch_buckets)
  prompts = next(iter(rollout.make_prompt_dataset(
      inputs.records, inputs.encoder, recipe="judge", max_prompt_length=PROMPT_LENGTH,
      batch_size=4, seed=0, shuffle=False, num_epochs=1)))
  return inputs.records, inputs.tokenizer, media, prompts


def test_rollout_logprobs_equal_the_update_recompute(inputs, judge):
  records, tok, media, prompts = first_prompts(inputs)
  assert [records[p["index"]].modality for p in prompts] == ["image", "video", "image", "image"]

  tx, _ = make_optimizer(dict(learning_rate=1e-3, total_steps=10))
  graphdef, state = init_train_state(judge, tx)
  batch = rollout.generate_round(
      (graphdef, state.params), prompts, sampling=SamplingParams(max_new_tokens=N, num_samples=G),
      rng=jax.random.key(0), eos_ids=(tok.eos_token_id,), pad_id=tok.pad_token_id,
      bucket=PROMPT_LENGTH, max_prompt_length=PROMPT_LENGTH, media=media)
  skipped = collections.Counter()
  batch = rollout_step.valid_groups(batch, G, skipped)
  assert skipped == {"bad media": 1}  # prompt 2 is the zero-byte PNG
  assert [records[i].id for i in batch["index"][::G]] == [records[i].id for i in (0, 1, 3)]
  rows = len(batch["valid"])

  step_batch = {k: batch[k] for k in ("prompt_ids", "prompt_mask", "completion_ids",
                                      "completion_mask", "old_logp")}
  step_batch.update(loss_mask=batch["completion_mask"],
                    adv=np.random.default_rng(0).normal(size=rows).astype(np.float32),
                    **media.collate(batch[PROMPT_MEDIA], PROMPT_LENGTH))
  assert step_batch["vision_patches"].shape[1] > 0

  # The update's recompute (with media) is the sampler's log-prob; without the
  # media it is far off, so the equality sees them.
  model = nnx.merge(graphdef, state.params)
  recomputed = np.asarray(jax.jit(policy_logprobs)(model, step_batch))
  np.testing.assert_allclose(recomputed, batch["old_logp"], atol=1e-5, rtol=0)
  blind = {k: v for k, v in step_batch.items() if k in (
      "prompt_ids", "prompt_mask", "completion_ids", "completion_mask")}
  assert np.abs(np.asarray(jax.jit(policy_logprobs)(model, blind)) -
                batch["old_logp"]).max() > 1e-2
  by_prompt = score_completions((graphdef, state.params), batch["prompt_ids"],
                                batch["prompt_mask"], batch["completion_ids"],
                                batch["completion_mask"], rows_per_example=G,
                                media=media.collate(batch[PROMPT_MEDIA][::G], PROMPT_LENGTH))
  np.testing.assert_allclose(np.asarray(by_prompt), batch["old_logp"], atol=1e-5, rtol=0)

  # mu = 1 with the sampler's log-probs as the old policy: ratio 1, nothing clipped.
  state = jax.tree.map(jnp.copy, state)  # the step donates it; the judge fixture lives on
  _, metrics = make_grpo_step(graphdef, tx, on_policy=False)(state, step_batch)
  np.testing.assert_allclose(float(metrics["ratio_mean"]), 1.0, atol=1e-5)
  assert float(metrics["clip_frac_low"]) == float(metrics["clip_frac_high"]) == 0.0
  assert int(metrics["skipped"]) == 0 and np.isfinite(float(metrics["grad_norm"]))


def test_grpo_loop_trains_on_media_and_counts_bad_records(tmp_path):
  config = vl_config()
  config.rollout.prompts_per_step = 4  # 8 rows: one per simulated device
  config.grpo.beta = 0.05  # the reference pass scores with the media too
  config.reward.functions = "judge_format:1.0"
  config.train.num_steps = 2
  config.train.progress_bar = False
  config.checkpoint.async_save = False
  config.eval.num_prompts = 0
  config.export.at_end = False
  summary = grpo_loop.run(config, str(tmp_path))
  # 2 steps x 4 prompts: one epoch of the 8 records read, the zero-byte PNG once.
  assert "1 skipped" in summary["bad_records"]["train"]  # the escaping path
  assert summary["skipped_prompts"] == {"bad media": 1}
  assert summary["nonfinite_skipped"] == 0  # updates skipped as non-finite, over the run
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  train = [r for r in rows if r["split"] == "train"]
  assert len(train) == 2 and sum(r["prompts_skipped"] for r in train) == 1
  for r in train:
    assert np.isfinite(r["loss"]) and r["skipped"] == 0
    assert r["groups_kept"] == 4 - r["prompts_skipped"]
    np.testing.assert_allclose(r["kl_mean"], 0.0, atol=1e-6)  # first update of each step
    assert r["num_tokens"] > 0


def test_media_prompts_keep_the_text_prompt_and_audio_is_skipped(inputs):
  records, spec, encoder = inputs.records, inputs.spec, inputs.encoder
  image_id = spec.placeholder_ids["image"]
  for record in [r for r in records if r.modality in ("image", "video")][:2]:
    example = rollout.encode_prompt(encoder, record, "judge", PROMPT_LENGTH)
    text_ids = rollout.prompt_ids(encoder, record, "judge", PROMPT_LENGTH)
    ids = example["prompt_ids"].tolist()
    placeholder = spec.placeholder_ids[record.modality]
    # Each item's placeholder run collapsed to one token gives the text path's prompt.
    collapsed = [t for i, t in enumerate(ids) if t != placeholder or ids[i - 1] != placeholder]
    assert example["valid"] and collapsed == text_ids and len(ids) > len(text_ids)
    at = np.flatnonzero(example["media_index"] >= 0)
    np.testing.assert_array_equal(at, np.flatnonzero(np.asarray(ids) == placeholder))
    np.testing.assert_array_equal(example["media_index"][at], np.arange(len(at)))
    # A tight limit cuts the question's text, never the media or the framing.
    short = rollout.encode_prompt(encoder, record, "judge", len(ids) - 20)["prompt_ids"]
    assert len(short) == len(ids) - 20 and (short == placeholder).sum() == len(at)
    assert short[-8:].tolist() == ids[-8:]

  audio = dataclasses.replace(records[0], modality="audio",
                              media={"images": [], "video": None, "audio": "clip.wav"})
  example = rollout.encode_prompt(encoder, audio, "judge", PROMPT_LENGTH)
  assert not example["valid"]
  assert INVALID_REASONS[example["invalid_reason"]] == "unsupported media"
  assert image_id not in example["prompt_ids"].tolist()
  assert (example["media_index"] == -1).all()


def test_judge_eval_judges_media_records_with_their_media(inputs, judge, monkeypatch):
  """(eval/judge_eval.py, here for the shared judge.) Every media record's prompt
  reaches the sampler with its media tokens placed; the broken one is unscored."""
  seen = []
  generate = judge_eval.generate

  def recording(model, ids_bt, mask_bt, *args, media=None, **kw):
    index_bt = np.asarray(media["media_index"])
    seen.extend(zip(np.asarray(ids_bt).tolist(), (index_bt >= 0).sum(1).tolist()))
    return generate(model, ids_bt, mask_bt, *args, media=media, **kw)

  monkeypatch.setattr(judge_eval, "generate", recording)
  tok, spec = inputs.tokenizer, inputs.spec
  result = judge_eval.evaluate_judge(
      judge, inputs.encoder, inputs.records, max_prompt_length=PROMPT_LENGTH, max_new_tokens=4,
      batch_size=4, eos_ids=[tok.eos_token_id], pad_id=tok.pad_token_id)
  assert result["unscored"] == {"bad media": 1}
  assert set(result["per_modality"]) == {"image", "video", "text"}
  placeholders = set(spec.placeholder_ids.values())
  media_rows = [n for ids, n in seen if placeholders & set(ids)]
  # 5 usable media records, in both orders (filler rows of a short call repeat one).
  assert len(media_rows) >= 10 and min(media_rows) > 0
  assert all(n == sum(t in placeholders for t in ids) for ids, n in seen)


def test_a_prompt_draws_the_same_completions_in_any_round(inputs, judge):
  """Rollouts key each prompt's draws by its record's index: the evaluation's
  numbers do not depend on how its prompts are batched."""
  records, tok, media, prompts = first_prompts(inputs)
  images = [p for p in prompts if records[p["index"]].modality == "image"
            and p.get("valid", True)]
  assert len(images) >= 2
  graphdef, params = nnx.split(judge)
  kw = dict(sampling=SamplingParams(max_new_tokens=N, num_samples=G, temperature=1.0),
            rng=jax.random.key(3), eos_ids=(), pad_id=tok.pad_token_id, bucket=PROMPT_LENGTH,
            max_prompt_length=PROMPT_LENGTH, media=media)

  def completions(batch_prompts):
    batch = rollout.generate_round((graphdef, params), batch_prompts, **kw)
    return {int(i): batch["completion_ids"][r:r + G]
            for r, i in zip(range(0, len(batch["index"]), G), batch["index"][::G])}

  together = completions(images[:2])
  last = images[1]["index"]
  alone = completions(images[1:2])
  swapped = completions([images[1], images[0]])
  np.testing.assert_array_equal(alone[last], together[last])
  np.testing.assert_array_equal(swapped[last], together[last])
  assert (together[last] != together[last][:1]).any()  # the G samples differ
