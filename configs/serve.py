"""The HTTP reward server (same as `omni-rrm serve`): see omni_rrm_jax/serve/config.py.

  omni-rrm --config=configs/serve.py:tiny --config.model.path=RUN/hf --workdir=runs/serve
"""

from omni_rrm_jax.serve.config import get_config  # noqa: F401
