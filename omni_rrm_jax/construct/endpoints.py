"""A client of one OpenAI-compatible chat endpoint: bounded concurrency, a rate
limit, retries with exponential backoff, and replies cached by request.

What is retried: timeouts, connection errors, HTTP 429 and 5xx, and a 200
whose body is not a chat completion. Other 4xx replies are the request's
fault and fail at once. A request that still fails raises `EndpointError`
with a short reason; it is not cached, so a rerun asks it again.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import os
import time
from typing import Any, Mapping

import httpx

from omni_rrm_jax.construct.cache import ReplyCache, request_key

log = logging.getLogger(__name__)


class EndpointError(Exception):
  """A request that failed for good; `reason` is short and stable, for counting."""

  def __init__(self, reason: str, detail: str = ""):
    super().__init__(f"{reason}: {detail}" if detail else reason)
    self.reason = reason


@dataclasses.dataclass(frozen=True)
class EndpointSettings:
  """One endpoint's address and limits (the `endpoint` config section)."""

  name: str
  url: str
  model: str
  api_key: str | None = None
  concurrency: int = 8
  requests_per_second: float = 0.0
  timeout: float = 120.0
  max_retries: int = 4
  backoff: float = 1.0
  max_tokens: int = 1024
  temperature: float = 0.0

  @classmethod
  def from_config(cls, name: str, section: Mapping[str, Any]) -> EndpointSettings:
    """Settings from `construct.<name>`; a missing URL or model, a limit out of
    range or an unset API-key variable is a `ValueError` naming the leaf."""
    where = f"construct.{name}"
    for leaf in ("url", "model"):
      if not section[leaf]:
        raise ValueError(f"{where}.{leaf} is empty: every endpoint needs a URL and a model")
    if not str(section["url"]).startswith(("http://", "https://")):
      raise ValueError(f"{where}.url={section['url']!r}: must start with http:// or https://")
    for leaf in ("concurrency", "timeout", "max_tokens"):
      if not section[leaf] > 0:
        raise ValueError(f"{where}.{leaf}={section[leaf]!r}: must be > 0")
    for leaf in ("requests_per_second", "max_retries", "backoff", "temperature"):
      if section[leaf] < 0:
        raise ValueError(f"{where}.{leaf}={section[leaf]!r}: must be >= 0")
    api_key = None
    if section["api_key_env"]:
      api_key = os.environ.get(section["api_key_env"])
      if not api_key:
        raise ValueError(f"{where}.api_key_env={section['api_key_env']!r}: "
                         "that environment variable is not set")
    return cls(name=name, url=str(section["url"]).rstrip("/"), model=section["model"],
               api_key=api_key, concurrency=int(section["concurrency"]),
               requests_per_second=float(section["requests_per_second"]),
               timeout=float(section["timeout"]), max_retries=int(section["max_retries"]),
               backoff=float(section["backoff"]), max_tokens=int(section["max_tokens"]),
               temperature=float(section["temperature"]))


class _RateLimiter:
  """Spaces request starts at least 1 / rate seconds apart (no limit at rate 0)."""

  def __init__(self, rate: float):
    self.interval = 1.0 / rate if rate > 0 else 0.0
    self._next = 0.0
    self._lock = asyncio.Lock()

  async def wait(self) -> None:
    if not self.interval:
      return
    async with self._lock:
      now = time.monotonic()
      start = max(now, self._next)
      self._next = start + self.interval
    await asyncio.sleep(start - now)


def _content(reply: Any) -> str:
  """The first choice's message text of a chat completion; ValueError otherwise."""
  try:
    content = reply["choices"][0]["message"]["content"]
  except (KeyError, IndexError, TypeError):
    raise ValueError("not a chat completion") from None
  if not isinstance(content, str):
    raise ValueError("message content is not a string")
  return content


class ChatEndpoint:
  """Chat completions from one endpoint; `stats` counts what happened, by kind."""

  def __init__(self, settings: EndpointSettings, client: httpx.AsyncClient, cache: ReplyCache):
    self.settings = settings
    self._client = client
    self._cache = cache
    self._slots = asyncio.Semaphore(settings.concurrency)
    self._limiter = _RateLimiter(settings.requests_per_second)
    self.stats: collections.Counter[str] = collections.Counter()

  def _body(self, messages: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    s = self.settings
    return {"model": s.model, "messages": messages, "max_tokens": s.max_tokens,
            "temperature": s.temperature, "seed": seed}

  async def complete(self, messages: list[dict[str, Any]], *, seed: int = 0) -> str:
    """The reply's text, from the cache when this exact request was answered before.

    Raises:
      EndpointError: the request failed after its retries (or at once, on a 4xx
        other than 429).
    """
    s = self.settings
    url = f"{s.url}/chat/completions"
    body = self._body(messages, seed)
    key = request_key(url, body)
    cached = self._cache.get(key)
    if cached is not None:
      self.stats["cache_hits"] += 1
      return cached["content"]
    headers = {"Authorization": f"Bearer {s.api_key}"} if s.api_key else {}
    reason = ""
    async with self._slots:
      for attempt in range(s.max_retries + 1):
        if attempt:
          self.stats["retries"] += 1
          log.info("%s: retry %d after %s", s.name, attempt, reason)
          await asyncio.sleep(s.backoff * 2 ** (attempt - 1))
        await self._limiter.wait()
        self.stats["requests"] += 1
        try:
          response = await self._client.post(url, json=body, headers=headers, timeout=s.timeout)
        except httpx.TimeoutException:
          reason = "timeout"
          continue
        except httpx.TransportError as e:
          reason = f"connection error ({type(e).__name__})"
          continue
        if response.status_code == 429 or response.status_code >= 500:
          reason = f"HTTP {response.status_code}"
          continue
        if response.status_code != 200:
          self.stats["failed"] += 1
          raise EndpointError(f"HTTP {response.status_code}", response.text[:200])
        try:
          content = _content(response.json())
        except ValueError:
          reason = "malformed reply"
          continue
        self._cache.put(key, {"content": content})
        return content
    self.stats["failed"] += 1
    raise EndpointError(reason, f"{s.name} at {s.url}, {s.max_retries + 1} attempts")
