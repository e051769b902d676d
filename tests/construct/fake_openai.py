"""A loopback OpenAI-compatible chat server for the construction tests.

Models answer by name. "strong" and "weak" answer arithmetic questions right
and wrong; a prompt with "same" in it gets one answer from both. Teachers read
the rubric prompt and score the response holding the right sum 8 and the
other 3, as a strict judgment:

  teacher-good     always so (its reply wrapped in a ```json fence);
  teacher-contra   prefers the wrong answer on questions with "tricky" in them;
  teacher-lazy     says "A" whatever it sees on questions with "lazy" in them.

Faults are injected by a plan: `fail_first[model] = n` answers the first n
requests for that model with HTTP 500, `malformed` ids get one reply that is
not JSON, `slow` request bodies sleep before the reply, and `die_after = n`
shuts the server down once n replies went out (the next request's connection
drops, later ones are refused). Every reply and the
request that got it are logged in order.
"""

from __future__ import annotations

import base64
import collections
import http.server
import json
import re
import threading
import time

from omni_rrm_jax.rewards.judgment import render_judgment

_QUESTION = re.compile(r"What is (\d+) plus (\d+)\?")


def _text(messages) -> tuple[str, list[dict]]:
  content = messages[-1]["content"]
  if isinstance(content, str):
    return content, []
  return ("".join(p["text"] for p in content if p["type"] == "text"),
          [p for p in content if p["type"] != "text"])


def _sum(text: str) -> int:
  a, b = _QUESTION.search(text).groups()
  return int(a) + int(b)


def _answer(model: str, text: str) -> str:
  right = _sum(text)
  if model == "weak" and "same" not in text:
    return f"The answer is {right + 1}."
  return f"The answer is {right}."


def _judgment(model: str, text: str) -> str:
  question = text.split("[Question]\n", 1)[1].split("\n\n[Response A]", 1)[0]
  a = text.split("[Response A]\n", 1)[1].split("\n\n[Response B]", 1)[0]
  b = text.split("[Response B]\n", 1)[1]
  right = f" {_sum(question)}."
  score_a, score_b = (8, 3) if a.endswith(right) else (3, 8)
  if model == "teacher-contra" and "tricky" in question:
    score_a, score_b = score_b, score_a
  if model == "teacher-lazy" and "lazy" in question:
    score_a, score_b = 8, 3
  reasons = {name: f"Response A and response B differ on {name}." for name in (
      "fluency_coherence", "relevance", "accuracy_completeness", "reasoning_quality",
      "safety_ethics")}
  judgment = render_judgment(score_a, score_b, reasons)
  return f"```json\n{judgment}\n```" if model == "teacher-good" else judgment


class FakeOpenAI:
  """The server, on 127.0.0.1 at a free port, in a daemon thread."""

  def __init__(self, port: int = 0):
    self.fail_first: collections.Counter = collections.Counter()
    self.malformed_once: set[str] = set()  # prompt substrings that get one non-JSON reply
    self.slow_once: set[str] = set()  # prompt substrings whose first reply waits `slow_seconds`
    self.slow_seconds = 1.0
    self.delay = 0.0  # seconds before every reply
    self.answered: list[dict] = []  # request bodies that got a 200 chat completion
    self.faults = 0  # requests answered with a fault (500, not JSON, or too late)
    self.die_after: int | None = None  # stop serving once this many replies went out
    self.media_seen: list[dict] = []
    self._lock = threading.Lock()
    self._closed = False
    fake = self

    class Handler(http.server.BaseHTTPRequestHandler):
      protocol_version = "HTTP/1.1"  # keep-alive, as real servers do

      def log_message(self, *args):
        pass

      def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        fake._serve(self, body)

    class Server(http.server.ThreadingHTTPServer):
      request_queue_size = 128  # the default 5 resets concurrent connects

    self.server = Server(("127.0.0.1", port), Handler)
    self.server.daemon_threads = True
    self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
    self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
    self.thread.start()

  def _reply(self, handler, status: int, payload: bytes) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)

  def _serve(self, handler, body: dict) -> None:
    model = body["model"]
    text, media = _text(body["messages"])
    with self._lock:
      fail = self.fail_first[model] > 0
      self.fail_first[model] -= int(fail)
      malformed = next((k for k in self.malformed_once if k in text), None)
      self.malformed_once.discard(malformed)
      slow = next((k for k in self.slow_once if k in text), None)
      self.slow_once.discard(slow)
      self.faults += int(bool(fail or malformed or slow))
    time.sleep(self.delay + (self.slow_seconds if slow else 0.0))
    if fail:
      return self._reply(handler, 500, b'{"error": "overloaded"}')
    if malformed:
      return self._reply(handler, 200, b"<html>bad gateway</html>")
    content = _answer(model, text) if model in ("strong", "weak") else _judgment(model, text)
    with self._lock:
      if self.die_after is not None and len(self.answered) >= self.die_after:
        dead = True
      else:
        dead = False
        self.answered.append(body)
        self.media_seen.extend(media)
    if dead:  # the server goes away: this connection drops, new ones are refused
      threading.Thread(target=self.close, daemon=True).start()
      handler.close_connection = True
      return None
    reply = {"id": "x", "object": "chat.completion", "model": model,
             "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                          "finish_reason": "stop"}]}
    self._reply(handler, 200, json.dumps(reply).encode())

  def close(self) -> None:
    with self._lock:
      if self._closed:
        return
      self._closed = True
    self.server.shutdown()
    self.server.server_close()


def decoded_media(part: dict) -> bytes:
  """The bytes of an `image_url` / `video_url` / `input_audio` part."""
  if part["type"] == "input_audio":
    return base64.b64decode(part["input_audio"]["data"])
  url = part[part["type"]]["url"]
  return base64.b64decode(url.split(",", 1)[1])
