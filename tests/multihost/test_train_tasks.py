"""RM training on 2 processes x 4 devices equals 1 process x 8 devices.

Same mesh shape (data=8), same global batches: parameters after K steps
within 1e-5, the same metrics rows, the same counts; checkpoints written by 2
processes restore on 1 (resharded), and SIGTERM to one process stops both at
the same step.
"""

import json
import os
import shutil

import pytest
from safetensors.numpy import load_file

from tests.multihost import harness, runs

STEPS = 8


def _rm_args(workdir: str, steps: int = STEPS, **extra) -> list[str]:
  # A periodic (async) save at step 4 overlaps the steps after it; a stop saves
  # its own step, so resuming needs no save at every step.
  args = {"config": "configs/rm.py:tiny", "workdir": workdir,
          "config.train.num_steps": steps, "config.optim.warmup_steps": 2,
          "config.train.eval_every": 4, "config.train.log_every": 1,
          "config.checkpoint.every": 4, "config.train.progress_bar": False,
          "config.data.synthetic_train": 400, "config.data.synthetic_eval": 40,
          "config.data.eval_batch_size": 16, **extra}
  return [f"--{k}={v}" for k, v in args.items()]


def _assert_resumed_from(workdir: str, step: int) -> None:
  """The run restored the checkpoint of `step` (it did not start over)."""
  with open(os.path.join(workdir, "log.txt"), encoding="utf-8") as f:
    log = f.read()
  assert f"resumed from step {step} in" in log, f"{workdir} did not resume from step {step}"


@pytest.fixture(scope="module")
def rm_reference(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("rm_one"))
  harness.run_cli(1, _rm_args(workdir))
  return workdir


def test_rm_two_processes_equal_one(rm_reference, tmp_path):
  workdir = str(tmp_path / "rm_two")
  outputs = harness.run_cli(2, _rm_args(workdir))
  runs.assert_same_weights(runs.exported(workdir), runs.exported(rm_reference))
  runs.assert_same_rows(runs.metric_rows(workdir), runs.metric_rows(rm_reference))
  one, two = runs.summary(rm_reference), runs.summary(workdir)
  assert two["inputs"] == one["inputs"] and two["inputs"]["examples"] == STEPS * 16
  assert two["batch_shapes"] == one["batch_shapes"]
  assert two["eval"]["num_pairs"] == pytest.approx(one["eval"]["num_pairs"])
  # Both processes return the same summary; only process 0 wrote files.
  assert all('"step": 8' in out for out in outputs)


@pytest.mark.slow  # ~90 s
def test_lora_rm_two_processes_equal_one(tmp_path):
  """Adapters (born on one device, then sharded), frozen base, both exports."""
  lora = {"config.lora.rank": 4, "config.lora.alpha": 8, "config.lora.dropout": 0.1}
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  harness.run_cli(1, _rm_args(one, steps=4, **lora))
  harness.run_cli(2, _rm_args(two, steps=4, **lora))
  runs.assert_same_weights(runs.exported(two), runs.exported(one))
  adapter = lambda w: load_file(os.path.join(w, "hf_adapter", "adapter_model.safetensors"))  # noqa: E731
  runs.assert_same_weights(adapter(two), adapter(one))
  runs.assert_same_rows(runs.metric_rows(two), runs.metric_rows(one))
  s1, s2 = runs.summary(one), runs.summary(two)
  for key in ("trainable_params", "frozen_params", "optimizer_state_bytes"):
    assert s2[key] == s1[key], key


@pytest.mark.slow  # ~2 min
def test_packed_rm_two_processes_equal_one(tmp_path):
  """Packed rows: each process packs its share, the row count agreed; the same
  pairs per step, so the same training (rows laid out differently). Two batch
  shards leave each process any row count, so the processes' needs differ."""
  pack = {"config.data.pack": True, "config.data.pack_segments": 3,
          "config.mesh.data": 2, "config.mesh.tensor": 4}
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  harness.run_cli(1, _rm_args(one, steps=4, **pack))
  harness.run_cli(2, _rm_args(two, steps=4, **pack))
  runs.assert_same_weights(runs.exported(two), runs.exported(one))
  runs.assert_same_rows(runs.metric_rows(two), runs.metric_rows(one))
  assert runs.summary(two)["inputs"] == runs.summary(one)["inputs"]


def test_rm_preempted_on_two_resumes_on_two_and_on_one(rm_reference, tmp_path):
  workdir = str(tmp_path / "rm_preempt")
  runs.run_and_signal(2, _rm_args(workdir), workdir=workdir, after_step=2)
  stopped = runs.summary(workdir)
  assert stopped["stopped_early"] and 2 <= stopped["step"] < STEPS
  other = str(tmp_path / "rm_preempt_copy")
  shutil.copytree(workdir, other)
  # The same process count, and a resharded restore on 1 process.
  harness.run_cli(2, _rm_args(workdir))
  harness.run_cli(1, _rm_args(other))
  for resumed in (workdir, other):
    _assert_resumed_from(resumed, stopped["step"])
    assert runs.summary(resumed)["step"] == STEPS
    runs.assert_same_weights(runs.exported(resumed), runs.exported(rm_reference))


def test_rm_preempted_on_one_resumes_on_two(rm_reference, tmp_path):
  workdir = str(tmp_path / "rm_preempt1")
  runs.run_and_signal(1, _rm_args(workdir), workdir=workdir, after_step=2, signalled=0)
  stopped = runs.summary(workdir)["step"]
  assert 2 <= stopped < STEPS
  harness.run_cli(2, _rm_args(workdir))
  _assert_resumed_from(workdir, stopped)
  runs.assert_same_weights(runs.exported(workdir), runs.exported(rm_reference))


def _sft_args(workdir: str, variant: str, steps: int, **extra) -> list[str]:
  args = {"config": f"configs/sft.py:{variant}", "workdir": workdir,
          "config.train.num_steps": steps, "config.optim.warmup_steps": 1,
          "config.train.eval_every": steps, "config.train.log_every": 1,
          "config.checkpoint.every": steps, "config.train.progress_bar": False,
          "config.data.synthetic_train": 64, "config.data.synthetic_eval": 12,
          "config.data.eval_batch_size": 8, **extra}
  return [f"--{k}={v}" for k, v in args.items()]


@pytest.mark.parametrize("variant,extra", [
    # Text (colour), image, video and audio records: per-row patches and frames,
    # buckets agreed.
    ("tiny_omni", {}),
    # Text records only: the same SFT batches of text rows on 2 processes as
    # tiny_omni's colour pairs (and the text decoder on 2 processes as the RM
    # tests above), so it is slow.
    pytest.param("tiny", {}, marks=pytest.mark.slow),
])
def test_sft_two_processes_equal_one(tmp_path, variant, extra):
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  harness.run_cli(1, _sft_args(one, variant, 3, **extra))
  harness.run_cli(2, _sft_args(two, variant, 3, **extra))
  runs.assert_same_weights(runs.exported(two), runs.exported(one))
  runs.assert_same_rows(runs.metric_rows(two), runs.metric_rows(one))
  s1, s2 = runs.summary(one), runs.summary(two)
  assert s2["inputs"] == s1["inputs"]
  assert s2["batch_shapes"] == s1["batch_shapes"]
  assert s2["eval"]["num_tokens"] == pytest.approx(s1["eval"]["num_tokens"])


def test_eval_and_export_two_processes_equal_one(rm_reference, tmp_path):
  """The eval report counts every record once; an export re-written by two
  processes holds the same tensors."""
  reports = []
  for n in (1, 2):
    workdir = str(tmp_path / f"eval{n}")
    harness.run_cli(n, ["--config=configs/eval.py", f"--workdir={workdir}",
                        f"--config.model.path={rm_reference}/hf",
                        f"--config.data.path={rm_reference}/data/eval.jsonl",
                        "--config.data.batch_size=16"])
    reports.append(json.load(open(f"{workdir}/eval_report.json", encoding="utf-8")))
  assert reports[0]["records"] == 40
  assert reports[1]["overall"] == reports[0]["overall"]
  assert reports[1]["per_modality"] == reports[0]["per_modality"]
  workdir = str(tmp_path / "export2")
  harness.run_cli(2, ["--config=configs/export.py", f"--workdir={workdir}",
                      f"--config.model_path={rm_reference}/hf"])
  runs.assert_same_weights(runs.exported(workdir), runs.exported(rm_reference), tol=0)


@pytest.mark.slow  # four CLI runs, about 40 s besides the shared reference RM
def test_benchmark_eval_and_bon_two_processes_equal_one(rm_reference, tmp_path):
  """A benchmark's own score (RewardBench 2 rows) and Best-of-N picks do not
  depend on the process count."""
  data = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "benchmarks",
                      "rewardbench2.jsonl")
  common = [f"--config.model.path={rm_reference}/hf", f"--config.data.path={data}",
            "--config.data.batch_size=8", "--config.data.max_length=128",
            "--config.data.buckets=(64,128)"]
  evals, bons = [], []
  for n in (1, 2):
    workdir = str(tmp_path / f"eval{n}")
    harness.run_cli(n, ["--config=configs/eval.py:rewardbench2", f"--workdir={workdir}",
                        *common])
    evals.append(json.load(open(f"{workdir}/eval_report.json", encoding="utf-8")))
    workdir = str(tmp_path / f"bon{n}")
    harness.run_cli(n, ["--config=configs/bon.py", f"--workdir={workdir}", *common])
    with open(f"{workdir}/bon_picks.jsonl", encoding="utf-8") as f:
      bons.append([json.loads(line)["picked"] for line in f])
  assert evals[0]["records"] == 15
  assert evals[1]["per_subset"] == evals[0]["per_subset"]
  assert evals[1]["benchmark"]["score"] == pytest.approx(evals[0]["benchmark"]["score"],
                                                         abs=1e-6)
  assert bons[1] == bons[0] and len(bons[0]) == 5
