"""Load a Hugging Face model folder onto a device mesh and write it back.

Command (CPU, seconds for a tiny model; minutes for 7B on a pod slice):
  omni-rrm --config=configs/export.py --config.model_path=IN_DIR --workdir=OUT_DIR \
      [--config.param_dtype=bfloat16] [--config.mesh.fsdp=8]

Hardware: any; the mesh spans every visible device.
Result: OUT_DIR/hf holds config.json + safetensors (+ tokenizer files) that
transformers loads with the same numbers; a JSON line reports the parameter
count, the largest per-device parameter bytes and the load time.
"""

import ml_collections

from omni_rrm_jax.config.tasks import export_config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  del arg
  return export_config()
