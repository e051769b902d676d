"""AdamW with linear warmup, cosine decay, global-norm clipping and a decay mask.

  tx, schedule = make_optimizer(config.optimizer)
  lr = schedule(num_applied_updates)   # what the step logs as `learning_rate`

`lr_scales` gives parts of the model their own learning rate, as a factor of
the schedule's (e.g. "visual=0.1,audio_tower=0.1" for the encoders, as
multimodal recipes train a vision tower slower than the language model).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import optax

# Keys a config may set, with their defaults (None: required).
OPTIMIZER_DEFAULTS: dict[str, Any] = {
    "learning_rate": None,
    "total_steps": None,
    "warmup_steps": 0,
    "end_lr_factor": 0.0,
    "weight_decay": 0.0,
    "b1": 0.9,
    "b2": 0.999,
    "eps": 1e-8,
    "grad_clip_norm": 1.0,
    "lr_scales": "",
}
# Keys that share the optimizer's config section but belong to the train step.
STEP_KEYS = ("grad_accum_steps",)


def _read(cfg: Mapping[str, Any] | Any, **overrides) -> dict[str, Any]:
  # A ConfigDict is not a Mapping but has `keys()` and item access.
  given = {k: cfg[k] for k in cfg.keys() if k not in STEP_KEYS}
  given.update({k: v for k, v in overrides.items() if v is not None})
  unknown = sorted(set(given) - set(OPTIMIZER_DEFAULTS))
  if unknown:
    raise ValueError(f"unknown optimizer config keys {unknown}; "
                     f"known: {sorted(OPTIMIZER_DEFAULTS)}")
  out = dict(OPTIMIZER_DEFAULTS, **given)
  missing = sorted(k for k, v in out.items() if v is None and k != "grad_clip_norm")
  if missing:
    raise ValueError(f"optimizer config is missing {missing}")
  return out


def _path_names(path) -> list[str]:
  return [str(getattr(k, "key", getattr(k, "name", k))) for k in path]


def decay_mask(params):
  """True for parameters that get weight decay: matrices and embeddings.

  Norm scales and biases are exempt. Biases are found by name as well as by
  rank, since a q/k/v projection's bias is [heads, head_dim], not 1-D.
  """
  def one(path, x):
    return x.ndim > 1 and "bias" not in _path_names(path)

  return jax.tree_util.tree_map_with_path(one, params)


def parse_lr_scales(spec: str | Mapping[str, float]) -> dict[str, float]:
  """{"visual": 0.1} from "visual=0.1" (comma-separated) or from a mapping."""
  if not isinstance(spec, str):
    return {str(k): float(v) for k, v in dict(spec).items()}
  out = {}
  for item in filter(None, (part.strip() for part in spec.split(","))):
    name, sep, value = item.partition("=")
    try:
      if not (sep and name.strip()):
        raise ValueError
      out[name.strip()] = float(value)
    except ValueError:
      raise ValueError(f"optim.lr_scales item {item!r} is not name=factor "
                       f"(e.g. 'visual=0.1,audio_tower=0.1')") from None
  return out


def scale_by_module(scales: Mapping[str, float]) -> optax.GradientTransformation:
  """Multiplies each update by the factor of the first module name on its path.

  A parameter whose path (e.g. `visual/blocks/0/mlp/kernel`) contains a
  name of `scales` gets that factor; others keep theirs (1). Applied after
  AdamW, it scales the weight decay of those parameters too, exactly as a
  smaller learning rate would.
  """
  def factors(tree):
    def one(path, _):
      names = _path_names(path)
      return next((f for n, f in scales.items() if n in names), 1.0)
    return jax.tree_util.tree_map_with_path(one, tree)

  def init_fn(params):
    del params
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, f: u * f if f != 1.0 else u, updates, factors(updates)), state

  return optax.GradientTransformation(init_fn, update_fn)


def make_schedule(cfg: Mapping[str, Any] | Any, *, total_steps: int | None = None
                  ) -> optax.Schedule:
  """Linear warmup from 0 to `learning_rate`, then cosine decay to
  `learning_rate * end_lr_factor` at `total_steps` (warmup included)."""
  c = _read(cfg, total_steps=total_steps)
  warmup, total = int(c["warmup_steps"]), int(c["total_steps"])
  if not 0 <= warmup < total:
    raise ValueError(f"need 0 <= warmup_steps < total_steps, got {warmup} and {total}")
  peak = float(c["learning_rate"])
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak, warmup_steps=warmup, decay_steps=total,
      end_value=peak * float(c["end_lr_factor"]))


def make_optimizer(cfg: Mapping[str, Any] | Any, *, total_steps: int | None = None
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Builds the optimizer from a plain dict or `ConfigDict`.

  Args:
    cfg: `learning_rate` and `total_steps` (required), `warmup_steps`,
      `end_lr_factor`, `weight_decay`, `b1`, `b2`, `eps`, `grad_clip_norm`
      (None or 0 disables clipping), `lr_scales` (per-module learning-rate
      factors, see `parse_lr_scales`). Unknown keys are an error, except
      `grad_accum_steps`, which the train step reads from the same section.
    total_steps: overrides (or supplies) `cfg.total_steps`, e.g. from
      `config.train.num_steps`.

  Returns:
    `(tx, schedule)`: the optax transformation and its learning-rate schedule,
    a function of the number of updates applied so far.
  """
  c = _read(cfg, total_steps=total_steps)
  schedule = make_schedule(cfg, total_steps=total_steps)
  parts = []
  if c["grad_clip_norm"]:
    parts.append(optax.clip_by_global_norm(float(c["grad_clip_norm"])))
  parts.append(optax.adamw(schedule, b1=float(c["b1"]), b2=float(c["b2"]), eps=float(c["eps"]),
                           weight_decay=float(c["weight_decay"]), mask=decay_mask))
  scales = parse_lr_scales(c["lr_scales"])
  if scales:
    parts.append(scale_by_module(scales))
  return optax.chain(*parts), schedule
