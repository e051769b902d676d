"""The ASGI app: `/score`, `/v1/chat/completions`, `/healthz`, `/metrics`.

Starlette (the ASGI toolkit FastAPI is built on) gives routing, requests and
responses and nothing else; validation is ours (`serve/items.py`) so every bad
request gets one line saying what and where. A handler's failure is that
request's 4xx / 5xx, never the server's end.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
import uuid
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from omni_rrm_jax.eval.judge_eval import verdict
from omni_rrm_jax.rewards.judgment import parse_judgment
from omni_rrm_jax.serve.bad_request import BadRequest
from omni_rrm_jax.serve.batcher import DynamicBatcher, ModelCallFailed
from omni_rrm_jax.serve.items import Item, parse_messages, parse_score_request
from omni_rrm_jax.serve.media_refs import MediaStager
from omni_rrm_jax.serve.metrics import ServerMetrics

log = logging.getLogger(__name__)
# OpenAI's request fields a judge can honour or safely ignore (it decodes greedily,
# so temperature, top_p and seed change nothing).
_CHAT_KEYS = {"model", "messages", "max_tokens", "max_completion_tokens", "temperature",
              "n", "stream", "user", "top_p", "seed"}


def _error(status: int, reason: str) -> JSONResponse:
  return JSONResponse({"error": reason}, status_code=status)


async def _json_body(request: Request, limit: int) -> Any:
  """The parsed body, refusing more than `limit` bytes before reading them all."""
  declared = request.headers.get("content-length")
  if declared is not None and (not declared.isdigit() or int(declared) > limit):
    raise BadRequest(f"body of {declared} bytes; the limit is {limit} (serve.max_request_bytes)",
                     status=413)
  chunks, size = [], 0
  async for chunk in request.stream():
    size += len(chunk)
    if size > limit:
      raise BadRequest(f"body over {limit} bytes (serve.max_request_bytes)", status=413)
    chunks.append(chunk)
  try:
    return json.loads(b"".join(chunks))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise BadRequest(f"malformed JSON: {e}") from None


def _judgment(text: str) -> dict[str, Any]:
  preference, strict = verdict(text)
  parsed = parse_judgment(text, strict=False)
  return {"preference": preference,
          "parse": "strict" if strict else ("lenient" if parsed.ok else "invalid"),
          "error": None if parsed.ok else parsed.error,
          "judgment": _judgment_fields(parsed.judgment) if parsed.ok else None,
          "text": text}


def _judgment_fields(judgment) -> dict[str, Any]:
  return {k: getattr(judgment, k) for k in ("score_a", "score_b", "better", "reasoning",
                                             "final_verdict")}


class ScoreServer:
  """The app's state: a scorer (`serve/scorers.py`), its batcher and metrics.

  Args:
    scorer: `RewardModelScorer` or `JudgeScorer`.
    serve: the `serve` config section.
    staging_dir: where inline media are written while a request is encoded.
    api_key: the Bearer token clients must send; empty: none.
    model_name: the name `/v1/chat/completions` answers with.
  """

  def __init__(self, scorer, serve, *, staging_dir: str, api_key: str = "",
               model_name: str = "omni-rrm"):
    self.scorer, self.sv, self.staging_dir = scorer, serve, staging_dir
    self.api_key, self.model_name = api_key, model_name
    self.metrics = ServerMetrics(scorer.compiled)
    self.batcher = DynamicBatcher(scorer.run, size_of=scorer.size, max_rows=serve.max_batch_rows,
                                  max_tokens=serve.max_batch_tokens,
                                  max_wait_s=serve.max_wait_ms / 1000,
                                  on_batch=self.metrics.on_batch)
    routes = [Route("/score", self._route(self._score), methods=["POST"]),
              Route("/v1/chat/completions", self._route(self._chat), methods=["POST"]),
              Route("/healthz", self._healthz, methods=["GET"]),
              Route("/metrics", self._route(self._metrics, timed=False), methods=["GET"])]
    self.app = Starlette(routes=routes, lifespan=self._lifespan)

  @contextlib.asynccontextmanager
  async def _lifespan(self, app):
    del app
    await self.batcher.start()
    try:
      yield
    finally:
      await self.batcher.stop()

  def _authorized(self, request: Request) -> bool:
    if not self.api_key:
      return True
    given = request.headers.get("authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {self.api_key}".encode())

  def _route(self, handler, timed: bool = True):
    async def endpoint(request: Request) -> Response:
      t = time.perf_counter()
      try:
        if not self._authorized(request):
          response = _error(401, "missing or wrong API key (Authorization: Bearer KEY)")
        elif timed:
          response = await asyncio.wait_for(handler(request), self.sv.request_timeout_s)
        else:
          response = await handler(request)
      except BadRequest as e:
        response = _error(e.status, e.reason)
      except asyncio.TimeoutError:
        response = _error(504, f"not answered within {self.sv.request_timeout_s:g} s "
                               "(serve.request_timeout_s)")
      except ModelCallFailed as e:
        response = _error(500, str(e))
      except ClientDisconnect:
        response = _error(499, "client disconnected")
      except Exception as e:  # noqa: BLE001 -- one request's failure, not the server's.
        log.exception("%s failed", request.url.path)
        response = _error(500, f"internal error: {type(e).__name__}")
      self.metrics.on_request(request.url.path, response.status_code, time.perf_counter() - t)
      return response

    return endpoint

  def _encode(self, items: list[Item]) -> list[Any]:
    if self.scorer.kind == "judge":
      for i, item in enumerate(items):
        if not item.pairwise:
          raise BadRequest(f"items[{i}]: a judge compares pairs: give response_a and response_b")
    return [self.scorer.encode(item, f"items[{i}]") for i, item in enumerate(items)]

  def _parse_and_encode(self, body: Any) -> tuple[list[Any], str]:
    with MediaStager(self.sv.media_root, self.staging_dir) as stager:
      items, shape = parse_score_request(body, stager, max_items=self.sv.max_items)
      return self._encode(items), shape

  async def _score(self, request: Request) -> Response:
    body = await _json_body(request, self.sv.max_request_bytes)
    rows, shape = await run_in_threadpool(self._parse_and_encode, body)
    results = await self.batcher.submit(rows)
    if self.scorer.kind == "rm":
      return JSONResponse({"rewards": results})
    judged = [_judgment(self.scorer.decode(tokens)) for tokens in results]
    return JSONResponse({"preferences": [j["preference"] for j in judged], "items": judged})

  def _chat_rows(self, body: Any) -> tuple[list[Any], int]:
    if not isinstance(body, dict):
      raise BadRequest("the body must be a JSON object")
    unknown = sorted(set(body) - _CHAT_KEYS)
    if unknown:
      raise BadRequest(f"body: unknown field(s) {', '.join(map(repr, unknown))}")
    if body.get("stream"):
      raise BadRequest("stream=true is not supported")
    if body.get("n", 1) != 1:
      raise BadRequest("n must be 1")
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is None:
      limit = self.scorer.max_new_tokens
    if (not isinstance(limit, int) or isinstance(limit, bool) or not
        0 < limit <= self.scorer.max_new_tokens):
      raise BadRequest(f"max_tokens must be an integer in [1, {self.scorer.max_new_tokens}] "
                       "(judge.max_new_tokens)")
    with MediaStager(self.sv.media_root, self.staging_dir) as stager:
      messages = parse_messages(body.get("messages"), stager, "messages")
      return [self.scorer.encode(Item(messages, response=""), "messages")], limit

  async def _chat(self, request: Request) -> Response:
    if self.scorer.kind != "judge":
      raise BadRequest("this server holds a scalar RM; chat completions need a judge",
                       status=404)
    body = await _json_body(request, self.sv.max_request_bytes)
    rows, limit = await run_in_threadpool(self._chat_rows, body)
    tokens = (await self.batcher.submit(rows))[0]
    finish = "length" if len(tokens) >= limit else "stop"
    text = self.scorer.decode(tokens[:limit])
    return JSONResponse({
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
        "created": int(time.time()), "model": self.model_name,
        "choices": [{"index": 0, "finish_reason": finish,
                     "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": len(rows[0]["prompt_ids"]),
                  "completion_tokens": min(len(tokens), limit),
                  "total_tokens": len(rows[0]["prompt_ids"]) + min(len(tokens), limit)}})

  async def _healthz(self, request: Request) -> Response:
    del request
    return JSONResponse({"status": "ok", "kind": self.scorer.kind})

  async def _metrics(self, request: Request) -> Response:
    del request
    return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)
