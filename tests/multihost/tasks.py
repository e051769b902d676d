"""Functions the multi-process tests run in every process (`harness.run_function`)."""

from __future__ import annotations

import jax
import numpy as np

from omni_rrm_jax.core.batch_contract import SFT_BATCH


def mismatched_batch() -> str:
  """Each process builds a batch of its own length, as a broken batch plan would;
  returns the error `to_global` raises (the same on every process)."""
  from omni_rrm_jax.sharding.batch import to_global
  from omni_rrm_jax.sharding.mesh import make_mesh

  length = 16 * (1 + jax.process_index())
  batch = {"input_ids": np.zeros((4, length), np.int32), "valid": np.ones((4,), bool)}
  try:
    to_global(batch, make_mesh({"data": -1}))
  except ValueError as e:
    return str(e)
  return "no error"


def agreed_buckets() -> list:
  """Rows of different lengths per process pad to the same global buckets."""
  from omni_rrm_jax.core.multihost import agree_max
  from omni_rrm_jax.data.batching import collate

  kw = dict(kind=SFT_BATCH, batch_size=2, buckets=(8, 16, 32), pad_id=0)
  n = 6 if jax.process_index() == 0 else 20
  example = {"input_ids": list(range(1, n + 1)), "loss_mask": [1] * n, "valid": True,
             "invalid_reason": 0, "truncated": False, "modality": 0, "index": 0}
  local = collate([example], **kw)["input_ids"].shape
  agreed = collate([example], global_needs=agree_max([n, 0, 0]), **kw)["input_ids"].shape
  return [list(local), list(agreed)]


def few_rows() -> list:
  """A global batch of 4 rows on 8 devices is replicated: each process passes
  its 2 rows and every process gets all 4, in process order."""
  from omni_rrm_jax.sharding.batch import to_global
  from omni_rrm_jax.sharding.mesh import make_mesh

  rows = np.arange(2, dtype=np.int32)[:, None] + 10 * jax.process_index()
  out = to_global({"input_ids": rows}, make_mesh({"data": -1}))["input_ids"]
  return np.asarray(out.addressable_shards[0].data).ravel().tolist()


def rows_scores(rm: str, rows: slice) -> list[float]:
  """RM scores of rows `rows` of 16 fixed completions, on a data=8 mesh."""
  from omni_rrm_jax.rl.model_reward import ModelReward
  from omni_rrm_jax.sharding.mesh import make_mesh

  prompts = [f"What colour is item {i}?" for i in range(16)]
  completions = [("It is blue. " * (i % 5)).strip() or "No idea." for i in range(16)]
  reward = ModelReward(rm, batch_size=8, max_length=64, bucket=16, mesh=make_mesh())
  return [float(x) for x in reward(prompts[rows], completions[rows])]


def score_shares(rm: str, rows_per_process: list[int]) -> list[float]:
  """This process's share of the rows, scored by the RM folder `rm`."""
  start = sum(rows_per_process[:jax.process_index()])
  return rows_scores(rm, slice(start, start + rows_per_process[jax.process_index()]))


def group_checks(rm: str, rows_per_process: list[int]) -> dict:
  """The batch-plan checks above and a model reward's uneven shares, in one
  process group (one start-up instead of one per check); the failing shape
  check runs last, after every collective that must succeed."""
  return {"agreed_buckets": agreed_buckets(), "few_rows": few_rows(),
          "model_reward": score_shares(rm, rows_per_process),
          "mismatched_batch": mismatched_batch()}
