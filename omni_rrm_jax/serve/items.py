"""Request bodies -> items to score, with a one-line reason for anything malformed.

Two shapes reach `POST /score`:

- native: `{"items": [ITEM, ...]}`, an ITEM being
  `{"prompt": TEXT_OR_MESSAGES, "response": TEXT}` (a scalar RM) or
  `{"prompt": ..., "response_a": TEXT, "response_b": TEXT}` (a judge), with
  optional `"images": [REF, ...]`, `"video": REF`, `"audio": REF` (each REF a
  path under the media root, a `data:` URL or `{"base64": ...}`); a prompt given
  as chat messages may hold media parts `{"type": "image", "image": REF}`.
- OpenRLHF's remote RM: `{"query": [TEXT, ...], "prompts": [TEXT, ...]}`
  (`prompts` optional; `labels` accepted and ignored): each query is scored as
  the response to its prompt when it starts with it, else as a response to an
  empty prompt.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from omni_rrm_jax.serve.bad_request import BadRequest
from omni_rrm_jax.serve.media_refs import MediaStager

MEDIA_KINDS = ("image", "video", "audio")
_ITEM_KEYS = {"prompt", "response", "response_a", "response_b", "images", "video", "audio"}
_OPENRLHF_KEYS = {"query", "prompts", "labels"}
_ROLES = {"system", "user", "assistant"}


@dataclasses.dataclass
class Item:
  """One thing to score: chat `messages` whose media parts are
  `{"type": kind, "path": absolute path}`, and one response or two."""

  messages: list[dict[str, Any]]
  response: str | None = None
  response_a: str | None = None
  response_b: str | None = None

  @property
  def pairwise(self) -> bool:
    return self.response_a is not None


def _text(value: Any, where: str) -> str:
  if not isinstance(value, str):
    raise BadRequest(f"{where} must be a string, got {type(value).__name__}")
  return value


def _unknown(keys, allowed, where: str) -> None:
  extra = sorted(str(k) for k in set(keys) - allowed)
  if extra:
    raise BadRequest(f"{where}: unknown field(s) {', '.join(map(repr, extra))}; "
                     f"known: {', '.join(sorted(allowed))}")


def media_part(part: Mapping[str, Any], stager: MediaStager, where: str) -> dict[str, Any]:
  """A chat content part as the encoders read it: text, or a media part with
  its reference resolved (`{"type": "image", "image" | "path": REF}`; the
  OpenAI forms `image_url`, `video_url` and `input_audio` too)."""
  if not isinstance(part, Mapping):
    raise BadRequest(f"{where} must be an object")
  kind = part.get("type")
  if kind == "text":
    _unknown(part, {"type", "text"}, where)
    return {"type": "text", "text": _text(part.get("text"), f"{where}.text")}
  if kind in ("image_url", "video_url"):
    url = part.get(kind)
    ref = url.get("url") if isinstance(url, Mapping) else url
    return {"type": kind[:-4], "path": stager.resolve(ref, f"{where}.{kind}")}
  if kind == "input_audio":
    audio = part.get("input_audio")
    if not isinstance(audio, Mapping) or not isinstance(audio.get("data"), str):
      raise BadRequest(f"{where}.input_audio must be {{\"data\": BASE64, \"format\": ...}}")
    return {"type": "audio", "path": stager.resolve({"base64": audio["data"]}, where)}
  if kind in MEDIA_KINDS:
    _unknown(part, {"type", kind, "path"}, where)
    return {"type": kind, "path": stager.resolve(part.get(kind, part.get("path")), where)}
  raise BadRequest(f"{where}.type must be text, {', '.join(MEDIA_KINDS)}, image_url, "
                   f"video_url or input_audio, got {str(kind)[:40]!r}")


def parse_messages(messages: Any, stager: MediaStager, where: str) -> list[dict[str, Any]]:
  """Chat messages with their media resolved; the last one is the user's."""
  if not isinstance(messages, list) or not messages:
    raise BadRequest(f"{where} must be a non-empty list of messages")
  out = []
  for i, m in enumerate(messages):
    at = f"{where}[{i}]"
    if not isinstance(m, Mapping):
      raise BadRequest(f"{at} must be an object")
    _unknown(m, {"role", "content", "name"}, at)
    if m.get("role") not in _ROLES:
      raise BadRequest(f"{at}.role must be one of {', '.join(sorted(_ROLES))}")
    content = m.get("content")
    if isinstance(content, list):
      content = [media_part(p, stager, f"{at}.content[{j}]") for j, p in enumerate(content)]
      if not content:
        raise BadRequest(f"{at}.content is empty")
    else:
      content = _text(content, f"{at}.content")
    out.append({"role": m["role"], "content": content})
  if out[-1]["role"] != "user":
    raise BadRequest(f"{where}: the last message must be the user's")
  return out


def _item(raw: Any, stager: MediaStager, where: str) -> Item:
  if not isinstance(raw, Mapping):
    raise BadRequest(f"{where} must be an object")
  _unknown(raw, _ITEM_KEYS, where)
  if "prompt" not in raw:
    raise BadRequest(f"{where}: missing field 'prompt'")
  pair = "response_a" in raw or "response_b" in raw
  if pair == ("response" in raw) or (pair and not {"response_a", "response_b"} <= set(raw)):
    raise BadRequest(f"{where}: give 'response', or 'response_a' and 'response_b'")
  parts = []
  images = raw.get("images", [])
  if not isinstance(images, list):
    raise BadRequest(f"{where}.images must be a list")
  parts += [{"type": "image", "path": stager.resolve(r, f"{where}.images[{i}]")}
            for i, r in enumerate(images)]
  for kind in ("video", "audio"):
    if raw.get(kind) is not None:
      parts.append({"type": kind, "path": stager.resolve(raw[kind], f"{where}.{kind}")})
  prompt = raw["prompt"]
  if isinstance(prompt, str):
    messages = [{"role": "user", "content": [*parts, {"type": "text", "text": prompt}]
                 if parts else prompt}]
  else:
    messages = parse_messages(prompt, stager, f"{where}.prompt")
    if parts:
      last = messages[-1]["content"]
      last = [{"type": "text", "text": last}] if isinstance(last, str) else last
      messages[-1]["content"] = [*parts, *last]
  if pair:
    return Item(messages, response_a=_text(raw["response_a"], f"{where}.response_a"),
                response_b=_text(raw["response_b"], f"{where}.response_b"))
  return Item(messages, response=_text(raw["response"], f"{where}.response"))


def _openrlhf(body: Mapping[str, Any]) -> list[Item]:
  queries = body["query"]
  if not isinstance(queries, list):
    raise BadRequest("query must be a list of strings")
  prompts = body.get("prompts")
  if prompts is not None and (not isinstance(prompts, list) or len(prompts) != len(queries)):
    raise BadRequest(f"prompts must be a list as long as query ({len(queries)})")
  items = []
  for i, q in enumerate(queries):
    q = _text(q, f"query[{i}]")
    p = _text(prompts[i], f"prompts[{i}]") if prompts is not None else ""
    prompt, response = (p, q[len(p):]) if p and q.startswith(p) else ("", q)
    items.append(Item([{"role": "user", "content": prompt}], response=response))
  return items


def parse_score_request(body: Any, stager: MediaStager, *, max_items: int) -> tuple[list[Item], str]:
  """`(items, shape)` of a `/score` body; shape is "native" or "openrlhf".

  Raises:
    BadRequest: a malformed body, naming the field (413 for too many items).
  """
  if not isinstance(body, Mapping):
    raise BadRequest("the body must be a JSON object")
  if "query" in body:
    _unknown(body, _OPENRLHF_KEYS, "body")
    shape = "openrlhf"
    n = len(body["query"]) if isinstance(body["query"], list) else 0
  else:
    _unknown(body, {"items"}, "body")
    if not isinstance(body.get("items"), list):
      raise BadRequest("the body needs 'items' (a list) or 'query' (OpenRLHF)")
    shape, n = "native", len(body["items"])
  if n > max_items:
    raise BadRequest(f"{n} items in one request; the limit is {max_items} (serve.max_items)",
                     status=413)
  if not n:
    raise BadRequest("no items to score")
  if shape == "openrlhf":
    return _openrlhf(body), shape
  return [_item(raw, stager, f"items[{i}]") for i, raw in enumerate(body["items"])], shape
