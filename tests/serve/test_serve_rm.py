"""`omni-rrm serve` with a multimodal scalar RM, on 127.0.0.1.

A tiny random Qwen2.5-VL RM, exported as an `rm` run exports it, is served by
the real command; image, video and text items sent over HTTP (media as paths
under the media root, as `data:` URLs and as base64, from concurrent clients)
must get the rewards in-process scoring gives (GRPO's `ModelReward`), a suite
of bad requests must each get a 4xx with a one-line reason while the server
keeps serving, and a GRPO run with `reward.remote_url` must get the rewards a
run with the RM in process gets.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import socket
import threading

import httpx
import numpy as np
import pytest

from omni_rrm_jax.rewards.remote_reward import RemoteReward
from omni_rrm_jax.rl.model_reward import ModelReward
from omni_rrm_jax.rl.rollout import policy_messages
from omni_rrm_jax.sharding.mesh import make_mesh
from omni_rrm_jax.synthetic.mixture import mixed_pairs
from tests.rl.test_grpo_model_reward_media import VL, _export_rm
from tests.serve.server_process import running_server

KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_LENGTH, BUCKET, ROWS = 256, 64, 8  # configs/serve.py:tiny
MAX_BYTES = 2**20
TOL = 1e-5
COMPLETIONS = ["It is red.", "The square is blue.", "", "Green, I think.", "It is 7.", "No."]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
  root = tmp_path_factory.mktemp("serve_rm")
  records = mixed_pairs(4, 0, ("image", "video"), media_root=str(root / "media")) + mixed_pairs(2, 0)
  rm = _export_rm(root, VL, records)
  (root / "key").write_text(KEY + "\n")
  overrides = {"model.path": rm.folder, "serve.media_root": rm.media_root,
               "serve.api_key_file": root / "key", "serve.max_request_bytes": MAX_BYTES}
  with running_server(root / "server", overrides) as (url, proc):
    yield rm, url, proc


def _in_process(rm, prompts, completions) -> np.ndarray:
  m = rm.config.media  # the serve config's media section has the same defaults
  reward = ModelReward(rm.folder, batch_size=ROWS, max_length=MAX_LENGTH, bucket=BUCKET,
                       mesh=make_mesh(), media_root=rm.media_root, patch_buckets=m.patch_buckets,
                       audio_frame_buckets=m.audio_frame_buckets, media_overrides=m.preprocess)
  return np.asarray(reward(prompts, completions))


def _post(url, body, **kw) -> httpx.Response:
  return httpx.post(f"{url}/score", json=body, headers=AUTH, timeout=60, **kw)


def _data_url(path: str, mime: str) -> str:
  with open(path, "rb") as f:
    return f"data:{mime};base64," + base64.b64encode(f.read()).decode()


def test_scores_over_http_equal_in_process_scoring(served):
  rm, url, _ = served
  image_a, video, image_b, _, text, _ = rm.records
  records = [image_a, video, image_b, text, image_a, video]
  expected = _in_process(rm, [policy_messages(r) for r in records], COMPLETIONS)
  assert np.std(expected) > 1e-3

  def flat(r, c):  # the item form: media as fields
    item = {"prompt": r.prompt, "response": c}
    if r.media["images"]:
      item["images"] = r.media["images"]
    if r.media["video"]:
      item["video"] = r.media["video"]
    return item

  items = [flat(r, c) for r, c in zip(records, COMPLETIONS)]
  # The same media inline: a data: URL, base64, and chat-message parts.
  items[4]["images"] = [_data_url(os.path.join(rm.media_root, image_a.media["images"][0]),
                                  "image/png")]
  with open(os.path.join(rm.media_root, video.media["video"]), "rb") as f:
    items[5] = {"prompt": [{"role": "user", "content": [
        {"type": "video", "video": {"base64": base64.b64encode(f.read()).decode()}},
        {"type": "text", "text": video.prompt}]}], "response": COMPLETIONS[5]}
  got = _post(url, {"items": items})
  assert got.status_code == 200, got.text
  np.testing.assert_allclose(got.json()["rewards"], expected, atol=TOL, rtol=0)
  # One program per bucket: every item fits the length bucket of 64 and the row bucket
  # of 8 (8 batch shards); a call with media pads to 64 patches, one without to 0.
  assert _metrics(url)["omni_rrm_compiled_programs"] == 1
  text_only = _post(url, {"items": [items[3]]}).json()["rewards"]
  np.testing.assert_allclose(text_only, expected[3:4], atol=TOL, rtol=0)
  assert _metrics(url)["omni_rrm_compiled_programs"] == 2
  again = _post(url, {"items": items[::-1]})
  np.testing.assert_allclose(again.json()["rewards"], expected[::-1], atol=TOL, rtol=0)

  # Concurrent clients, one item each: batched together, the same rewards.
  with concurrent.futures.ThreadPoolExecutor(6) as pool:
    answers = list(pool.map(lambda it: _post(url, {"items": [it]}), items))
  assert [a.status_code for a in answers] == [200] * 6
  np.testing.assert_allclose([a.json()["rewards"][0] for a in answers], expected, atol=TOL,
                             rtol=0)
  metrics = _metrics(url)
  assert metrics['omni_rrm_requests_total{route="/score",status="200"}'] == 9
  assert metrics["omni_rrm_batch_rows_count"] >= 4  # model calls
  assert metrics["omni_rrm_compiled_programs"] == 2


def _metrics(url) -> dict[str, float]:
  text = httpx.get(f"{url}/metrics", headers=AUTH, timeout=10).text
  return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
          for line in text.splitlines() if line and not line.startswith("#")}


def test_openrlhf_query_shape(served):
  rm, url, _ = served
  prompts = ["What colour is the sky?", "Add 3 and 4."]
  responses = [" It is blue.", " 7."]
  got = _post(url, {"query": [p + r for p, r in zip(prompts, responses)], "prompts": prompts,
                    "labels": ["", ""]})
  assert got.status_code == 200, got.text
  expected = _in_process(rm, prompts, responses)
  np.testing.assert_allclose(got.json()["rewards"], expected, atol=TOL, rtol=0)


def _raw(url, payload: bytes, headers=None) -> httpx.Response:
  return httpx.post(f"{url}/score", content=payload,
                    headers={"content-type": "application/json", **AUTH, **(headers or {})},
                    timeout=60)


def test_bad_requests_get_a_4xx_with_one_line_and_the_server_keeps_serving(served, tmp_path):
  rm, url, proc = served
  image = rm.records[0]
  good = {"prompt": image.prompt, "response": "Red.", "images": image.media["images"]}
  png = os.path.join(rm.media_root, image.media["images"][0])
  with open(png, "rb") as f:
    truncated_png = base64.b64encode(f.read()[:40]).decode()
  bad = {
      "malformed JSON": (b'{"items": [', 400, "malformed JSON"),
      "not an object": (b"[1, 2]", 400, "JSON object"),
      "unknown top-level field": (json.dumps({"items": [good], "extra": 1}).encode(), 400,
                                  "unknown field"),
      "unknown item field": (json.dumps({"items": [{**good, "colour": "red"}]}).encode(), 400,
                             "items[0]: unknown field"),
      "missing response": (json.dumps({"items": [{"prompt": "x"}]}).encode(), 400,
                           "'response'"),
      "pair for an RM": (json.dumps({"items": [{"prompt": "x", "response_a": "a",
                                                "response_b": "b"}]}).encode(), 400, "pairs"),
      "path outside the root": (json.dumps({"items": [{**good, "images": ["../../etc/passwd"]}]})
                                .encode(), 400, "escapes media root"),
      "absolute path outside": (json.dumps({"items": [{**good, "images": ["/etc/hostname"]}]})
                                .encode(), 400, "escapes media root"),
      "missing file": (json.dumps({"items": [{**good, "images": ["images/none.png"]}]}).encode(),
                       400, "not found"),
      "not base64": (json.dumps({"items": [{**good, "images": [{"base64": "@@@"}]}]}).encode(),
                     400, "base64"),
      "undecodable image": (json.dumps({"items": [{**good, "images": [
          "data:image/png;base64," + truncated_png]}]}).encode(), 422, "bad media"),
      "http URL": (json.dumps({"items": [{**good, "images": ["http://example.com/a.png"]}]})
                   .encode(), 400, "data: URLs"),
      "wrong type": (json.dumps({"items": [{"prompt": 3, "response": "x"}]}).encode(), 400,
                     "items[0].prompt"),
      "empty items": (b'{"items": []}', 400, "no items"),
      "too many items": (json.dumps({"items": [good] * 300}).encode(), 413, "limit"),
      "oversized body": (json.dumps({"items": [{**good, "response": "x" * (MAX_BYTES + 10)}]})
                         .encode(), 413, "max_request_bytes"),
      "wrong key": (json.dumps({"items": [good]}).encode(), 401, "API key"),
  }
  for name, (payload, status, words) in bad.items():
    headers = {"Authorization": "Bearer wrong"} if name == "wrong key" else None
    answer = _raw(url, payload, headers)
    assert answer.status_code == status, (name, answer.status_code, answer.text)
    reason = answer.json()["error"]
    assert words in reason and "\n" not in reason, (name, reason)
  assert httpx.post(f"{url}/v1/chat/completions", json={}, headers=AUTH, timeout=10
                    ).status_code == 404  # an RM server has no chat
  assert httpx.get(f"{url}/healthz", timeout=10).json() == {"status": "ok", "kind": "rm"}
  assert proc.poll() is None
  again = _post(url, {"items": [good]})
  assert again.status_code == 200
  np.testing.assert_allclose(
      again.json()["rewards"],
      _in_process(rm, [policy_messages(image)], ["Red."]), atol=TOL, rtol=0)


def test_remote_reward_scores_like_the_server_and_counts_failures(served):
  rm, url, _ = served
  image, video = rm.records[:2]
  prompts = [policy_messages(image), policy_messages(video)]
  remote = RemoteReward(url, timeout_s=30, api_key=KEY)
  np.testing.assert_allclose(remote(prompts, ["Red.", "Blue."]),
                             _in_process(rm, prompts, ["Red.", "Blue."]), atol=TOL, rtol=0)
  assert remote([], []) == [] and not remote.failed
  # Wrong key: an HTTP error, scored 0 and counted.
  assert RemoteReward(url, timeout_s=30, api_key="nope")(prompts, ["a", "b"]) == [0.0, 0.0]
  # A server that accepts the connection and never answers: a timeout, not a hang.
  with socket.socket() as silent:
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    stuck = RemoteReward(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout_s=0.5)
    assert stuck(prompts, ["a", "b"]) == [0.0, 0.0]
  assert stuck.failed == {"timeout": 2}
  with socket.socket() as free:
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
  refused = RemoteReward(f"http://127.0.0.1:{port}", timeout_s=2)
  assert refused(prompts, ["a", "b"]) == [0.0, 0.0] and refused.failed == {"connection": 2}


def _grpo(rm, workdir, **reward) -> tuple[dict, dict]:
  """One GRPO step of a random VL policy on the RM's media records; (summary, train metrics)."""
  from omni_rrm_jax.config.tasks import grpo_config
  from omni_rrm_jax.data.records import write_jsonl
  from omni_rrm_jax.rl import grpo_loop

  write_jsonl(rm.records[:4], str(workdir / "train.jsonl"))  # image, video, image, video
  c = grpo_config("policy")
  c.model.architecture = VL
  c.tokenizer = rm.folder
  c.data.update(train_path=str(workdir / "train.jsonl"), media_root=rm.media_root,
                max_prompt_length=64, prompt_bucket=64)
  c.media.update(patch_buckets=rm.config.media.patch_buckets,
                 audio_frame_buckets=rm.config.media.audio_frame_buckets)
  c.rollout.update(prompts_per_step=4, num_generations=2, max_new_tokens=4)
  c.reward.update(functions="", **reward)
  c.train.update(num_steps=1, progress_bar=False)
  c.checkpoint.async_save = False
  c.eval.num_prompts = 0
  c.export.at_end = False
  summary = grpo_loop.run(c, str(workdir / "run"))
  with open(workdir / "run" / "metrics.jsonl", encoding="utf-8") as f:
    train = [r for r in map(json.loads, f) if r["split"] == "train"]
  assert len(train) == 1 and np.isfinite(train[0]["loss"])
  return summary, train[0]


def _remote_grpo(rm, url, tmp_path) -> dict:
  (tmp_path / "key").write_text(KEY)
  (tmp_path / "remote").mkdir()
  summary, remote = _grpo(rm, tmp_path / "remote", remote_url=url,
                          remote_api_key_file=str(tmp_path / "key"))
  assert summary["remote_reward_failed"] == {}
  assert remote["reward/remote_reward_std"] > 0
  return remote


def test_grpo_with_a_remote_reward(served, tmp_path):
  rm, url, _ = served
  _remote_grpo(rm, url, tmp_path)


@pytest.mark.slow
def test_grpo_with_a_remote_reward_gets_the_in_process_rewards(served, tmp_path):
  rm, url, _ = served
  remote = _remote_grpo(rm, url, tmp_path)
  # The same step with the RM in process: the same sampled completions, the same rewards.
  (tmp_path / "local").mkdir()
  _, local = _grpo(rm, tmp_path / "local", model_path=rm.folder, model_max_length=MAX_LENGTH,
                   model_bucket=BUCKET, model_batch_size=ROWS)
  for stat in ("mean", "std"):
    assert remote[f"reward/remote_reward_{stat}"] == pytest.approx(
        local[f"reward/model_reward_{stat}"], abs=TOL)


@pytest.mark.slow
def test_grpo_survives_a_server_that_times_out(served, tmp_path):
  rm, _, _ = served
  with socket.socket() as silent:
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    summary, train = _grpo(rm, tmp_path, remote_url=f"http://127.0.0.1:{silent.getsockname()[1]}",
                           remote_timeout_s=0.5)
  assert summary["remote_reward_failed"] == {"timeout": 8}  # 4 prompts x 2 samples
  assert train["reward/remote_reward_mean"] == 0.0
