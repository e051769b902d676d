"""The names of the attention implementations a model config may choose.

Kept apart from the models (which hold the implementations) so that the
config checks, which never import JAX, read the same list.

- "reference": float32 logits [B, heads, T, S], masked, softmax, then the
  values; exact parity with transformers (the default).
- "xla": `jax.nn.dot_product_attention(implementation="xla")`.
- "cudnn": `jax.nn.dot_product_attention(implementation="cudnn")`, cuDNN's
  fused flash attention (GPU only, bf16 / fp16 compute).
- "flash": our blockwise Pallas kernel (`models/flash_attention.py`),
  compiled for TPU and run in Pallas' interpret mode elsewhere.
- "blockwise": the reference's arithmetic in XLA ops, one (row, key/value
  head, query block) slice at a time, the backward recomputing each slice's
  probabilities (`models/blockwise_attention.py`): no stored scores, and on
  CPU faster than the reference for rows of a few hundred tokens and more.
- "cpu_fused": the reference's arithmetic in a C++ kernel for CPU, an XLA FFI
  custom call (`models/cpu_attention.py`, `models/csrc/cpu_attention.cc`):
  each tile of query rows' softmax done while its logits are in cache, forward
  and backward, on XLA's CPU threads; built with the system C++ compiler on
  first use (CPU only).
"""

ATTENTION_IMPLEMENTATIONS = ("reference", "xla", "cudnn", "flash", "blockwise", "cpu_fused")
