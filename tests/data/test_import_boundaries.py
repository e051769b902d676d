"""`data/` stays plain Python: no JAX, and never an import of `models/`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

_DATA = Path(__file__).resolve().parents[2] / "omni_rrm_jax" / "data"
_MODULES = ("records.py", "bad_records.py", "readers.py", "tokenizer_train.py")
_FORBIDDEN = ("jax", "jaxlib", "flax", "optax", "omni_rrm_jax.models")


@pytest.mark.parametrize("name", _MODULES)
def test_no_jax_or_models_imports(name):
  tree = ast.parse((_DATA / name).read_text(encoding="utf-8"))
  imported = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      imported.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      imported.add(node.module)
  bad = sorted(m for m in imported if any(m == f or m.startswith(f + ".") for f in _FORBIDDEN))
  assert not bad, f"{name} imports {bad}"
