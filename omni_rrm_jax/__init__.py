"""omni-rrm-jax: multimodal reward models and GRPO in JAX / Flax NNX.

Public API:

    import omni_rrm_jax as orj
    model = orj.from_pretrained(path)             # a Hugging Face model folder
    out = model(input_ids, attention_mask=mask)   # out.logits
    orj.save_pretrained(model, out_dir)           # loadable by transformers

Names are resolved on first use, so importing a plain-Python subpackage
(`omni_rrm_jax.rewards`, `omni_rrm_jax.data`) does not load JAX.
"""

import importlib

_EXPORTS = {
    "from_pretrained": "omni_rrm_jax.models.pretrained",
    "from_config": "omni_rrm_jax.models.factory",
    "save_pretrained": "omni_rrm_jax.models.hf_save",
    "ModelOutput": "omni_rrm_jax.models.decoder",
    "ARCHITECTURES": "omni_rrm_jax.models.architectures",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name):
  if name in _EXPORTS:
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
  raise AttributeError(f"module 'omni_rrm_jax' has no attribute {name!r}")


def __dir__():
  return sorted(set(globals()) | set(_EXPORTS))
