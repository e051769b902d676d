"""A reward from an `omni-rrm serve` server: one `POST /score` per call.

GRPO's `reward.remote_url` scores a rollout's completions with a served scalar
RM (the trained one, or any server speaking the same API) instead of a model
in the training process. Each process sends its own rows, as the in-process
model reward scores each process's own rows; the server batches concurrent
requests. A call that fails (timeout, connection refused, a non-200 answer, a
malformed body) scores every one of its completions the reward's minimum
(0.0, as the model reward does for prompts it cannot score) and is counted by
reason in `RemoteReward.failed`; the run goes on.
"""

from __future__ import annotations

import collections
import logging
import math
from typing import Any

import httpx

from omni_rrm_jax.rewards.contract import as_text, completion_list, minimum_of

log = logging.getLogger(__name__)

FAILURE_REASONS = ("timeout", "connection", "http_status", "bad_response")


class RemoteReward:
  """`(prompts, completions, **columns) -> list[float]` from a served scalar RM.

  Args:
    url: the server, e.g. `http://127.0.0.1:8000`.
    timeout_s: seconds one call may take (connecting, sending, waiting, reading).
    api_key: the server's key ('' for none), sent as a Bearer token.
  """

  def __init__(self, url: str, *, timeout_s: float = 60.0, api_key: str = ""):
    self.url = url.rstrip("/") + "/score"
    self.timeout_s = timeout_s
    self.__name__ = "remote_reward"
    self.failed: collections.Counter[str] = collections.Counter()  # completions, by reason
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    self._client = httpx.Client(headers=headers, timeout=timeout_s)

  def close(self) -> None:
    self._client.close()

  def _fail(self, reason: str, detail: str, n: int) -> list[float]:
    if not self.failed:
      log.warning("remote reward %s: %s (%s); its %d completions score %g, and failed calls are "
                  "counted (RemoteReward.failed)", self.url, reason, detail, n, minimum_of(self))
    self.failed[reason] += n
    return [minimum_of(self)] * n

  def __call__(self, prompts: Any, completions: Any, **columns: Any) -> list[float]:
    del columns
    completions = completion_list(completions)
    prompts = list(prompts) if isinstance(prompts, (list, tuple)) else [prompts]
    if len(prompts) != len(completions):
      raise ValueError(f"{len(prompts)} prompts for {len(completions)} completions")
    if not completions:
      return []
    items = [{"prompt": p if isinstance(p, (str, list)) else as_text(p), "response": as_text(c)}
             for p, c in zip(prompts, completions)]
    n = len(items)
    try:
      response = self._client.post(self.url, json={"items": items})
    except httpx.TimeoutException as e:
      return self._fail("timeout", f"no answer within {self.timeout_s:g} s: {type(e).__name__}", n)
    except httpx.HTTPError as e:
      return self._fail("connection", f"{type(e).__name__}: {e}", n)
    if response.status_code != 200:
      return self._fail("http_status", f"HTTP {response.status_code}: {response.text[:200]}", n)
    try:
      rewards = response.json()["rewards"]
      if len(rewards) != n or not all(isinstance(r, (int, float)) and math.isfinite(r)
                                      for r in rewards):
        raise ValueError(f"{len(rewards)} rewards for {n} completions, or a non-finite one")
    except (ValueError, KeyError, TypeError) as e:
      return self._fail("bad_response", f"{type(e).__name__}: {str(e)[:200]}", n)
    return [float(r) for r in rewards]
