"""`remat=True` rematerialises every decoder layer, and the compile check sees it.

XLA:CPU drops the optimization barriers `jax.checkpoint` leaves around a
rematerialised block (its "cse_barrier_expander" pass) before its CSE, which
then merges the recomputation back into the forward pass: compiled for CPU
with default options, remat leaves the temporaries unchanged. The AOT memory
check (`benchmarks/compile_check.py`) compiles with that pass disabled (XLA:GPU
expands the barriers only after scheduling); these tests pin both halves.
"""

from __future__ import annotations

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
from flax import nnx

from omni_rrm_jax.models.architectures import get_architecture
from omni_rrm_jax.models.factory import hf_config_for

NAME = "Qwen2ForSequenceClassification"
LAYERS = 4
COMPILE_CHECK = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "compile_check.py"


def _compile_check_options() -> dict:
  spec = importlib.util.spec_from_file_location("benchmarks_compile_check", COMPILE_CHECK)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.COMPILER_OPTIONS


def _loss_grad(remat: bool):
  """(grad of a reward-sum loss w.r.t. the parameters, abstract params, abstract ids)."""
  arch = get_architecture(NAME)
  hf = hf_config_for(NAME, {
      "vocab_size": 128, "hidden_size": 64, "intermediate_size": 256,
      "num_hidden_layers": LAYERS, "num_attention_heads": 4, "num_key_value_heads": 2,
      "max_position_embeddings": 512, "tie_word_embeddings": False, "num_labels": 1,
      "pad_token_id": 0})
  cfg = arch.make_config(hf, remat=remat)
  model = nnx.eval_shape(lambda: arch.module(cfg, rngs=nnx.Rngs(0)))
  graphdef, params = nnx.split(model, nnx.Param)

  def loss(params, ids_bt):
    return jnp.sum(nnx.merge(graphdef, params)(ids_bt).logits)

  ids = jax.ShapeDtypeStruct((4, 256), jnp.int32)
  return jax.grad(loss), params, ids


def _count_checkpoints(jaxpr) -> int:
  """`jax.checkpoint` equations in a jaxpr and the jaxprs nested in it."""
  count = 0
  for eqn in jaxpr.eqns:
    # `jax.checkpoint`'s primitive: "remat2" in current JAX, "checkpoint" in older.
    if eqn.primitive.name in ("remat2", "checkpoint"):
      count += 1
      continue
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        sub = getattr(sub, "jaxpr", sub)  # ClosedJaxpr -> Jaxpr
        if hasattr(sub, "eqns"):
          count += _count_checkpoints(sub)
  return count


def test_remat_wraps_every_decoder_layer_and_only_when_asked():
  for remat, expected in ((True, LAYERS), (False, 0)):
    grad_fn, params, ids = _loss_grad(remat)
    jaxpr = jax.make_jaxpr(grad_fn)(params, ids).jaxpr
    assert _count_checkpoints(jaxpr) == expected, remat


def test_remat_cuts_compiled_temporaries_under_the_compile_check_options():
  options = _compile_check_options()
  temps = {}
  for remat in (True, False):
    grad_fn, params, ids = _loss_grad(remat)
    lowered = jax.jit(grad_fn).lower(params, ids)
    assert lowered.as_text().count("optimization_barrier") == (LAYERS if remat else 0)
    temps[remat] = lowered.compile(compiler_options=options).memory_analysis().temp_size_in_bytes
  # Without remat every layer keeps its attention probabilities (4 MiB in f32
  # here) and MLP activations for the backward pass; with it, one layer's.
  assert temps[True] < 0.5 * temps[False], temps
