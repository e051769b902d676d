"""Encoding, truncation, bucketing and the Grain pipeline's order and resume."""

import dataclasses

import numpy as np
import pytest

from omni_rrm_jax.core.batch_contract import PROBE_KEYS, RM_BATCH, SFT_BATCH
from omni_rrm_jax.core.weight_spec import parse_response_probe
from omni_rrm_jax.data.batching import collate
from omni_rrm_jax.data.pipeline import make_dataset
from omni_rrm_jax.data.records import PreferenceRecord
from omni_rrm_jax.data.tokenize import INVALID_REASONS, ExampleEncoder, parse_target_weights
from omni_rrm_jax.rewards.judgment import DIMENSION_NAMES, render_judgment

BUCKETS = (32, 64, 128, 512)


def _record(i, prompt_repeats=1, label="A", rationale=True):
  reasoning = {n: f"A answers {i + 1} correctly, B does not" for n in DIMENSION_NAMES}
  return PreferenceRecord(
      id=str(i), prompt=f"what is {i} plus 1? " * prompt_repeats, response_a=f"it is {i + 1}.",
      response_b=f"it is {i + 7} or so.", label=label, scores={"A": 9, "B": 2},
      rationale=render_judgment(9, 2, reasoning) if rationale else None)


def test_rm_prompt_is_cut_from_the_left_and_responses_are_whole(tok):
  enc = ExampleEncoder(tok, max_length=40, kind=RM_BATCH, margin_scale=0.5)
  full = ExampleEncoder(tok, max_length=4096, kind=RM_BATCH).encode(_record(3, prompt_repeats=20))
  ex = enc.encode(_record(3, prompt_repeats=20))
  assert ex["valid"] and ex["truncated"]
  assert max(len(ex["chosen"]), len(ex["rejected"])) == 40
  assert len(full["chosen"]) > 40 and not full["truncated"]
  # Same ending as the untruncated sequence: the response and end of turn survive.
  n_resp = 12
  assert ex["chosen"][-n_resp:] == full["chosen"][-n_resp:]
  assert ex["rejected"][-n_resp:] == full["rejected"][-n_resp:]
  # The chat framing at the start survives too.
  header = tok("<|im_start|>user\n", add_special_tokens=False)["input_ids"]
  assert ex["chosen"][:len(header)] == header
  assert tok.decode(ex["chosen"]).endswith("it is 4.<|im_end|>\n")
  assert ex["margin"] == pytest.approx(0.5 * (9 - 2))


def test_label_b_swaps_chosen(tok):
  enc = ExampleEncoder(tok, max_length=128, kind=RM_BATCH)
  a, b = enc.encode(_record(1, label="A")), enc.encode(_record(1, label="B"))
  assert a["chosen"] == b["rejected"] and a["rejected"] == b["chosen"]


def test_invalid_examples_say_why(tok):
  enc = ExampleEncoder(tok, max_length=128, kind=RM_BATCH)
  assert INVALID_REASONS[enc.encode(_record(0, label="equal"))["invalid_reason"]] == "tie label"
  tiny = ExampleEncoder(tok, max_length=12, kind=RM_BATCH)
  ex = tiny.encode(_record(0))
  assert not ex["valid"] and INVALID_REASONS[ex["invalid_reason"]] == "response too long"
  sft = ExampleEncoder(tok, max_length=4096, kind=SFT_BATCH)
  ex = sft.encode(_record(0, rationale=False))
  assert INVALID_REASONS[ex["invalid_reason"]] == "no valid judgment rationale"


def test_an_sft_target_longer_than_max_target_tokens_is_invalid(tok):
  rec = _record(5)
  n = int(np.sum(ExampleEncoder(tok, max_length=4096, kind=SFT_BATCH).encode(rec)["loss_mask"]))
  fits = ExampleEncoder(tok, max_length=4096, kind=SFT_BATCH, max_target_tokens=n).encode(rec)
  assert fits["valid"] and sum(fits["loss_mask"]) == n
  over = ExampleEncoder(tok, max_length=4096, kind=SFT_BATCH, max_target_tokens=n - 1).encode(rec)
  assert not over["valid"] and INVALID_REASONS[over["invalid_reason"]] == "target too long"


def test_sft_loss_mask_covers_exactly_the_judgment(tok):
  rec = _record(5)
  ex = ExampleEncoder(tok, max_length=4096, kind=SFT_BATCH).encode(rec)
  ids, mask = np.asarray(ex["input_ids"]), np.asarray(ex["loss_mask"], bool)
  assert tok.decode(ids[mask]) == rec.rationale + "<|im_end|>\n"
  prompt = tok.decode(ids[~mask])
  assert "[Response A]\nit is 6." in prompt and prompt.endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("label", ["A", "B"])
def test_sft_chosen_target_is_the_better_response_after_the_rm_prompt(tok, label):
  rec = _record(5, label=label)
  ex = ExampleEncoder(tok, max_length=4096, kind=SFT_BATCH, sft_target="chosen").encode(rec)
  ids, mask = np.asarray(ex["input_ids"]), np.asarray(ex["loss_mask"], bool)
  better = rec.response_a if label == "A" else rec.response_b
  assert tok.decode(ids[mask]) == better + "<|im_end|>\n"
  # The prompt is the RM's user turn (the question alone), not the judge's.
  rm = ExampleEncoder(tok, max_length=4096, kind=RM_BATCH).encode(rec)
  assert list(ids[~mask]) == rm["chosen"][:int((~mask).sum())]
  assert "[Response A]" not in tok.decode(ids[~mask])
  tie = ExampleEncoder(tok, max_length=4096, kind=SFT_BATCH, sft_target="chosen")
  assert INVALID_REASONS[tie.encode(_record(5, label="equal"))["invalid_reason"]] == "tie label"


def test_target_weights_weigh_exactly_the_named_words_of_the_judgment(tok):
  # Words the test tokenizer holds whole ("is", "cat"), five dimensions' worth.
  reasoning = {n: "A is it, B is the cat" for n in DIMENSION_NAMES}
  rec = dataclasses.replace(_record(5), rationale=render_judgment(9, 2, reasoning))
  plain = ExampleEncoder(tok, max_length=4096, kind=SFT_BATCH).encode(rec)
  weights = parse_target_weights("IS:3, cat:2")
  assert weights == {"is": 3, "cat": 2}
  ex = ExampleEncoder(tok, max_length=4096, kind=SFT_BATCH, target_weights=weights).encode(rec)
  ids, mask, was = (np.asarray(ex["input_ids"]), np.asarray(ex["loss_mask"]),
                    np.asarray(plain["loss_mask"]))
  assert list(ids) == list(plain["input_ids"]) and list(mask > 0) == list(was > 0)
  words = [tok.decode([i]).strip().lower() for i in ids]
  expected = [(weights.get(w, 1) if m else 0) for w, m in zip(words, was)]
  assert list(mask) == expected
  # Each dimension says "is" twice and "cat" once; the prompt's "is" stays at 0.
  assert (mask == 3).sum() == 10 and (mask == 2).sum() == 5


@pytest.mark.parametrize("spec", ["right", "right:0", "right:x", ":3", "right:1.5",
                                  "right:2,RIGHT:3"])
def test_bad_target_weights_name_the_setting(spec):
  with pytest.raises(ValueError, match="data.target_weights"):
    parse_target_weights(spec)


def test_unknown_sft_target_is_refused(tok):
  with pytest.raises(ValueError, match="sft_target"):
    ExampleEncoder(tok, max_length=64, kind=SFT_BATCH, sft_target="policy")


def _batches(ds, n=None):
  out = []
  for i, b in enumerate(ds):
    if n is not None and i >= n:
      break
    out.append(b)
  return out


def _ids_seen(batches):
  return [int(t) for b in batches for t, v in zip(b["chosen_input_ids"][:, 8], b["valid"]) if v]


def test_pipeline_order_buckets_sharding_and_resume(tok):
  recs = [_record(i, prompt_repeats=1 + i % 4) for i in range(22)]
  enc = ExampleEncoder(tok, max_length=128, kind=RM_BATCH)
  kw = dict(batch_size=4, buckets=BUCKETS, pad_id=tok.pad_token_id)
  one = _batches(make_dataset(recs, enc, seed=1, num_epochs=1, **kw))
  again = _batches(make_dataset(recs, enc, seed=1, num_epochs=1, **kw))
  other = _batches(make_dataset(recs, enc, seed=2, num_epochs=1, **kw))
  assert len(one) == 6  # 22 records in batches of 4: the last is padded with 2 fillers
  assert sum(int(b["valid"].sum()) for b in one) == 22
  assert all(b["chosen_input_ids"].shape[1] in BUCKETS for b in one)
  for a, b in zip(one, again):
    np.testing.assert_array_equal(a["chosen_input_ids"], b["chosen_input_ids"])
  assert any((a["chosen_input_ids"] != b["chosen_input_ids"]).any() for a, b in zip(one, other)
             if a["chosen_input_ids"].shape == b["chosen_input_ids"].shape)

  # Two processes get disjoint halves whose union is the data set.
  # (One process plays both here, so `agree` only passes its own needs on;
  # tests/multihost run the real collective.)
  local = dict(kw, batch_size=2, agree=lambda needs: needs)
  p0 = _batches(make_dataset(recs, enc, seed=1, num_epochs=1, process_index=0, process_count=2,
                             **local))
  p1 = _batches(make_dataset(recs, enc, seed=1, num_epochs=1, process_index=1, process_count=2,
                             **local))
  # The same number of steps on both, even though 22 rows leave the last
  # global batch of 4 with 2 rows: process 1 gets a batch of fillers.
  assert len(p0) == len(p1) == len(one)
  assert not p1[-1]["valid"].any() and (p1[-1]["index"] == -1).all()
  rows = lambda bs: [tuple(r[m.astype(bool)]) for b in bs
                     for r, m, v in zip(b["chosen_input_ids"], b["chosen_attention_mask"], b["valid"]) if v]
  assert not set(rows(p0)) & set(rows(p1))
  assert sorted(rows(p0) + rows(p1)) == sorted(rows(one))

  # Resume: the state after 3 batches continues exactly where the stream was.
  ds = make_dataset(recs, enc, seed=1, **kw)  # repeats forever, reshuffled per epoch
  it = iter(ds)
  for _ in range(3):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(5)]
  resumed = iter(make_dataset(recs, enc, seed=1, **kw))
  resumed.set_state(state)
  for e in expected:
    np.testing.assert_array_equal(next(resumed)["chosen_input_ids"], e["chosen_input_ids"])


def test_worker_processes_encode_every_example_and_resume(tok):
  """Workers each batch their own share of the stream: same examples, exact resume."""
  recs = [_record(i) for i in range(12)]
  enc = ExampleEncoder(tok, max_length=1024, kind=SFT_BATCH)
  kw = dict(batch_size=4, buckets=(1024,), pad_id=tok.pad_token_id, seed=3)
  rows = lambda bs: sorted(tuple(r[m.astype(bool)]) for b in bs for r, m, v in
                           zip(b["input_ids"], b["attention_mask"], b["valid"]) if v)
  local = _batches(make_dataset(recs, enc, num_epochs=1, **kw))
  workers = _batches(make_dataset(recs, enc, num_epochs=1, worker_count=2, **kw))
  assert len(rows(workers)) == 12 and rows(workers) == rows(local)

  it = iter(make_dataset(recs, enc, worker_count=2, **kw))
  for _ in range(2):
    next(it)
  state = it.get_state()
  expected = [next(it)["input_ids"] for _ in range(3)]
  resumed = iter(make_dataset(recs, enc, worker_count=2, **kw))
  resumed.set_state(state)
  for e in expected:
    np.testing.assert_array_equal(next(resumed)["input_ids"], e)


def test_judge_prompt_that_fits_is_not_cut(tok):
  enc = ExampleEncoder(tok, max_length=4096, kind=SFT_BATCH)
  full = enc.judge_prompt_ids(_record(2))
  assert enc.judge_prompt_ids(_record(2), max_prompt_length=len(full) + 20) == full
  cut = enc.judge_prompt_ids(_record(2), max_prompt_length=len(full) - 10)
  assert len(cut) == len(full) - 10 and cut[-30:] == full[-30:]


def test_packed_pipeline_keeps_the_padded_stream_and_resumes(tok):
  """Packing changes the layout, not which examples a step holds; its rows agree
  between processes and resume exactly."""
  from omni_rrm_jax.data.packing import PackSpec
  recs = [_record(i, prompt_repeats=1 + i % 4) for i in range(22)]
  enc = ExampleEncoder(tok, max_length=128, kind=RM_BATCH)
  kw = dict(batch_size=8, buckets=BUCKETS, pad_id=tok.pad_token_id, seed=1)
  pack = PackSpec(length=256, max_segments=8, row_multiple=2)
  padded = _batches(make_dataset(recs, enc, num_epochs=1, **kw))
  packed = _batches(make_dataset(recs, enc, num_epochs=1, pack=pack, **kw))
  assert len(packed) == len(padded) == 3
  for a, b in zip(padded, packed):
    assert sorted(b["index"][b["index"] >= 0]) == sorted(a["index"][a["index"] >= 0])
    assert b["chosen_input_ids"].shape[1] == 256 and b["chosen_input_ids"].shape[0] % 2 == 0
    assert b["chosen_input_ids"].shape[0] < a["chosen_input_ids"].shape[0]
    assert b["chosen_attention_mask"].sum() == a["chosen_attention_mask"][a["index"] >= 0].sum()

  # Processes agree on the row count: the larger need wins.
  agree = lambda needs: np.maximum(needs, 3)  # another process needs 3 rows  # noqa: E731
  p0 = _batches(make_dataset(recs, enc, num_epochs=1, pack=pack, process_count=2,
                             agree=agree, **dict(kw, batch_size=4)))
  assert all(b["chosen_input_ids"].shape[0] == 4 for b in p0)

  it = iter(make_dataset(recs, enc, pack=pack, **kw))
  for _ in range(2):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(4)]
  resumed = iter(make_dataset(recs, enc, pack=pack, **kw))
  resumed.set_state(state)
  for e in expected:
    got = next(resumed)
    for key in ("chosen_input_ids", "rejected_segment_ids", "valid", "index"):
      np.testing.assert_array_equal(got[key], e[key])


def test_packing_refuses_rows_shorter_than_an_example(tok):
  from omni_rrm_jax.data.packing import PackSpec
  enc = ExampleEncoder(tok, max_length=128, kind=RM_BATCH)
  with pytest.raises(ValueError, match="cannot hold an example of max_length 128"):
    make_dataset([_record(0)], enc, batch_size=4, buckets=BUCKETS, pad_id=0, seed=0,
                 pack=PackSpec(length=64, max_segments=4))


def test_workers_leave_sigterm_and_sigint_to_the_main_process():
  """A process-group SIGTERM (preemption) or Ctrl-C must not kill a worker mid-batch:
  the workers ignore both, and the main process keeps its own handlers."""
  import os
  import signal

  import grain

  from omni_rrm_jax.data.pipeline import prefetch_in_workers

  def dispositions(i):
    return (i, os.getpid(), signal.getsignal(signal.SIGTERM) == signal.SIG_IGN,
            signal.getsignal(signal.SIGINT) == signal.SIG_IGN)

  before = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
  ds = grain.MapDataset.range(6).map(dispositions).to_iter_dataset()
  seen = list(prefetch_in_workers(ds, worker_count=2))
  assert sorted(i for i, *_ in seen) == list(range(6))
  assert {pid for _, pid, *_ in seen} - {os.getpid()}, "no element came from a worker"
  assert all(term and intr for _, _, term, intr in seen), seen
  assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


@pytest.mark.parametrize("label", ["A", "B"])
def test_response_probes_sit_on_each_responses_last_token_and_follow_the_label(tok, label):
  rec = dataclasses.replace(_record(4), label=label)
  ex = ExampleEncoder(tok, max_length=4096, kind=SFT_BATCH,
                      response_probe=("cat", "sat", 3)).encode(rec)
  plain = ExampleEncoder(tok, max_length=4096, kind=SFT_BATCH).encode(rec)
  assert ex["input_ids"] == plain["input_ids"] and ex["loss_mask"] == plain["loss_mask"]
  ids = ex["input_ids"]
  for position, response in zip(ex["probe_positions"], (rec.response_a, rec.response_b)):
    assert not plain["loss_mask"][position]  # a prompt position
    assert tok.decode(ids[:position + 1]).endswith(response)
    assert not tok.decode(ids[:position]).endswith(response)
  cat, sat = (tok(f" {w}", add_special_tokens=False)["input_ids"][0] for w in ("cat", "sat"))
  assert ex["probe_targets"] == ([cat, sat] if label == "A" else [sat, cat])
  assert ex["probe_weights"] == [3, 3]


def test_a_response_cut_from_the_judge_prompt_or_a_tie_gets_no_probe(tok):
  rec = dataclasses.replace(_record(4), response_b="it is 5. " * 40 + "the cat sat.")
  enc = ExampleEncoder(tok, max_length=4096, kind=SFT_BATCH, response_probe=("cat", "sat", 2))
  whole = enc.encode(rec)
  assert whole["probe_weights"] == [2, 2]
  # Cut from the left so far that response A's end is gone and B stays whole.
  n_b = len(tok(rec.response_b, add_special_tokens=False)["input_ids"])
  cut = ExampleEncoder(tok, max_length=len(whole["input_ids"]) - (whole["probe_positions"][1]
                                                                  - n_b - 2),
                       kind=SFT_BATCH, response_probe=("cat", "sat", 2)).encode(rec)
  assert cut["valid"] and cut["truncated"]
  assert cut["probe_weights"] == [0, 2]
  assert tok.decode(cut["input_ids"][:cut["probe_positions"][1] + 1]).endswith("the cat sat.")
  tie = enc.encode(dataclasses.replace(rec, label="equal"))
  assert tie["probe_weights"] == [0, 0]


def test_response_probe_settings_are_checked_before_training(tok):
  with pytest.raises(ValueError, match="data.response_probe word 'right' is 6 tokens"):
    ExampleEncoder(tok, max_length=64, kind=SFT_BATCH, response_probe=("right", "sat", 1))
  with pytest.raises(ValueError, match="needs judge SFT"):
    ExampleEncoder(tok, max_length=64, kind=RM_BATCH, response_probe=("cat", "sat", 1))
  for spec, weight in (("cat", 1), ("cat,cat", 1), ("cat,,sat", 1), ("cat,sat", 0),
                       ("cat,sat", 1.5)):
    with pytest.raises(ValueError, match=r"data\.response_probe"):
      parse_response_probe(spec, weight)
  assert parse_response_probe("", 1) is None
  assert parse_response_probe(" right , wrong", 4) == ("right", "wrong", 4)


def test_collated_sft_batches_carry_the_probes_row_by_row(tok):
  enc = ExampleEncoder(tok, max_length=4096, kind=SFT_BATCH, response_probe=("cat", "sat", 1))
  examples = [{**enc.encode(dataclasses.replace(_record(i), label="AB"[i % 2])), "index": i}
              for i in range(3)]
  batch = collate(examples, kind=SFT_BATCH, batch_size=4, buckets=BUCKETS + (1024,),
                  pad_id=0)
  for key in PROBE_KEYS:
    assert batch[key].shape == (4, 2) and batch[key].dtype == np.int32
    np.testing.assert_array_equal(batch[key][:3], [ex[key] for ex in examples])
  assert set(PROBE_KEYS) <= set(SFT_BATCH.select(batch))
  assert not batch["valid"][3]  # the filler row: its probes weigh nothing in the loss
