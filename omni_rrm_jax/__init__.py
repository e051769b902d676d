"""omni-rrm-jax: multimodal reward models and GRPO in JAX / Flax NNX.

Public API:

    import omni_rrm_jax as orj
    model = orj.from_pretrained(path)             # a Hugging Face model folder
    out = model(input_ids, attention_mask=mask)   # out.logits
    orj.save_pretrained(model, out_dir)           # loadable by transformers
"""

from omni_rrm_jax.export.hf_export import save_pretrained
from omni_rrm_jax.models.architectures import ARCHITECTURES
from omni_rrm_jax.models.decoder import ModelOutput
from omni_rrm_jax.models.factory import from_config
from omni_rrm_jax.models.pretrained import from_pretrained

__all__ = ["from_pretrained", "from_config", "save_pretrained", "ModelOutput", "ARCHITECTURES"]
__version__ = "0.1.0"
