"""Smoke tests of the benchmark scripts at toy sizes (the real runs take minutes)."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from omni_rrm_jax.demo.config import get_config

BENCHMARKS = pathlib.Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
  spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # dataclasses look their module up by name
  spec.loader.exec_module(module)
  return module


# Scripts that import a sibling as `benchmarks.<name>` (the rest load it by path).
_PACKAGE_IMPORTERS = sorted(p.stem for p in BENCHMARKS.glob("*.py")
                            if re.search(r"^\s*from benchmarks\.", p.read_text(), re.M))


@pytest.mark.parametrize("name", _PACKAGE_IMPORTERS)
def test_a_script_that_imports_benchmarks_runs_as_documented_from_anywhere(name, tmp_path):
  # `python benchmarks/NAME.py` puts benchmarks/ on the path, not the repository root.
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  out = subprocess.run([sys.executable, str(BENCHMARKS / f"{name}.py"), "--help"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300, env=env)
  assert out.returncode == 0 and "usage:" in out.stdout, out.stderr[-400:]


def _run(name: str, *args: str, env: dict | None = None) -> dict:
  out = subprocess.run([sys.executable, str(BENCHMARKS / f"{name}.py"), *args],
                       capture_output=True, text=True, check=True, timeout=600, env=env)
  lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
  assert len(lines) == 1, out.stdout
  return json.loads(lines[0])


def test_input_pipeline_sides_build_the_same_batches_of_every_modality(tmp_path):
  bench = _load("input_pipeline")
  cfg = bench.MediaConfig(**bench.MEDIA)
  keys = {"image": "vision_patches", "video": "vision_patches", "audio": "input_features"}
  for modality, key in keys.items():
    setup = bench.make_setup(str(tmp_path), modality, 3, cfg, batch_size=2)
    assert setup.num_batches == 2
    # Both sides encode and collate every record once, in order, to the same batches.
    grain_ready, grain_s, grain = bench.grain_round(setup, workers=0)
    torch_ready, torch_s, torch_batches = bench.torch_round(setup, workers=0)
    assert grain_ready == torch_ready == 0.0 and grain_s > 0 and torch_s > 0
    assert len(grain) == 2 and all(key in b for b in grain)
    assert bench._differences(grain, torch_batches) == []
    assert sorted(i for b in grain for i in b["index"] if i >= 0) == [0, 1, 2]
    assert bench.baseline_round(setup) > 0
  # Audio keeps only the clip's frames (1-2 s at 100 frames a second).
  frames = grain[0]["feature_attention_mask"].sum(-1)
  assert ((100 <= frames[frames > 0]) & (frames[frames > 0] <= 201)).all()
  # A difference is named by batch and key.
  changed = [dict(b) for b in grain]
  changed[1][key] = changed[1][key] + 1.0
  assert bench._differences(changed, grain) == [f"1/{key}: max |diff| 1"]


def test_rm_model_flops():
  bench = _load("rm_train_step")
  cfg = bench.SIZES["tiny"]
  # 6 N per token, plus 12 L T^2 d per sequence.
  assert bench.model_flops_per_step(10, cfg, 1, 4) == 6 * 10 * 8 + 12 * 2 * 16 * 64 * 2


@pytest.mark.slow
def test_rm_train_step_sides_match():
  bench = _load("rm_train_step")
  cfg = bench.SIZES["tiny"]
  for remat in (False, True):
    compiled = bench.compile_ours(cfg, 1, 16, 1e-5, 0.01, remat)
    run_torch, torch_matmul_params = bench.torch_runner(cfg, 1, 16, 1e-5, 0.01, remat)
    run_ours = bench.ours_runner(compiled, cfg, 1, 16, 1e-5, 0.01)
    assert compiled.n_params - cfg["vocab_size"] * cfg["hidden_size"] == torch_matmul_params
    assert compiled.temp_bytes > 0 and compiled.argument_bytes > 4 * compiled.n_params
    assert run_torch(1) > 0 and run_ours(1) > 0


def test_optimizer_update_fuses_the_chain_into_fewer_loops():
  out = _run("optimizer_update", "--size", "tiny", "--rounds", "1", "--check_steps", "2")
  assert out["ours_s"] > 0 and out["optax_chain_s"] > 0
  # The clip as one factor lets each parameter's update fuse into one loop.
  assert out["fusions"]["ours"] < out["fusions"]["optax_chain"], out["fusions"]
  assert out["max_abs_param_difference"] < 1e-6  # clipped: float rounding at most


def test_rm_train_step_sizes_match_their_names():
  bench = _load("rm_train_step")
  for name, cfg in bench.SIZES.items():
    counts = bench.parameter_counts(cfg)
    assert counts["ours"] == counts["torch"], name
    assert counts["matmul"] == bench.matmul_params_of(cfg), name
    if name != "tiny":  # "25m" is ~25M parameters, the embedding included
      assert counts["ours"] == pytest.approx(float(name[:-1]) * 1e6, rel=0.05), name
  # Past a size's default step, fewer steps a round and rounds (at least 1 and 3).
  assert bench.round_plan("25m", 2, 256) == bench.DEFAULTS["25m"][2:]
  assert bench.round_plan("25m", 1, 4096) == (1, 3)
  assert bench.round_plan("tiny", 1, 16) == bench.DEFAULTS["tiny"][2:]


def test_rm_scaling_grid_and_table():
  scaling = _load("rm_scaling")
  defaults = _load("rm_train_step").DEFAULTS
  points = scaling.grid(["tiny", "25m"], [256, 1024], "25m", 2, defaults)
  # 25m at its default (2 pairs x 256) is in both sweeps and runs once.
  assert [(p.sweep, p.size, p.length, p.pairs) for p in points] == [
      ("size", "tiny", 256, 4), ("size+length", "25m", 256, 2), ("length", "25m", 1024, 2)]
  rows = scaling.table([
      {"sweep": "length", "size": "25m", "length": 4096, "batch_pairs": 1,
       "status": "timed out"},
      {"sweep": "size", "size": "400m", "length": 256, "batch_pairs": 1, "n_params": 397760512,
       "remat": {"mode": "auto", "ours": True, "torch": False}, "fits": False,
       "status": "does not fit"}]).splitlines()
  assert len(rows) == 4 and all(r.count("|") == rows[0].count("|") for r in rows)
  assert "| 25m | - | 4,096 | 1 | - |" in rows[2] and rows[2].endswith("| timed out |")
  assert "| 397.8M |" in rows[3] and "| yes/no |" in rows[3]


def test_rm_scaling_smoke_runs_each_point_in_its_own_process():
  # One CPU device, as the benchmark runs (the suite fakes eight).
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
  out = subprocess.run([sys.executable, str(BENCHMARKS / "rm_scaling.py"), "--smoke",
                        "--timeout", "120"], capture_output=True, text=True, check=True,
                       timeout=300, env=env)
  points = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
  assert [(p["sweep"], p["size"], p["length"], p["batch_pairs"]) for p in points] == [
      ("size+length", "tiny", 32, 1), ("length", "tiny", 16, 1)], out.stdout
  rows = [line for line in out.stdout.splitlines() if line.startswith("| ")][1:]
  assert len(rows) == 2
  for point, row in zip(points, rows):
    assert point["status"] == "ok" and point["fits"], point
    assert point["ours_tokens_per_s"] > 0 and point["torch_tokens_per_s"] > 0
    assert point["ratio"] == pytest.approx(
        point["ours_tokens_per_s"] / point["torch_tokens_per_s"], rel=1e-3, abs=1e-3)
    assert point["remat"] == {"mode": "auto", "ours": False, "torch": False}
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:5] == [point["sweep"], "tiny", "0.1M", str(point["length"]), "1"]
    assert cells[6:9] == [f"{point['ours_tokens_per_s']:,.1f}",
                          f"{point['torch_tokens_per_s']:,.1f}", f"{point['ratio']:,.3f}"]
    assert cells[-1] == "ok"


@pytest.mark.slow
def test_input_pipeline_with_workers_prints_one_line():
  out = _run("input_pipeline", "--records", "4", "--rounds", "1", "--modalities", "image")
  image = out["per_modality"]["image"]
  assert image["grain_records_per_s"] > 0 and image["torch_records_per_s"] > 0
  assert image["ratio_vs_torch"] == pytest.approx(
      image["grain_records_per_s"] / image["torch_records_per_s"], abs=0.01)


@pytest.mark.slow
def test_sampler_prints_one_line():
  # The rows split over two CPU devices (one per core) decode the same tokens as
  # transformers, as on one device.
  for devices in ("1", "2"):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = _run("sampler_throughput", "--batch", "2", "--prompt_len", "8", "--new_tokens", "4",
               "--hidden", "32", "--layers", "1", "--heads", "2", "--kv_heads", "1",
               "--vocab", "64", "--repeats", "1", "--devices", devices, env=env)
    assert out["ours_devices"] == int(devices)
    assert out["ratio"] > 0 and out["greedy_token_agreement"] == 1.0


@pytest.mark.slow
def test_compile_check_prints_memory_per_device():
  out = _run("compile_check", "--devices", "8", "--batch", "8", "--length", "64", "--layers", "1")
  assert out["mesh"] == {"data": 1, "fsdp": 8, "tensor": 1}
  assert out["gib_per_device"]["arguments"] > 0 and out["peak_gib_per_device"] > 0


def test_hostile_summary_sorts_outcomes():
  from types import SimpleNamespace as R

  sorter = _load("hostile_inputs")._Sorter()
  for report in (R(when="setup", passed=True, failed=False, nodeid="a", longrepr=None),
                 R(when="call", passed=True, failed=False, nodeid="a", longrepr=None),
                 R(when="call", passed=False, failed=True, nodeid="b",
                   longrepr="E   AssertionError: assert 'clear line' in ''"),
                 R(when="call", passed=False, failed=True, nodeid="c",
                   longrepr="E   RecursionError: maximum recursion depth exceeded"),
                 R(when="setup", passed=False, failed=True, nodeid="d",
                   longrepr="E   OSError: no such file")):
    sorter.pytest_runtest_logreport(report)
  assert (sorter.handled, sorter.silent, sorter.crash) == (["a"], ["b"], ["c", "d"])


@pytest.mark.slow
def test_lora_7b_state_counts_match_peft():
  # PEFT's count for rank-8 LoRA on every linear layer of Qwen2.5-7B is 20,185,088
  # (28 layers x 8 x (3584+3584 + 3584+512 + 3584+512 + 3584+3584 + 3 x (3584+18944)));
  # the scalar RM's 3584 x 1 head trains too.
  sizes = _load("lora_train_state").state_7b()
  assert sizes["lora"]["trained_params"] == 20_185_088 + 3584
  assert sizes["full"]["trained_params"] == (sizes["lora"]["frozen_params"]
                                             + sizes["lora"]["trained_params"] - 20_185_088)
  # AdamW's mu and nu in fp32 plus scalar counters.
  assert 8 * sizes["lora"]["trained_params"] <= sizes["lora"]["optimizer_state_bytes"] < (
      8 * sizes["lora"]["trained_params"] + 64)


@pytest.mark.slow
def test_lora_train_state_prints_one_line():
  out = _run("lora_train_state", "--hidden", "64", "--layers", "1", "--length", "32",
             "--rounds", "1", "--steps_per_round", "1")
  assert out["step"]["sizes"]["lora"]["trained_params"] < out["step"]["sizes"]["full"][
      "trained_params"]


@pytest.mark.slow
def test_serve_load_prints_one_line():
  out = _run("serve_load", "--batch_rows=1,2", "--clients=2", "--requests=2", "--hidden=32")
  assert [r["max_batch_rows"] for r in out["results"]] == [1, 2]
  assert all(r["items_per_s"] > 0 and r["p99_ms"] >= r["p50_ms"] for r in out["results"])
  assert out["results"][0]["mean_rows_per_call"] == 1.0


@pytest.mark.slow
def test_compile_check_splits_an_omni_lora_step_per_device():
  out = _run("compile_check", "--model", "omni7b", "--task", "grpo", "--lora", "8",
             "--devices", "8", "--layers", "1", "--prompt", "320", "--completion", "16",
             "--image", "112", "--audio_seconds", "2")
  g = out["gib_per_device"]
  # One layer's rank-8 adapters on 7 linear layers train; the towers are frozen.
  hidden, kv, mlp = 3584, 512, 18944
  per_layer = 8 * (2 * (hidden + hidden) + 2 * (hidden + kv) + 3 * (hidden + mlp))
  assert out["trained_params"] == per_layer and out["frozen"] == ["visual", "audio_tower"]
  # 8 x 8 patches merged 2 x 2, and 200 log-mel frames pooled to 50 tokens.
  assert out["media_tokens"] == 16 + 50 and out["mesh"]["fsdp"] == 8
  # Adam state for the adapters only: well under the frozen base's share.
  assert g["optimizer_state"] < 0.01 < g["frozen_params"] and g["temporaries"] > 0


def test_demo_step_profile_attributes_the_step_to_its_ops(tmp_path):
  # One CPU device, as the main job runs on this machine (the suite fakes eight).
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
  out = _run("demo_step_profile", "--smoke", "--stage", "sft", "--batches", "1", "--rounds",
             "1", "--top", "5", "--workdir", str(tmp_path), "--target_logits", "64", env=env)
  assert out["stage"] == "sft" and out["step_s"] > 0 and out["tokens_per_step"] > 0
  assert out["page_faults_per_step"] >= 0 and isinstance(out["huge_pages"], bool)
  # The head on each row's target positions only, the demo's default being every position.
  assert out["target_logits"] == 64 and get_config("smoke").sft.model.target_logits == 0
  # The kinds partition the traced ops: the largest ten never exceed the total.
  assert 0 < sum(out["by_kind_ms"].values()) <= out["device_thread_ms_per_step"] + 0.5
  ops = out["slowest_ops"]
  assert len(ops) == 5 and ops == sorted(ops, key=lambda op: -op["ms"])
  # Each slow op is found in the compiled step and traced back to the JAX program.
  assert sum(bool(re.match(r"\(?[a-z]+\d*\[", op["shape"])) for op in ops) >= 4, ops
  assert any("train_step" in op["from"] for op in ops)
  # The demo's data stage wrote the workdir it was given (reused by a second run).
  assert (tmp_path / "data" / "train.jsonl").exists()


def test_rm_step_profile_sorts_ops_by_kind(tmp_path):
  """Attention's score ops are told by their element count and their key axis, so an
  MLP activation or product with as many elements ([512, 4096] here, as at 400m) is not
  one of them."""
  import gzip
  sys.path.insert(0, str(BENCHMARKS.parent))  # the script imports `benchmarks.rm_train_step`
  try:
    profile = _load("rm_step_profile")
  finally:
    sys.path.remove(str(BENCHMARKS.parent))
  hlo = "\n".join([
      '  %logits = f32[2,4,1024,256]{3,2,1,0} fusion(), metadata={op_name="jit(s)/jvp(x)/dot_general"}',
      '  %softmax_grad = f32[2,4,1024,256]{3,2,1,0} fusion(), metadata={op_name="jit(s)/transpose(jvp(x))/mul"}',
      '  %mlp_act = f32[512,4096]{1,0} fusion(), metadata={op_name="jit(s)/jvp(x)/logistic"}',
      '  %dot_general.1 = f32[512,4096]{1,0} dot(), metadata={op_name="jit(s)/jvp(x)/dot_general"}',
      '  %adam = f32[1024,4096]{1,0} fusion(), metadata={op_name="jit(s)/cond/branch/div"}',
  ])
  names = ["logits", "softmax_grad", "mlp_act", "dot_general.1", "adam"]  # trace event names
  events = [{"ph": "M", "name": "thread_name", "pid": 1, "tid": 1, "args": {"name": "XLAEigen"}}]
  events += [{"ph": "X", "pid": 1, "tid": 1, "name": n, "dur": 10.0 * (i + 1)}
             for i, n in enumerate(names)]
  (tmp_path / "plugins").mkdir()
  with gzip.open(tmp_path / "plugins" / "host.trace.json.gz", "wt") as f:
    json.dump({"traceEvents": events}, f)
  kinds = profile.device_breakdown(str(tmp_path), hlo, 1, 2 * 4 * 1024 * 256, 256)
  assert kinds == {"attention_scores": {"us": 30, "ops": 2.0},
                   "other_fwd_bwd": {"us": 30, "ops": 1.0},
                   "other_matmuls": {"us": 40, "ops": 1.0},
                   "outside_autodiff": {"us": 50, "ops": 1.0}}
