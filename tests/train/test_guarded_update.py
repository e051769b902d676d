"""The guarded update in place: the same numbers as an unguarded one, no copies."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax

from omni_rrm_jax.train.guarded_update import guarded_update
from omni_rrm_jax.train.state import TrainState
from tests.train.fixtures import tiny_optimizer


def _state(tx):
  rng = np.random.default_rng(0)
  params = {f"w{i}": jnp.asarray(rng.standard_normal((16, 32), np.float32)) for i in range(3)}
  params["bias"] = jnp.asarray(rng.standard_normal((32,), np.float32))
  zero = lambda: jnp.zeros((), jnp.int32)  # noqa: E731  (one buffer each: all are donated)
  return TrainState(step=zero(), params=params, opt_state=tx.init(params),
                    rng=jax.random.key(0), nonfinite_streak=zero(), nonfinite_total=zero())


def test_applied_update_equals_the_optimizers_and_copies_nothing():
  tx, _ = tiny_optimizer()
  state = _state(tx)
  grads = jax.tree.map(lambda p: 0.1 * p, state.params)

  @jax.jit
  def unguarded(params, opt_state, grads):
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  want = jax.device_get(unguarded(state.params, state.opt_state, grads))

  step = jax.jit(lambda s, g: guarded_update(s, g, jnp.float32(1.0), tx)[0], donate_argnums=0)
  entry = step.lower(state, grads).compile().as_text().split("\nENTRY")[1]
  # Donated parameters and moments are updated where they lie: no defensive copies.
  copied = re.findall(r"\bcopy\(%?([^)\s,]+)\)", entry)
  assert not [c for c in copied if "state" in c], copied
  new = step(state, grads)
  for a, b in zip(jax.tree.leaves((new.params, new.opt_state)), jax.tree.leaves(want)):
    np.testing.assert_array_equal(a, b)
