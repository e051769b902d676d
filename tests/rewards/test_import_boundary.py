"""`omni_rrm_jax.rewards` is plain Python: importing and running it never loads JAX."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

_REPO = Path(__file__).resolve().parents[2]
_HEAVY = ("jax", "jaxlib", "flax", "optax", "orbax", "torch", "tensorflow")

# Runs every registered reward once (so the lazily imported metric packages load
# too), then prints the heavy top-level modules present.
_PROBE = """
import json, sys
import omni_rrm_jax.rewards as rewards
columns = {"label": ["A"], "reference": ["B. the cat"], "teacher_scores": [None]}
for name in rewards.REWARDS.names():
  rewards.REWARDS.get(name)(["p"], ["<think>x</think><answer>the cat</answer>"], **columns)
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(%r))
print(json.dumps(heavy))
"""

# Stands in for the top-level package so only `rewards/` and what it imports load.
_ISOLATE = """
import sys, types
package = types.ModuleType("omni_rrm_jax")
package.__path__ = [%r]
sys.modules["omni_rrm_jax"] = package
"""


def _heavy_modules_loaded(prelude: str = "") -> list[str]:
  code = prelude + _PROBE % (_HEAVY,)
  out = subprocess.run([sys.executable, "-c", code], cwd=_REPO, capture_output=True, text=True,
                       timeout=120, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_rewards_package_imports_no_jax():
  assert _heavy_modules_loaded(_ISOLATE % (str(_REPO / "omni_rrm_jax"),)) == []


def test_import_through_the_top_level_package_loads_no_jax():
  # The top-level package resolves its JAX-backed API lazily; this guards that too.
  assert _heavy_modules_loaded() == []
