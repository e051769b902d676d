"""The main job (same as `omni-rrm demo`): see omni_rrm_jax/demo/config.py.

  omni-rrm --config=configs/demo.py --workdir=runs/demo
"""

from omni_rrm_jax.demo.config import get_config  # noqa: F401
