"""`omni-rrm serve` with an audio RM (a tiny random Qwen2.5-Omni thinker): clips sent as
paths and as base64 get the rewards in-process scoring gives."""

from __future__ import annotations

import base64
import os

import httpx
import numpy as np
import pytest

from omni_rrm_jax.rl.rollout import policy_messages
from tests.data.audio_records import tone_pairs
from tests.rl.test_grpo_model_reward_media import OMNI, _export_rm
from tests.serve.server_process import running_server
from tests.serve.test_serve_rm import TOL, _in_process


@pytest.fixture(scope="module")
def served(tmp_path_factory):
  root = tmp_path_factory.mktemp("serve_audio")
  rm = _export_rm(root, OMNI, tone_pairs(3, 0, str(root / "media")))
  with running_server(root / "server", {"model.path": rm.folder,
                                        "serve.media_root": rm.media_root}) as (url, _):
    yield rm, url


@pytest.mark.slow  # a server of its own: ~35 s with the Omni thinker's compilations
def test_audio_over_http_equals_in_process_scoring(served):
  rm, url = served
  records = [r for r in rm.records if r.modality == "audio"][:2]
  completions = ["It rises.", "Two tones."]
  expected = _in_process(rm, [policy_messages(r) for r in records], completions)
  with open(os.path.join(rm.media_root, records[1].media["audio"]), "rb") as f:
    clip = base64.b64encode(f.read()).decode()
  items = [{"prompt": records[0].prompt, "response": completions[0],
            "audio": records[0].media["audio"]},
           {"prompt": records[1].prompt, "response": completions[1], "audio": {"base64": clip}}]
  got = httpx.post(f"{url}/score", json={"items": items}, timeout=120)
  assert got.status_code == 200, got.text
  np.testing.assert_allclose(got.json()["rewards"], expected, atol=TOL, rtol=0)
  # Two clips in one prompt: one clip per record, as in RM training.
  two = httpx.post(f"{url}/score", json={"items": [{"prompt": [{"role": "user", "content": [
      {"type": "audio", "audio": records[0].media["audio"]},
      {"type": "audio", "audio": records[1].media["audio"]},
      {"type": "text", "text": "Which?"}]}], "response": "x"}]}, timeout=60)
  assert two.status_code == 422 and "unsupported media" in two.json()["error"]
