"""The `export` task: load a model folder onto a mesh, report it, write it back.

Used to convert a checkpoint's dtype, to re-shard its files, or to check that a
large checkpoint loads and shards on a pod slice before a training run.
"""

from __future__ import annotations

import logging
import os
import time

import jax
import numpy as np
from flax import nnx

from omni_rrm_jax.core.multihost import barrier
from omni_rrm_jax.models.hf_save import save_pretrained
from omni_rrm_jax.models.pretrained import from_pretrained
from omni_rrm_jax.sharding.mesh import make_mesh
from omni_rrm_jax.sharding.rules import rules_from_config

log = logging.getLogger(__name__)


def parameter_report(model: nnx.Module) -> dict:
  """Parameter count and the largest per-device share of parameter bytes."""
  per_device: dict = {}
  total = 0
  for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)):
    total += int(np.prod(leaf.shape))
    for shard in leaf.addressable_shards:
      per_device[shard.device] = per_device.get(shard.device, 0) + shard.data.nbytes
  return {"num_params": total, "max_param_bytes_per_device": max(per_device.values())}


def run(config, workdir: str) -> dict:
  """Loads `config.model_path`, sharded by `config.mesh`, and saves it to `workdir`."""
  if not config.model_path:
    raise ValueError("config.model_path is empty: set --config.model_path=FOLDER")
  mesh = make_mesh(dict(config.mesh))
  rules = rules_from_config(dict(config.rules))
  start = time.perf_counter()
  model = from_pretrained(config.model_path, mesh=mesh, rules=rules,
                          param_dtype=config.param_dtype, dtype=config.param_dtype)
  report = parameter_report(model)
  report["load_seconds"] = round(time.perf_counter() - start, 3)
  report["mesh"] = dict(mesh.shape)
  log.info("loaded %s: %s", config.model_path, report)
  out_dir = os.path.join(workdir, "hf")
  save_pretrained(model, out_dir, max_shard_bytes=int(config.max_shard_gb * 1024**3))
  barrier("export written")  # every process returns once the folder is complete
  report["output"] = out_dir
  log.info("wrote %s", out_dir)
  return report
