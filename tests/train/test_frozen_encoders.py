"""Frozen encoders (`model.freeze`) in the jitted SFT and GRPO steps of a thinker fed media.

Frozen parameters reach a step as `TrainState.frozen`, outside the arguments
that are differentiated; the encoders' per-row `nnx.vmap` still reads them
(it once refused parameters from the enclosing trace level, so a recipe that
freezes the towers could not take a step with media).
"""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from omni_rrm_jax.core.batch_contract import MEDIA_KEYS
from omni_rrm_jax.rl.grpo_step import make_grpo_step
from omni_rrm_jax.train.optimizer import make_optimizer
from omni_rrm_jax.train.state import init_train_state
from omni_rrm_jax.train.step import make_train_step
from omni_rrm_jax.train.task_kind import SFT
from omni_rrm_jax.train.trainable import trainable_filter
from tests.models.test_omni_rows import mixed
from tests.models.test_qwen2_5_omni import flax_model

FREEZE = ("visual", "audio_tower")


def _state():
  model = flax_model()
  tx, _ = make_optimizer(dict(learning_rate=1e-2, warmup_steps=0), total_steps=10)
  graphdef, state = init_train_state(model, tx, trainable=trainable_filter(lora=False,
                                                                           freeze=FREEZE))
  return graphdef, tx, state


def _paths(state) -> set[str]:
  return {".".join(map(str, p)) for p, _ in nnx.to_flat_state(state)}


def _changed(before, after) -> bool:
  return any(not np.array_equal(a, b) for a, b in
             zip(jax.tree.leaves(before), jax.tree.leaves(after)))


def test_sft_and_grpo_steps_take_media_with_frozen_encoders():
  ids, mask, collated, _ = mixed()
  media = {k: collated[k] for k in MEDIA_KEYS if k in collated}
  graphdef, tx, state = _state()
  frozen_paths = _paths(state.frozen)
  assert frozen_paths and all(p.split(".")[0] in FREEZE for p in frozen_paths)
  assert not any(p.split(".")[0] in FREEZE for p in _paths(state.params))
  frozen0 = jax.device_get(state.frozen)

  params0 = jax.device_get(state.params)
  state, metrics = make_train_step(graphdef, tx, SFT)(
      state, dict(input_ids=ids, attention_mask=mask, loss_mask=mask, **media))
  assert np.isfinite(float(metrics["loss"])) and int(metrics["skipped"]) == 0
  assert _changed(params0, jax.device_get(state.params))

  b, n = ids.shape[0], 4
  completion = np.tile(np.arange(5, 5 + n, dtype=np.int32), (b, 1))
  params1 = jax.device_get(state.params)
  state, metrics = make_grpo_step(graphdef, tx, beta=0.0)(state, dict(
      prompt_ids=ids, prompt_mask=mask, completion_ids=completion,
      completion_mask=np.ones_like(completion), loss_mask=np.ones_like(completion),
      old_logp=np.zeros(completion.shape, np.float32),
      adv=np.asarray([1.0, -1.0] * (b // 2), np.float32), **media))
  assert np.isfinite(float(metrics["loss"])) and int(metrics["skipped"]) == 0
  assert _changed(params1, jax.device_get(state.params))
  assert not _changed(frozen0, jax.device_get(state.frozen))


def test_towers_shard_over_fsdp_like_the_text_decoder():
  from omni_rrm_jax.sharding.mesh import make_mesh
  from omni_rrm_jax.sharding.rules import DEFAULT_RULES
  from omni_rrm_jax.train.state import abstract_train_state

  mesh = make_mesh({"data": 1, "fsdp": -1, "tensor": 1})
  tx, _ = make_optimizer(dict(learning_rate=1e-2, warmup_steps=0), total_steps=10)
  _, state = abstract_train_state(flax_model(), tx, mesh=mesh, rules=DEFAULT_RULES)
  specs = {".".join(map(str, p)): v.get_value().sharding.spec
           for p, v in nnx.to_flat_state(state.params)}
  for tower in FREEZE:
    kernels = [s for p, s in specs.items() if p.startswith(tower) and p.endswith("kernel")]
    assert kernels and all("fsdp" in tuple(s) for s in kernels), tower
