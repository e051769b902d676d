"""The optimizer update alone: the fused AdamW against optax's chain of the same update.

Both sides apply one update (global-norm clipping, AdamW with the decay mask, the
learning-rate schedule; `train/optimizer.py`) to the parameters of one of
`rm_train_step.py`'s sizes, jitted with the parameters and moments donated, as in the
train step: ours is `make_optimizer` (`fused_adamw`), theirs `optax_chain`. The
gradients are large enough that the clip applies. Rounds alternate between the two;
each side's seconds are the median over `--rounds`, and `ratio` is the chain's time
over ours. Also printed: the number of XLA fusions of each compiled update and the
largest difference of the parameters after `--check_steps` updates on each side
(float rounding of the clip: `g · (max / norm)` against `(g / norm) · max`). Prints
one JSON line.

    python benchmarks/optimizer_update.py --size=100m   # ~1 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import time

import numpy as np

try:  # `python benchmarks/optimizer_update.py` puts benchmarks/ on the path
  import rm_train_step
except ImportError:  # imported as `benchmarks.optimizer_update`
  from benchmarks import rm_train_step


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--size", default="100m", choices=sorted(rm_train_step.SIZES))
  parser.add_argument("--rounds", type=int, default=9)
  parser.add_argument("--check_steps", type=int, default=3)
  args = parser.parse_args()

  import jax
  import jax.numpy as jnp
  import optax
  from flax import nnx

  from omni_rrm_jax.train.optimizer import make_optimizer, optax_chain

  cfg = dict(learning_rate=1e-5, warmup_steps=0, weight_decay=0.01, grad_clip_norm=1.0,
             total_steps=10**6)
  model = rm_train_step._our_model(rm_train_step.SIZES[args.size], 256, False)
  params = nnx.state(model, nnx.Param)
  del model
  # Gradients with a global norm far above the clip's limit of 1.
  grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-2), params)
  sides = {"ours": make_optimizer(cfg)[0], "optax_chain": optax_chain(cfg)}

  def compiled(tx):
    def update(params, opt_state, grads):
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state
    return jax.jit(update, donate_argnums=(0, 1))

  runs, fusions, after = {}, {}, {}
  for name, tx in sides.items():
    update = compiled(tx)
    state = [jax.tree.map(jnp.copy, params), tx.init(params)]
    hlo = update.lower(*state, grads).compile().as_text()
    fusions[name] = len(re.findall(r"^\s*\S+ = \S+ fusion\(", hlo, re.M))
    for _ in range(args.check_steps):
      state[:] = update(*state, grads)
    after[name] = jax.device_get(state[0])

    def run(update=update, state=state) -> float:
      start = time.perf_counter()
      state[:] = jax.block_until_ready(update(*state, grads))
      return time.perf_counter() - start

    runs[name] = run
  times = {name: [] for name in runs}
  for _ in range(args.rounds):
    for name, run in runs.items():
      time.sleep(0.2)
      times[name].append(run())
  seconds = {name: statistics.median(t) for name, t in times.items()}
  difference = max(float(np.max(np.abs(a - b))) for a, b in
                   zip(jax.tree.leaves(after["ours"]), jax.tree.leaves(after["optax_chain"])))
  print(json.dumps({
      "benchmark": "optimizer_update", "size": args.size,
      "params": int(sum(x.size for x in jax.tree.leaves(params))),
      "leaves": len(jax.tree.leaves(params)),
      "ours_s": round(seconds["ours"], 4), "optax_chain_s": round(seconds["optax_chain"], 4),
      "ratio": round(seconds["optax_chain"] / seconds["ours"], 3),
      "fusions": fusions, "max_abs_param_difference": difference,
      "check_steps": args.check_steps, "rounds": args.rounds,
      "ours_s_per_round": [round(t, 4) for t in times["ours"]],
      "optax_chain_s_per_round": [round(t, 4) for t in times["optax_chain"]],
      "cpu_count": os.cpu_count(), "load_avg": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
  main()
