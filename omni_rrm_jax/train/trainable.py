"""Which parameters train: LoRA adapters, frozen modules, and the filter that says so.

  trainable = prepare_trainable(model, config.lora, config.model.freeze, seed=config.seed)
  graphdef, state = init_train_state(model, tx, seed, trainable=trainable)

The filter splits the model into the trained parameters (`TrainState.params`:
differentiated, updated, with optimizer state, checkpointed) and the frozen
ones (`TrainState.frozen`: read by the forward pass only). With LoRA on, the
adapters and a scalar RM's score head train and everything else is frozen;
`model.freeze` freezes whole modules (e.g. the encoders) in either case.
"""

from __future__ import annotations

import logging
from typing import Sequence

import jax
import numpy as np
from flax import nnx

from omni_rrm_jax.models.lora import apply_lora

log = logging.getLogger(__name__)

# Modules that train fully even when LoRA freezes the rest: a scalar RM's head is new.
HEADS = ("score",)


def _dotted(path) -> str:
  return ".".join(str(p) for p in path)


def _under(path, prefixes: Sequence[str]) -> bool:
  name = _dotted(path)
  return any(name == p or name.startswith(p + ".") for p in prefixes)


def trainable_filter(*, lora: bool, freeze: Sequence[str] = ()):
  """An NNX filter `(path, variable) -> bool` selecting the parameters that train.

  Args:
    lora: only LoRA adapters and the `HEADS` train.
    freeze: module path prefixes (`visual`, `audio_tower`, `model.layers.0`)
      whose parameters never train.
  """
  freeze = tuple(freeze)

  def trains(path, variable) -> bool:
    if not isinstance(variable, nnx.Param) or _under(path, freeze):
      return False
    if lora:
      return isinstance(variable, nnx.LoRAParam) or _under(path, HEADS)
    return True

  return trains


def check_freeze(model: nnx.Module, freeze: Sequence[str]) -> None:
  """Every `model.freeze` prefix must name a module of the model."""
  paths = [p for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))]
  for prefix in freeze:
    if not any(_under(p, (prefix,)) for p in paths):
      tops = sorted({str(p[0]) for p in paths})
      raise ValueError(f"model.freeze {prefix!r} names no module of the model; its top-level "
                       f"modules: {', '.join(tops)}")


def prepare_trainable(model: nnx.Module, lora, freeze: Sequence[str], *, seed: int = 0):
  """Adapts `model` in place when `lora.rank > 0` and returns its trainable filter.

  Args:
    model: the task's model.
    lora: the `lora` config section (`rank`, `alpha`, `dropout`, `targets`).
    freeze: the `model.freeze` prefixes.
    seed: draws the adapters' A matrices.
  """
  freeze = tuple(freeze)
  check_freeze(model, freeze)
  on = int(lora.rank) > 0
  if on:
    paths = apply_lora(model, rank=int(lora.rank), alpha=float(lora.alpha),
                       dropout=float(lora.dropout), targets=tuple(lora.targets), seed=seed)
    log.info("LoRA rank %d, alpha %g on %d linear layers", lora.rank, lora.alpha, len(paths))
  return trainable_filter(lora=on, freeze=freeze)


def tree_size(tree) -> tuple[int, int]:
  """`(number of elements, bytes)` of a pytree's arrays (abstract ones too)."""
  leaves = [x for x in jax.tree.leaves(tree) if hasattr(x, "shape")]
  count = sum(int(np.prod(x.shape)) for x in leaves)
  nbytes = sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in leaves)
  return count, nbytes


def training_sizes(state) -> dict[str, int]:
  """Trained / frozen parameter counts and the optimizer state's size, for logs and summaries."""
  trained, _ = tree_size(state.params)
  frozen, _ = tree_size(state.frozen)
  opt_count, opt_bytes = tree_size(state.opt_state)
  sizes = dict(trainable_params=trained, frozen_params=frozen,
               optimizer_state_elements=opt_count, optimizer_state_bytes=opt_bytes)
  log.info("parameters: %d trained, %d frozen; optimizer state: %d elements, %d bytes",
           trained, frozen, opt_count, opt_bytes)
  return sizes
