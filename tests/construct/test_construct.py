"""`construct` against a loopback OpenAI-compatible server: what is kept and why,
retries, and a killed run that resumes to the same records asking nothing twice."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from omni_rrm_jax.construct import pipeline
from omni_rrm_jax.data.records import from_json
from omni_rrm_jax.rewards.judgment import parse_judgment
from tests.construct.fake_openai import FakeOpenAI, decoded_media
from tests.e2e.runs import ROOT, load_config

# (id, question) -> what should become of it
PROMPTS = [("p0", "What is 2 plus 3?"), ("p1", "What is 4 plus 4?"),
           ("p2", "A tricky one. What is 7 plus 1?"), ("p3", "A lazy one. What is 1 plus 1?"),
           ("p4", "Say the same. What is 3 plus 3?"), ("p5", "Look. What is 5 plus 2?"),
           ("p6", "What is 9 plus 0?"), ("p7", "What is 6 plus 2?")]
EXPECTED_DROPS = {"disagreement": 1, "order inconsistent": 1, "identical responses": 1}


@pytest.fixture
def server():
  fake = FakeOpenAI()
  yield fake
  fake.close()


def _write_prompts(folder):
  os.makedirs(folder / "media", exist_ok=True)
  pixels = np.random.default_rng(0).integers(0, 255, (28, 28, 3), dtype=np.uint8)
  Image.fromarray(pixels).save(folder / "media" / "p5.png")
  with open(folder / "prompts.jsonl", "w", encoding="utf-8") as f:
    for pid, question in PROMPTS:
      row = {"id": pid, "prompt": question}
      if pid == "p5":
        row["media"] = {"images": ["p5.png"]}
      f.write(json.dumps(row) + "\n")
    f.write("{not json\n")
    f.write(json.dumps({"id": "p9", "prompt": "x", "media": {"images": ["../escape.png"]}}) + "\n")
  return folder / "prompts.jsonl"


def _overrides(prompts, url, teacher_2="teacher-contra", **endpoint):
  out = {"construct.prompts_path": str(prompts),
         "data.media_root": str(prompts.parent / "media")}
  models = {"strong": "strong", "weak": "weak", "teacher_1": "teacher-good",
            "teacher_2": teacher_2}
  for name, model in models.items():
    out[f"construct.{name}.url"] = url
    out[f"construct.{name}.model"] = model
    out[f"construct.{name}.backoff"] = 0.05
    for leaf, value in endpoint.items():
      out[f"construct.{name}.{leaf}"] = value
  return out


def _config(overrides):
  return load_config("construct", "", **overrides)


def _records(workdir):
  return (workdir / "records.jsonl").read_text(encoding="utf-8")


def test_keeps_the_pairs_both_teachers_agree_on_in_both_orders(tmp_path, server):
  # teacher-contra disagrees on p2; teacher-good is position-blind, but a lazy
  # teacher (always "A") on p3 would be caught by the order check.
  prompts = _write_prompts(tmp_path)
  server_lazy = FakeOpenAI()
  try:
    out = pipeline.run(_config(_overrides(prompts, server.url)), str(tmp_path / "w"))
    lazy = pipeline.run(_config(_overrides(prompts, server_lazy.url, teacher_2="teacher-lazy")),
                        str(tmp_path / "w_lazy"))
  finally:
    server_lazy.close()

  kept = {r.id: r for r in map(from_json, _records(tmp_path / "w").splitlines())}
  assert sorted(kept) == ["p0", "p1", "p3", "p5", "p6", "p7"]
  assert out["dropped"] == {"disagreement": 1, "identical responses": 1}
  assert lazy["dropped"] == {"order inconsistent": 1, "identical responses": 1}
  assert out["prompts"]["read"].startswith("8 kept, 2 skipped")
  for pid, record in kept.items():
    strong = record.response_a if record.label == "A" else record.response_b
    question = dict(PROMPTS)[pid]
    a, b = (int(x) for x in question.split("What is ")[1].rstrip("?").split(" plus "))
    assert strong == f"The answer is {a + b}.", pid  # the strong answer is the one preferred
    judgment = parse_judgment(record.rationale, strict=True).judgment
    assert judgment is not None and judgment.better == record.label
    assert (record.scores["A"] > record.scores["B"]) == (record.label == "A")
  # Both A/B orders occur (the order is a seeded coin flip per id).
  assert {r.label for r in kept.values()} == {"A", "B"}
  # The image went to every endpoint as the file's bytes.
  assert kept["p5"].modality == "image" and kept["p5"].media["images"] == ["p5.png"]
  png = (tmp_path / "media" / "p5.png").read_bytes()
  assert len(server.media_seen) == 6  # strong, weak, 2 teachers x 2 orders
  assert all(decoded_media(p) == png and p["type"] == "image_url" for p in server.media_seen)
  # 8 usable prompts: 2 responses each, and 4 judgments for the 7 with two answers.
  assert out["endpoints"]["strong"] == {"requests": 8}  # no retries, no cache hits
  assert out["endpoints"]["teacher_1"]["requests"] == 14
  assert len(server.answered) == 8 * 2 + 7 * 4


def test_failures_are_retried_and_change_nothing(tmp_path, server):
  prompts = _write_prompts(tmp_path)
  clean = FakeOpenAI()
  try:
    pipeline.run(_config(_overrides(prompts, clean.url)), str(tmp_path / "clean"))
  finally:
    clean.close()
  server.fail_first.update({"strong": 3, "teacher-good": 2})
  server.malformed_once.update({"4 plus 4", "9 plus 0"})
  server.slow_once.add("6 plus 2")
  out = pipeline.run(_config(_overrides(prompts, server.url, timeout=0.4)),
                     str(tmp_path / "faulty"))
  assert out["failed"] == {}
  assert out["endpoints"]["strong"]["retries"] >= 3
  assert server.faults >= 3 + 2 + 1  # the 500s, and at least one malformed or slow reply
  assert sum(e.get("retries", 0) for e in out["endpoints"].values()) == server.faults
  assert _records(tmp_path / "faulty") == _records(tmp_path / "clean").replace(
      clean.url, server.url)


def test_a_dead_endpoint_fails_its_prompts_and_a_rerun_fills_them(tmp_path, server):
  prompts = _write_prompts(tmp_path)
  server.fail_first["teacher-contra"] = 10**6  # teacher 2 is down for the first run
  first = pipeline.run(_config(_overrides(prompts, server.url, max_retries=1)),
                       str(tmp_path / "w"))
  assert first["kept"] == 0 and first["failed"] == {"HTTP 500": 7}
  asked_first = len(server.answered)
  server.fail_first.clear()
  second = pipeline.run(_config(_overrides(prompts, server.url)), str(tmp_path / "w"))
  assert second["kept"] == 6 and second["failed"] == {}
  # The second run asked only teacher 2 (2 orders x 7 pairs); the rest was cached.
  assert len(server.answered) - asked_first == 14
  assert second["endpoints"]["strong"].get("requests", 0) == 0


def test_a_server_killed_mid_run_then_restarted_gives_the_same_records(tmp_path, server):
  prompts = _write_prompts(tmp_path)
  pipeline.run(_config(_overrides(prompts, server.url)), str(tmp_path / "straight"))
  total = len(server.answered)
  port = server.server.server_address[1]
  server.close()

  dying = FakeOpenAI(port=port)  # the same address, so the same cache keys
  dying.die_after = total // 2
  first = pipeline.run(_config(_overrides(prompts, dying.url, max_retries=1)),
                       str(tmp_path / "w"))
  assert first["failed"] and first["kept"] < 6  # the rest could not be asked
  assert len(dying.answered) == total // 2
  revived = FakeOpenAI(port=port)
  try:
    second = pipeline.run(_config(_overrides(prompts, revived.url)), str(tmp_path / "w"))
  finally:
    revived.close()
  assert second["failed"] == {} and second["kept"] == 6
  assert len(revived.answered) == total - total // 2  # nothing answered before is asked again
  assert _records(tmp_path / "w") == _records(tmp_path / "straight")


def _cli(prompts, url, workdir):
  args = [sys.executable, "-m", "omni_rrm_jax.main", f"--config={ROOT}/configs/construct.py",
          f"--workdir={workdir}"]
  args += [f"--config.{k}={v}" for k, v in _overrides(prompts, url, concurrency=1).items()]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return args, env


def test_killed_run_resumes_to_the_same_records_asking_nothing_twice(tmp_path, server):
  prompts = _write_prompts(tmp_path)
  args, env = _cli(prompts, server.url, tmp_path / "straight")
  done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  total = len(server.answered)
  assert total == 8 * 2 + 7 * 4

  server.answered.clear()
  server.delay = 0.05
  args, env = _cli(prompts, server.url, tmp_path / "killed")
  proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  deadline = time.time() + 120
  while len(server.answered) < total // 2 and time.time() < deadline:
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait(timeout=30)
  assert not (tmp_path / "killed" / "records.jsonl").exists()
  cache = tmp_path / "killed" / "cache"
  time.sleep(0.5)  # replies the server was still writing when the client died
  cached = sum(f.endswith(".json") for _, _, files in os.walk(cache) for f in files)
  assert 0 < cached < total

  server.delay = 0.0
  before = len(server.answered)
  resumed = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert len(server.answered) - before == total - cached  # only what was not cached
  assert _records(tmp_path / "killed") == _records(tmp_path / "straight")
  report = json.loads(resumed.stdout.strip().splitlines()[-1])
  assert report["kept"] == 6 and report["endpoints"]["strong"]["cache_hits"] >= 1


def test_bad_settings_fail_before_any_request(tmp_path, server):
  prompts = _write_prompts(tmp_path)
  overrides = _overrides(prompts, server.url)
  overrides["construct.teacher_2.url"] = ""
  with pytest.raises(ValueError, match="construct.teacher_2.url is empty"):
    pipeline.run(_config(overrides), str(tmp_path / "w"))
  overrides = _overrides(prompts, server.url)
  overrides["construct.weak.api_key_env"] = "OMNI_RRM_TEST_NO_SUCH_VARIABLE"
  with pytest.raises(ValueError, match="OMNI_RRM_TEST_NO_SUCH_VARIABLE.*not set"):
    pipeline.run(_config(overrides), str(tmp_path / "w"))
  overrides = _overrides(prompts, server.url)
  overrides["data.strict"] = True
  with pytest.raises(ValueError, match=r"prompts.jsonl:9: bad JSON"):
    pipeline.run(_config(overrides), str(tmp_path / "w"))
  assert server.answered == []
