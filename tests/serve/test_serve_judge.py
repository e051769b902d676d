"""`omni-rrm serve` with a multimodal rubric judge, on 127.0.0.1.

A tiny random Qwen2.5-VL causal LM, exported, is served by the real command;
pairs with images and video sent to `/score` must get the judgments the judge
evaluation generates in process (`eval.judge_eval.generate_judgments`), and an
OpenAI-style `/v1/chat/completions` request the completion the same prompt
and sampler give in process.
"""

from __future__ import annotations

import base64
import concurrent.futures
import os

import httpx
import numpy as np
import pytest
from transformers import AutoTokenizer

import omni_rrm_jax as orj
from omni_rrm_jax.assembly import media as media_lib
from omni_rrm_jax.assembly import models as model_lib
from omni_rrm_jax.config.tasks import TASK_CONFIGS
from omni_rrm_jax.core.batch_contract import SFT_BATCH
from omni_rrm_jax.data.tokenize import ExampleEncoder
from omni_rrm_jax.eval.judge_eval import (generate_judgments, generate_rows, messages_prompt,
                                          verdict)
from omni_rrm_jax.models.hf_save import save_pretrained
from omni_rrm_jax.rl.model_reward import prompt_record
from omni_rrm_jax.sampling.params import SamplingParams
from omni_rrm_jax.sampling.prompts import media_needs
from omni_rrm_jax.sharding.mesh import make_mesh
from omni_rrm_jax.synthetic.mixture import mixed_pairs
from omni_rrm_jax.synthetic.corpus import corpus
from tests.serve.server_process import running_server

VL = "Qwen2_5_VLForConditionalGeneration"
MAX_LENGTH, ROWS, NEW_TOKENS = 256, 8, 32  # configs/serve.py:tiny


@pytest.fixture(scope="module")
def served(tmp_path_factory):
  root = tmp_path_factory.mktemp("serve_judge")
  records = mixed_pairs(3, 0, ("image", "video"), media_root=str(root / "media")) + mixed_pairs(2, 0)
  config = TASK_CONFIGS["sft"]()
  config.model.architecture = VL
  # Wide random weights, so that greedy text follows the prompt and its media.
  config.model.config.initializer_range = config.model.vision.initializer_range = 0.5
  tok, tok_dir = model_lib.tokenizer_for(config.tokenizer, "", str(root), corpus(records))
  model = model_lib.build_model(config.model, tok, None, (), classifier=False, seed=1)
  folder = save_pretrained(model, str(root / "hf"), tokenizer_dir=tok_dir)
  media_root = str(root / "media")
  with running_server(root / "server", {"model.path": folder,
                                        "serve.media_root": media_root}) as (url, _):
    yield folder, media_root, records, config, url


def _in_process(folder, media_root, config):
  model = orj.from_pretrained(folder, mesh=make_mesh())
  tok = AutoTokenizer.from_pretrained(folder)
  m = config.media
  spec = media_lib.make_media_spec(model.cfg, tok, root=media_root, model_path=folder,
                                    overrides=m.preprocess, patch_buckets=m.patch_buckets,
                                    audio_frame_buckets=m.audio_frame_buckets)
  return model, ExampleEncoder(tok, MAX_LENGTH, SFT_BATCH, media=spec), tok


def _item(record) -> dict:
  item = {"prompt": record.prompt, "response_a": record.response_a,
          "response_b": record.response_b}
  if record.media["images"]:
    item["images"] = record.media["images"]
  if record.media["video"]:
    item["video"] = record.media["video"]
  return item


def test_judgments_over_http_equal_in_process_judging(served):
  folder, media_root, records, config, url = served
  model, encoder, tok = _in_process(folder, media_root, config)
  expected = generate_judgments(model, encoder, records, swap=False,
                                max_prompt_length=MAX_LENGTH, max_new_tokens=NEW_TOKENS,
                                batch_size=ROWS, eos_ids=[tok.eos_token_id],
                                pad_id=tok.pad_token_id, mesh=make_mesh(),
                                patch_buckets=config.media.patch_buckets)
  assert {r.modality for r in records} >= {"image", "video", "text"}
  assert len(set(expected)) > 1  # the prompts (and media) reach the judge
  got = httpx.post(f"{url}/score", json={"items": [_item(r) for r in records]}, timeout=120)
  assert got.status_code == 200, got.text
  body = got.json()
  assert [j["text"] for j in body["items"]] == expected
  assert body["preferences"] == [verdict(t)[0] for t in expected]
  assert all(j["parse"] in ("strict", "lenient", "invalid") for j in body["items"])

  # Concurrent clients, one pair each, batched together: the same judgments.
  with concurrent.futures.ThreadPoolExecutor(4) as pool:
    answers = list(pool.map(lambda r: httpx.post(f"{url}/score", json={"items": [_item(r)]},
                                                 timeout=120), records))
  assert [a.json()["items"][0]["text"] for a in answers] == expected
  # A judge compares pairs.
  single = httpx.post(f"{url}/score", json={"items": [{"prompt": "x", "response": "y"}]},
                      timeout=30)
  assert single.status_code == 400 and "pairs" in single.json()["error"]


def test_chat_completions_equal_in_process_generation(served):
  folder, media_root, records, config, url = served
  image = records[0]
  with open(os.path.join(media_root, image.media["images"][0]), "rb") as f:
    data_url = "data:image/png;base64," + base64.b64encode(f.read()).decode()
  messages = [{"role": "system", "content": "You judge answers."},
              {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url}},
                                           {"type": "text", "text": image.prompt}]}]
  got = httpx.post(f"{url}/v1/chat/completions",
                   json={"model": "judge", "messages": messages, "max_tokens": NEW_TOKENS,
                         "temperature": 0}, timeout=120)
  assert got.status_code == 200, got.text
  body = got.json()
  assert body["object"] == "chat.completion"
  choice = body["choices"][0]
  assert choice["message"]["role"] == "assistant"

  model, encoder, tok = _in_process(folder, media_root, config)
  local = [{**messages[0]}, {"role": "user", "content": [
      {"type": "image", "path": image.media["images"][0]}, {"type": "text", "text": image.prompt}]}]
  row = messages_prompt(encoder, prompt_record(local), local, MAX_LENGTH)
  rows = [row] * ROWS
  tokens = generate_rows(model, encoder, rows, SamplingParams(greedy=True,
                                                              max_new_tokens=NEW_TOKENS),
                         needs=[len(row["prompt_ids"]), *media_needs(rows)],
                         eos_ids=(tok.eos_token_id,), pad_id=tok.pad_token_id, mesh=make_mesh(),
                         patch_buckets=config.media.patch_buckets)[0]
  assert choice["message"]["content"] == tok.decode(tokens, skip_special_tokens=True)
  assert body["usage"]["prompt_tokens"] == len(row["prompt_ids"])
  assert body["usage"]["completion_tokens"] == len(tokens)

  # max_tokens cuts the completion; bad fields are one-line 400s.
  short = httpx.post(f"{url}/v1/chat/completions",
                     json={"messages": messages, "max_tokens": 3}, timeout=120).json()
  assert short["choices"][0]["finish_reason"] == "length"
  assert short["choices"][0]["message"]["content"] == tok.decode(tokens[:3],
                                                                 skip_special_tokens=True)
  for body, words in (({"messages": messages, "max_tokens": 10**6}, "max_tokens"),
                      ({"messages": messages, "stream": True}, "stream"),
                      ({"messages": messages, "tools": []}, "unknown field"),
                      ({"messages": [{"role": "user"}]}, "messages[0].content"),
                      ({"messages": []}, "non-empty")):
    answer = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
    assert answer.status_code == 400 and words in answer.json()["error"], (body, answer.text)


def test_remote_reward_from_a_served_judge_compares_with_the_reference(served):
  from omni_rrm_jax.rewards.remote_reward import JUDGE_REWARDS, RemoteReward
  from omni_rrm_jax.rl.rollout import policy_messages

  _, _, records, _, url = served
  completions = ["It is red.", "Blue.", "Green, I think."]
  references = [r.response_a for r in records[:3]]
  remote = RemoteReward(url, timeout_s=120)
  rewards = remote([policy_messages(r) for r in records[:3]], completions, reference=references)
  assert remote.kind == "judge" and not remote.failed
  # What the server prefers for (completion as A, reference as B), as a reward.
  judged = httpx.post(f"{url}/score", json={"items": [
      {**_item(r), "response_a": c, "response_b": ref}
      for r, c, ref in zip(records[:3], completions, references)]}, timeout=120).json()
  assert rewards == [JUDGE_REWARDS[p] for p in judged["preferences"]]
  # Without a reference column a judge has nothing to compare with: counted, scored 0.
  assert remote([records[0].prompt], ["Red."]) == [0.0]
  assert remote.failed == {"no_reference": 1}
