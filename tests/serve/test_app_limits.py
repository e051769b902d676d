"""The app's limits with a stand-in scorer: timeouts, auth, and a failing model call
are one request's answer, and the server keeps serving."""

from __future__ import annotations

import time

from starlette.testclient import TestClient

from omni_rrm_jax.config import sections
from omni_rrm_jax.serve.app import ScoreServer


class SlowScorer:
  """Rewards len(ids); a response "slow" takes 1 s, "boom" fails the model call."""

  kind = "rm"

  def encode(self, item, where):
    return {"ids": [1] * (len(item.response) + 1), "response": item.response}

  @staticmethod
  def compiled():
    return 0

  @staticmethod
  def size(row):
    return len(row["ids"])

  def run(self, rows):
    if any(r["response"] == "boom" for r in rows):
      raise RuntimeError("device lost")
    if any(r["response"] == "slow" for r in rows):
      time.sleep(1.0)
    return [float(len(r["ids"])) for r in rows]


def _client(tmp_path, **serve):
  sv = sections.serve()
  sv.update(request_timeout_s=0.3, max_wait_ms=1.0, **serve)
  server = ScoreServer(SlowScorer(), sv, staging_dir=str(tmp_path), api_key="k")
  return TestClient(server.app, headers={"Authorization": "Bearer k"})


def _score(client, *responses):
  return client.post("/score", json={"items": [{"prompt": "p", "response": r}
                                                for r in responses]})


def test_timeouts_failures_and_auth_are_one_requests_answer(tmp_path):
  with _client(tmp_path) as client:
    assert _score(client, "ab", "abcd").json() == {"rewards": [3.0, 5.0]}
    slow = _score(client, "slow")
    assert slow.status_code == 504 and "serve.request_timeout_s" in slow.json()["error"]
    time.sleep(1.0)  # a model call runs to its end; requests behind it wait
    boom = _score(client, "boom")
    assert boom.status_code == 500 and boom.json()["error"] == "model call failed: RuntimeError"
    no_key = client.post("/score", json={}, headers={"Authorization": "Bearer nope"})
    assert no_key.status_code == 401
    assert client.get("/healthz", headers={}).json() == {"status": "ok", "kind": "rm"}
    assert _score(client, "a").json() == {"rewards": [2.0]}
    metrics = client.get("/metrics").text
    for status, count in (("200", 2), ("504", 1), ("500", 1), ("401", 1)):
      assert f'omni_rrm_requests_total{{route="/score",status="{status}"}} {count}.0' in metrics


def test_body_limit_is_checked_before_reading(tmp_path):
  with _client(tmp_path, max_request_bytes=100) as client:
    big = client.post("/score", content=b"x" * 101,
                      headers={"content-type": "application/json"})
    assert big.status_code == 413 and "101 bytes" in big.json()["error"]
    assert _score(client, "a").status_code == 200
