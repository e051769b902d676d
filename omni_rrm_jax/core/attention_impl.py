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
"""

ATTENTION_IMPLEMENTATIONS = ("reference", "xla", "cudnn", "flash", "blockwise")
