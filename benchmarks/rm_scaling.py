"""Scaling curves of the RM train step: ours vs PyTorch over model size and sequence length.

Runs `rm_train_step.py` once per point of a grid, each point in its own
process (every point starts with the memory of the previous one returned and
none of its state), and collects its JSON line. The grid is two sweeps:

  size:    every size of `--sizes` at its own default batch and length
           (`rm_train_step.DEFAULTS`);
  length:  `--length_size` at every length of `--lengths`, with
           `--length_batch` pairs a step at every length.

A point in both sweeps (same size, length and pairs) runs once. Flags this
script does not know (e.g. `--remat both`, `--memory_gib 18`, `--rounds 3`)
are passed on to every point. Each point is bounded by `--timeout` seconds;
a point that times out, does not fit in memory (`"fits": false` from the
script, or killed by the kernel) or fails is reported with its `status` and
the sweep goes on. One JSON line per point is printed as it finishes (and
written to `--out`), then a markdown table of all points. `ratio` is ours /
PyTorch in tokens per second, both sides measured in alternating rounds of
the same process; MFU is against the matmul peak measured in that point's
process; `remat` says which side recomputed its layers (long sequences).
Runs where other processes compete for the cores are not comparable (see
`load_avg`).

    python benchmarks/rm_scaling.py --out rm_scaling.jsonl   # the grid, ~15-20 min on 2 cores
    python benchmarks/rm_scaling.py --list                   # the points' commands, no run
    python benchmarks/rm_scaling.py --sizes 25m,100m --lengths ''   # the size sweep only
    python benchmarks/rm_scaling.py --sizes '' --length_size 100m   # 100m's length sweep
    python benchmarks/rm_scaling.py --smoke                  # tiny shapes, seconds a point
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import pathlib
import signal
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
SCRIPT = HERE / "rm_train_step.py"
SIZES_DEFAULT = "tiny,25m,100m,400m"
LENGTHS_DEFAULT = "256,1024,4096"
# Smoke runs: every point at a few tokens, one step, one round, a small peak matmul.
SMOKE_LENGTH = 32
SMOKE_LENGTHS = "16,32"
SMOKE_ARGS = ("--steps_per_round", "1", "--rounds", "1", "--matmul_n", "128",
              "--matmul_rounds", "1", "--pause_s", "0")


def _step_module():
  spec = importlib.util.spec_from_file_location("rm_train_step", SCRIPT)
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # dataclasses look their module up by name
  spec.loader.exec_module(module)
  return module


@dataclasses.dataclass(frozen=True)
class Point:
  sweep: str  # "size", "length" or "size+length"
  size: str
  length: int
  pairs: int

  def args(self) -> list[str]:
    return ["--size", self.size, "--length", str(self.length), "--batch", str(self.pairs)]


def grid(sizes: list[str], lengths: list[int], length_size: str, length_batch: int,
         defaults: dict, smoke: bool = False) -> list[Point]:
  """The size sweep's points, then the length sweep's, without repeats."""
  points = []
  for size in sizes:
    pairs, length, _, _ = defaults[size]
    points.append(Point("size", size, SMOKE_LENGTH if smoke else length, 1 if smoke else pairs))
  points += [Point("length", length_size, length, length_batch) for length in lengths]
  unique: dict[tuple, Point] = {}
  for point in points:
    key = (point.size, point.length, point.pairs)
    if key in unique:  # one run serves both sweeps
      point = dataclasses.replace(unique[key], sweep=f"{unique[key].sweep}+{point.sweep}")
    unique[key] = point
  return list(unique.values())


def _tail(text: str | bytes | None, lines: int = 5) -> str:
  if isinstance(text, bytes):
    text = text.decode(errors="replace")
  return "\n".join((text or "").strip().splitlines()[-lines:])


def run_point(point: Point, extra: list[str], timeout: float) -> dict:
  """The point's JSON line with `sweep`, `status` and `wall_s` added."""
  base = {"benchmark": "rm_train_step", "sweep": point.sweep, "size": point.size,
          "length": point.length, "batch_pairs": point.pairs}
  command = [sys.executable, str(SCRIPT), *point.args(), *extra]
  start = time.perf_counter()
  try:
    out = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired as timed_out:
    return {**base, "status": "timed out", "timeout_s": timeout,
            "wall_s": round(time.perf_counter() - start, 1), "error": _tail(timed_out.stderr)}
  wall = round(time.perf_counter() - start, 1)
  lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
  if out.returncode == 0 and lines:
    result = json.loads(lines[-1])
    status = "ok" if result.get("fits", True) else "does not fit"
    return {**result, "sweep": point.sweep, "status": status, "wall_s": wall}
  if out.returncode == -signal.SIGKILL:
    status = "killed (out of memory?)"
  else:
    status = f"failed (exit {out.returncode})"
  return {**base, "status": status, "wall_s": wall, "error": _tail(out.stderr)}


def _cell(value, digits: int | None = None) -> str:
  if value is None:
    return "-"
  if digits is not None:
    return f"{value:,.{digits}f}"
  return f"{value:,}" if isinstance(value, int) else str(value)


def table(results: list[dict]) -> str:
  """A markdown table, one row per point."""
  header = ("| sweep | size | params | length | pairs | remat (ours / PyTorch) | ours tokens/s "
            "| PyTorch tokens/s | ratio | MFU ours | MFU PyTorch | load avg | matmul peak GFLOP/s "
            "| status |")
  rows = [header, "|" + "---|" * header.count(" | ") + "---|"]
  for r in results:
    remat = r.get("remat")
    remat = "-" if remat is None else "/".join("yes" if remat[k] else "no"
                                               for k in ("ours", "torch"))
    params = r.get("n_params")
    rows.append("| " + " | ".join([
        r["sweep"], r["size"], "-" if params is None else f"{params / 1e6:.1f}M",
        _cell(r["length"]), _cell(r["batch_pairs"]), remat,
        _cell(r.get("ours_tokens_per_s"), 1), _cell(r.get("torch_tokens_per_s"), 1),
        _cell(r.get("ratio"), 3), _cell(r.get("ours_mfu"), 3), _cell(r.get("torch_mfu"), 3),
        _cell(r.get("load_avg"), 2), _cell(r.get("matmul_peak_gflops"), 1), r["status"]]) + " |")
  return "\n".join(rows)


def _split(text: str) -> list[str]:
  return [part.strip() for part in text.split(",") if part.strip()]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sizes", default=None,
                      help=f"comma-separated sizes of the size sweep (default {SIZES_DEFAULT}; "
                           "'' for none)")
  parser.add_argument("--lengths", default=None,
                      help=f"comma-separated lengths of the length sweep (default "
                           f"{LENGTHS_DEFAULT}; '' for none)")
  parser.add_argument("--length_size", default=None,
                      help="the model size of the length sweep (default 25m; tiny with --smoke)")
  parser.add_argument("--length_batch", type=int, default=1,
                      help="pairs per step at every point of the length sweep")
  parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per point")
  parser.add_argument("--out", default=None, help="also write the JSON lines to this file")
  parser.add_argument("--smoke", action="store_true",
                      help=f"tiny shapes: lengths {SMOKE_LENGTHS} (size points at "
                           f"{SMOKE_LENGTH}), one pair, one step, one round")
  parser.add_argument("--list", action="store_true", help="print the points' commands and exit")
  args, passthrough = parser.parse_known_args(argv)
  step = _step_module()
  sizes = _split(args.sizes if args.sizes is not None else
                 ("tiny" if args.smoke else SIZES_DEFAULT))
  lengths = [int(n) for n in _split(args.lengths if args.lengths is not None else
                                    (SMOKE_LENGTHS if args.smoke else LENGTHS_DEFAULT))]
  length_size = args.length_size or ("tiny" if args.smoke else "25m")
  for size in sizes + ([length_size] if lengths else []):
    if size not in step.SIZES:
      parser.error(f"unknown size {size!r}: one of {', '.join(step.SIZES)}")
  points = grid(sizes, lengths, length_size, args.length_batch, step.DEFAULTS, args.smoke)
  extra = [*(SMOKE_ARGS if args.smoke else ()), *passthrough]
  if args.list:
    for point in points:
      print(" ".join(["python", "benchmarks/rm_train_step.py", *point.args(), *extra,
                      f"  # {point.sweep}"]))
    return
  out = open(args.out, "w") if args.out else None
  results = []
  try:
    for point in points:
      result = run_point(point, extra, args.timeout)
      results.append(result)
      line = json.dumps(result)
      print(line, flush=True)
      if out:
        out.write(line + "\n")
        out.flush()
  finally:
    if out:
      out.close()
  print()
  print(table(results))


if __name__ == "__main__":
  # Both sides with glibc's default allocator unless OMNI_RRM_HUGE_PAGES=1
  # (core/huge_pages.py: huge pages measured the two libraries' interplay).
  from omni_rrm_jax.core.huge_pages import reexec_with_huge_pages
  reexec_with_huge_pages(default=False)
  main()
