"""A reward from an `omni-rrm serve` server: one `POST /score` per call.

GRPO's `reward.remote_url` scores a rollout's completions with a served scalar
RM (the trained one, or any server speaking the same API) instead of a model
in the training process. A served judge (the server's `/healthz` says which)
compares each completion, as response A, with the row's `reference` column
(a policy recipe's reference answer): 1 when it prefers the completion, 0.5 for
"equal", 0 otherwise (the reference preferred, or no parsable judgment).
Each process sends its own rows, as the in-process
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

FAILURE_REASONS = ("timeout", "connection", "http_status", "bad_response", "no_reference")
# A served judge's preference for the completion (response A) -> its reward.
JUDGE_REWARDS = {"A": 1.0, "equal": 0.5, "B": 0.0, None: 0.0}


class RemoteReward:
  """`(prompts, completions, **columns) -> list[float]` from a served RM or judge.

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
    self._base = url.rstrip("/")
    self.kind: str | None = None  # "rm" or "judge", asked once

  def _server_kind(self) -> str:
    if self.kind is None:
      answer = self._client.get(f"{self._base}/healthz")
      answer.raise_for_status()
      self.kind = answer.json()["kind"]
      if self.kind not in ("rm", "judge"):
        raise ValueError(f"unknown server kind {self.kind!r}")
    return self.kind

  def close(self) -> None:
    self._client.close()

  def _fail(self, reason: str, detail: str, n: int) -> list[float]:
    if not self.failed:
      log.warning("remote reward %s: %s (%s); its %d completions score %g, and failed calls are "
                  "counted (RemoteReward.failed)", self.url, reason, detail, n, minimum_of(self))
    self.failed[reason] += n
    return [minimum_of(self)] * n

  def __call__(self, prompts: Any, completions: Any, **columns: Any) -> list[float]:
    completions = completion_list(completions)
    prompts = list(prompts) if isinstance(prompts, (list, tuple)) else [prompts]
    if len(prompts) != len(completions):
      raise ValueError(f"{len(prompts)} prompts for {len(completions)} completions")
    if not completions:
      return []
    n = len(completions)
    prompts = [p if isinstance(p, (str, list)) else as_text(p) for p in prompts]
    try:
      kind = self._server_kind()
      if kind == "judge":
        references = columns.get("reference")
        if not isinstance(references, (list, tuple)) or len(references) != n:
          return self._fail("no_reference", "a judge compares each completion with the "
                            "'reference' column (a policy recipe's)", n)
        items = [{"prompt": p, "response_a": as_text(c),
                  "response_b": as_text(r[0] if isinstance(r, (list, tuple)) and r else r)}
                 for p, c, r in zip(prompts, completions, references)]
      else:
        items = [{"prompt": p, "response": as_text(c)} for p, c in zip(prompts, completions)]
      response = self._client.post(self.url, json={"items": items})
    except httpx.TimeoutException as e:
      return self._fail("timeout", f"no answer within {self.timeout_s:g} s: {type(e).__name__}", n)
    except httpx.HTTPStatusError as e:  # /healthz
      return self._fail("http_status", f"HTTP {e.response.status_code} from /healthz", n)
    except httpx.HTTPError as e:
      return self._fail("connection", f"{type(e).__name__}: {e}", n)
    except (ValueError, KeyError, TypeError) as e:  # /healthz's body
      return self._fail("bad_response", f"/healthz: {type(e).__name__}: {str(e)[:200]}", n)
    if response.status_code != 200:
      return self._fail("http_status", f"HTTP {response.status_code}: {response.text[:200]}", n)
    try:
      body = response.json()
      if kind == "judge":
        rewards = [JUDGE_REWARDS[p] for p in body["preferences"]]
      else:
        rewards = body["rewards"]
      if len(rewards) != n or not all(isinstance(r, (int, float)) and math.isfinite(r)
                                      for r in rewards):
        raise ValueError(f"{len(rewards)} rewards for {n} completions, or a non-finite one")
    except (ValueError, KeyError, TypeError) as e:
      return self._fail("bad_response", f"{type(e).__name__}: {str(e)[:200]}", n)
    return [float(r) for r in rewards]
