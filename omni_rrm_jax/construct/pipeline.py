"""`omni-rrm construct`: preference records from live models, kept where two teachers agree.

For each prompt (`prompts.py`):

1. the strong and the weak endpoint each write a response (same messages,
   media inlined); two identical responses leave nothing to compare;
2. the pair is put in A/B order by a coin flip seeded by (`data.seed`, id);
3. each teacher judges it with the rubric prompt the project's judge is
   trained on, once as A/B and once as B/A; its judgment must parse (the
   first JSON object of the reply) and both orders must prefer the same
   response, or the pair is dropped as "unparsable judgment" / "order
   inconsistent";
4. the two teachers' verdicts (each the half-up mean of its two orders) are
   reconciled as in `rewards/agreement.py`: consistent, not a tie, the same
   preference.

A kept pair becomes a native record: label and scores from the
reconciliation, rationale the first teacher's judgment of the A/B order (the
judge's SFT target), subset "construct/<modality>". Records are written in
prompt order to `WORKDIR/records.jsonl`, with `WORKDIR/construct_report.json`
saying what was kept, what was filtered and why, and what each endpoint did.

Every reply is cached under `WORKDIR/cache` before it is used, so a run that
was killed (or whose endpoints failed) is resumed by running it again: it asks
only what is not cached and writes the same records an uninterrupted run
would. A pair whose request failed after its retries is reported as failed,
not written; the next run asks again.

One process does the work; it is host Python and I/O, no accelerator.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
import os
from typing import Any

import httpx
import tqdm

from omni_rrm_jax.construct.cache import ReplyCache
from omni_rrm_jax.construct.endpoints import ChatEndpoint, EndpointError, EndpointSettings
from omni_rrm_jax.construct.messages import user_message
from omni_rrm_jax.construct.prompts import Prompt, read_prompts
from omni_rrm_jax.data.readers import chosen_goes_first
from omni_rrm_jax.data.records import BadRecord, PreferenceRecord, write_jsonl
from omni_rrm_jax.data.templates import judge_prompt_text
from omni_rrm_jax.rewards.agreement import KEPT, Verdict, half_up, reconcile
from omni_rrm_jax.rewards.judgment import (BETTER_A, BETTER_B, JUDGMENT_KEYS, Judgment,
                                           parse_judgment, preference_from_scores)

log = logging.getLogger(__name__)

ENDPOINTS = ("strong", "weak", "teacher_1", "teacher_2")
RECORDS_FILE = "records.jsonl"
REPORT_FILE = "construct_report.json"
IDENTICAL = "identical responses"
UNPARSABLE = "unparsable judgment"
ORDER_INCONSISTENT = "order inconsistent"
_SWAP = {BETTER_A: BETTER_B, BETTER_B: BETTER_A}


@dataclasses.dataclass(frozen=True)
class Outcome:
  """What became of one prompt: a record, or the reason it was dropped or failed."""

  record: PreferenceRecord | None = None
  dropped: str | None = None  # a filter reason
  failed: str | None = None  # an endpoint that failed for good, and why


def _verdict(judgment: Judgment, swapped: bool) -> Verdict:
  """A judgment as a verdict on the record's A/B order."""
  if not swapped:
    return Verdict(judgment.score_a, judgment.score_b, judgment.better)
  return Verdict(judgment.score_b, judgment.score_a, _SWAP.get(judgment.better, judgment.better))


def _canonical(judgment: Judgment) -> str:
  """The judgment as the strict one-object JSON the judge is trained to write."""
  values = (judgment.score_a, judgment.score_b, judgment.better, judgment.reasoning,
            judgment.final_verdict)
  return json.dumps(dict(zip(JUDGMENT_KEYS, values)), ensure_ascii=False)


def teacher_verdict(straight: Judgment, swapped: Judgment) -> Verdict | None:
  """One teacher's verdict from its A/B and B/A judgments, or None when the two
  orders prefer different responses (or either contradicts its own scores)."""
  first, second = _verdict(straight, False), _verdict(swapped, True)
  if not (first.consistent and second.consistent) or first.better != second.better:
    return None
  return Verdict(half_up(first.score_a + second.score_a), half_up(first.score_b + second.score_b),
                 first.better)


class Builder:
  """Builds one prompt's record from the four endpoints."""

  def __init__(self, endpoints: dict[str, ChatEndpoint], media_root: str, seed: int):
    self.endpoints = endpoints
    self.media_root = media_root
    self.seed = seed

  async def _judge(self, teacher: str, record: PreferenceRecord, swapped: bool):
    a, b = (record.response_b, record.response_a) if swapped else (record.response_a,
                                                                   record.response_b)
    messages = user_message(judge_prompt_text(record, a, b), record.media, self.media_root)
    return parse_judgment(await self.endpoints[teacher].complete(messages), strict=False)

  async def build(self, prompt: Prompt) -> Outcome:
    """The prompt's outcome; endpoint failures become `Outcome.failed`."""
    try:
      return await self._build(prompt)
    except EndpointError as e:
      return Outcome(failed=e.reason)

  async def _build(self, prompt: Prompt) -> Outcome:
    messages = user_message(prompt.prompt, prompt.media, self.media_root)
    strong, weak = await asyncio.gather(self.endpoints["strong"].complete(messages),
                                        self.endpoints["weak"].complete(messages))
    if strong.strip() == weak.strip():
      return Outcome(dropped=IDENTICAL)
    a, b = (strong, weak) if chosen_goes_first(prompt.id, self.seed) else (weak, strong)
    record = PreferenceRecord(id=prompt.id, prompt=prompt.prompt, response_a=a, response_b=b,
                              label="equal", modality=prompt.modality, media=prompt.media,
                              subset=f"construct/{prompt.modality}")
    teachers = ("teacher_1", "teacher_2")
    parsed = await asyncio.gather(*(self._judge(t, record, swapped)
                                    for t in teachers for swapped in (False, True)))
    if not all(p.ok for p in parsed):
      return Outcome(dropped=UNPARSABLE)
    verdicts = [teacher_verdict(parsed[0].judgment, parsed[1].judgment),
                teacher_verdict(parsed[2].judgment, parsed[3].judgment)]
    if None in verdicts:
      return Outcome(dropped=ORDER_INCONSISTENT)
    scores, outcome = reconcile(*verdicts)
    if outcome != KEPT:
      return Outcome(dropped=outcome)
    return Outcome(record=dataclasses.replace(
        record, label=preference_from_scores(scores["A"], scores["B"]), scores=scores,
        rationale=_canonical(parsed[0].judgment)))


async def build_all(prompts: list[Prompt], endpoints: dict[str, ChatEndpoint], media_root: str,
                    seed: int, progress: bool = True) -> list[Outcome]:
  """Every prompt's outcome, in prompt order (the endpoints bound the concurrency)."""
  builder = Builder(endpoints, media_root, seed)
  bar = tqdm.tqdm(total=len(prompts), desc="construct", disable=not progress)

  async def one(prompt):
    outcome = await builder.build(prompt)
    bar.update(1)
    return outcome

  try:
    return await asyncio.gather(*(one(p) for p in prompts))
  finally:
    bar.close()


def report(outcomes: list[Outcome], prompt_counts, endpoints: dict[str, ChatEndpoint]) -> dict:
  """What was kept, dropped (by reason) and failed (by reason), and per endpoint."""
  kept = [o.record for o in outcomes if o.record is not None]
  return {
      "prompts": {"read": prompt_counts.summary(), "usable": len(outcomes)},
      "kept": len(kept),
      "kept_by_modality": dict(collections.Counter(r.modality for r in kept)),
      "labels": dict(collections.Counter(r.label for r in kept)),
      "dropped": dict(collections.Counter(o.dropped for o in outcomes if o.dropped)),
      "failed": dict(collections.Counter(o.failed for o in outcomes if o.failed)),
      "endpoints": {name: dict(e.stats) for name, e in endpoints.items()},
  }


async def _run(settings: dict[str, EndpointSettings], prompts: list[Prompt], counts, *,
               media_root: str, seed: int, workdir: str) -> dict:
  cache = ReplyCache(os.path.join(workdir, "cache"))
  async with httpx.AsyncClient() as client:
    endpoints = {name: ChatEndpoint(s, client, cache) for name, s in settings.items()}
    outcomes = await build_all(prompts, endpoints, media_root, seed)
  records = [o.record for o in outcomes if o.record is not None]
  # Written whole at the end (then renamed), so the file is always a finished run's.
  path = os.path.join(workdir, RECORDS_FILE)
  write_jsonl(records, path + ".tmp")
  os.replace(path + ".tmp", path)
  summary = report(outcomes, counts, endpoints)
  with open(os.path.join(workdir, REPORT_FILE), "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=2)
  return {"task": "construct", "records": path, **summary}


def run(config, workdir: str) -> dict[str, Any]:
  """Builds `WORKDIR/records.jsonl` and its report; returns the report.

  Raises:
    ValueError: a bad setting (checked before any request) or, with
      `data.strict`, the first unusable prompt row.
    FileNotFoundError: no prompts file.
  """
  c = config.construct
  if not c.prompts_path:
    raise ValueError("construct.prompts_path is empty: a JSONL file of prompts is required")
  settings = {name: EndpointSettings.from_config(name, c[name]) for name in ENDPOINTS}
  media_root = config.data.media_root or os.path.dirname(os.path.abspath(c.prompts_path))
  try:
    prompts, counts = read_prompts(c.prompts_path, media_root, strict=config.data.strict,
                                   max_record_bytes=config.data.max_record_bytes)
  except BadRecord as e:
    raise ValueError(f"bad prompt row {e}") from None
  log.info("construct prompts: %s", counts.summary())
  os.makedirs(workdir, exist_ok=True)
  summary = asyncio.run(_run(settings, prompts, counts, media_root=media_root,
                             seed=config.data.seed, workdir=workdir))
  if summary["failed"]:
    log.warning("construct: %d prompts failed (%s); run again to retry them",
                sum(summary["failed"].values()), summary["failed"])
  return summary
