"""The command line: `omni-rrm --config=configs/TASK.py[:VARIANT] --workdir=DIR [--config.a.b=v]`.

`omni-rrm demo --workdir=DIR [--config.a.b=v]` is the main job (`demo/config.py`);
`omni-rrm serve[:VARIANT] --workdir=DIR --config.model.path=HF_DIR` serves an
exported RM or judge over HTTP (`serve/config.py`).

This is the only module that defines flags. It initialises multi-host JAX once,
then hands `(config, workdir)` to the task named by `config.task`.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from omni_rrm_jax.core.console import configure_logging
from omni_rrm_jax.core.huge_pages import reexec_with_huge_pages
from omni_rrm_jax.core.registry import Registry

_CONFIG = config_flags.DEFINE_config_file("config", None, "Task config file, e.g. configs/rm.py:tiny",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, logs and outputs go.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False,
    "Call jax.distributed.initialize() (multi-host TPU/GPU pods); without the three flags "
    "below, JAX reads the cluster from its environment (Cloud TPU, GKE, SLURM, ...).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0's coordinator (implies --distributed).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of JAX processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0-based.")

# task name -> "module:function" taking (config, workdir); imported on use so a
# task's dependencies load only when it runs.
TASKS: Registry[str] = Registry("task")
TASKS.add("export", "omni_rrm_jax.export.convert:run")
TASKS.add("rm", "omni_rrm_jax.train.loop:run")
TASKS.add("sft", "omni_rrm_jax.train.loop:run")
TASKS.add("eval", "omni_rrm_jax.eval.run:run")
TASKS.add("bon", "omni_rrm_jax.eval.bon_task:run")
TASKS.add("grpo", "omni_rrm_jax.rl.grpo_loop:run")
TASKS.add("demo", "omni_rrm_jax.demo.run:run")
TASKS.add("construct", "omni_rrm_jax.construct.pipeline:run")
TASKS.add("serve", "omni_rrm_jax.serve.run:run")

_PACKAGE = os.path.dirname(os.path.abspath(__file__))
DEMO_CONFIG = os.path.join(_PACKAGE, "demo", "config.py")
SERVE_CONFIG = os.path.join(_PACKAGE, "serve", "config.py")


def expand_subcommand(argv: list[str]) -> list[str]:
  """`omni-rrm demo ...` -> `omni-rrm --config=<package>/demo/config.py ...`;
  `omni-rrm serve[:VARIANT] ...` -> `omni-rrm --config=<package>/serve/config.py[:VARIANT] ...`."""
  if len(argv) > 1 and argv[1] == "demo":
    return [argv[0], f"--config={DEMO_CONFIG}", *argv[2:]]
  if len(argv) > 1 and argv[1].partition(":")[0] == "serve":
    variant = argv[1].partition(":")[2]
    return [argv[0], f"--config={SERVE_CONFIG}" + (f":{variant}" if variant else ""), *argv[2:]]
  return argv


def run_task(config, workdir: str):
  target = TASKS.get(config.task)
  module_name, fn_name = target.split(":")
  return getattr(importlib.import_module(module_name), fn_name)(config, workdir)


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> None:
  """`jax.distributed.initialize`, once per process, before any device is used.

  On CPU the cross-process collectives go through gloo (XLA:CPU has no other
  implementation), so that several processes on one machine or on CPU hosts
  form one mesh, as the multi-process tests do.
  """
  import jax

  given = [v is not None for v in (coordinator_address, num_processes, process_id)]
  if any(given) and not all(given):
    raise app.UsageError("--coordinator_address, --num_processes and --process_id go together")
  if jax.config.jax_platforms in ("cpu",) or os.environ.get("JAX_PLATFORMS") == "cpu":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)


def _main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if _CONFIG.value is None:
    raise app.UsageError("--config is required, e.g. --config=configs/export.py")
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required")
  # absl's --verbosity=1 (or -v 1) brings the INFO lines back to the console.
  verbose = flags.FLAGS["verbosity"].present and flags.FLAGS.verbosity >= 1
  # Logging first: starting JAX logs at INFO (backends it probed and skipped),
  # which belongs in the log file. The process index is known for sure only
  # once JAX runs, so the file's tag is set again then.
  path = configure_logging(_WORKDIR.value, verbose=verbose, process_index=_PROCESS_ID.value or 0)
  if _DISTRIBUTED.value or _COORDINATOR.value:
    initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  import jax

  if jax.process_index() != (_PROCESS_ID.value or 0):
    path = configure_logging(_WORKDIR.value, verbose=verbose, process_index=jax.process_index())
  if "://" in _WORKDIR.value and jax.process_index() == 0:
    print(f"omni-rrm: logs in {path}", file=sys.stderr)
  try:
    result = run_task(_CONFIG.value, _WORKDIR.value)
  except (ValueError, KeyError, FileNotFoundError) as e:
    # Bad input (config value, file, checkpoint): one clear line, no traceback.
    logging.debug("task failed", exc_info=True)
    message = e.args[0] if isinstance(e, KeyError) and e.args else e
    sys.exit(f"omni-rrm: error: {message}")
  if isinstance(result, dict):
    print(json.dumps(result, default=str))


def run():
  """Console-script entry point."""
  # Before JAX starts: XLA:CPU's step buffers on huge pages (core/huge_pages.py).
  reexec_with_huge_pages()
  app.run(_main, argv=expand_subcommand(sys.argv))


if __name__ == "__main__":
  run()
