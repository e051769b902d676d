"""Imports point downwards only (docs/design.md §1): a test that fails on an upward arrow."""

import ast
import pathlib

import pytest

PKG = pathlib.Path(__file__).resolve().parents[1] / "omni_rrm_jax"

# package -> the project packages it may import (besides itself).
_ASSEMBLY = {"core", "sharding", "models", "data", "rewards", "config", "synthetic"}
ALLOWED = {
    "core": set(),
    "sharding": {"core"},
    "config": {"core", "sharding"},
    "models": {"core", "sharding"},
    "rewards": {"core"},
    "data": {"core", "rewards"},
    "synthetic": {"core", "rewards", "data"},
    "assembly": _ASSEMBLY - {"assembly"},
    "sampling": {"core", "sharding", "models"},
    "train": {"sampling", "assembly", *_ASSEMBLY},
    "rl": {"sampling", "assembly", "train", *_ASSEMBLY},
    "eval": {"sampling", "assembly", "train", "rl", *_ASSEMBLY},  # rl: the model reward (BoN)
    "export": {"core", "sharding", "models"},
    # preference data built from live endpoints: records, templates, judgments
    "construct": {"core", "data", "rewards"},
    # HTTP serving with the in-process scorers: GRPO's model reward, the judge evaluation
    "serve": {"sampling", "assembly", "rl", "eval", *_ASSEMBLY},
    # the main job joins every stage
    "demo": {"sampling", "assembly", "train", "rl", "eval", "export", *_ASSEMBLY},
}
# Plain-Python packages that must not pull in JAX or torch.
NO_JAX = {"rewards", "data", "synthetic", "config", "construct"}
NO_JAX_EXCEPTIONS: set = set()


def _imports(path: pathlib.Path):
  tree = ast.parse(path.read_text(encoding="utf-8"))
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield alias.name
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      yield node.module


def _files():
  return sorted(p for p in PKG.rglob("*.py"))


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(PKG)))
def test_imports_point_downwards(path):
  rel = path.relative_to(PKG)
  if len(rel.parts) == 1:  # __init__.py and main.py sit on top and may import anything
    return
  own = rel.parts[0]
  for name in _imports(path):
    parts = name.split(".")
    if parts[0] == "omni_rrm_jax" and len(parts) > 1:
      target = parts[1]
      assert target == own or target in ALLOWED[own], f"{rel} imports {name}: upward arrow"
    if own in NO_JAX and str(rel) not in NO_JAX_EXCEPTIONS:
      assert parts[0] not in ("jax", "flax", "torch", "optax"), f"{rel} imports {name}"


def test_every_package_is_known():
  packages = {p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
  assert packages <= set(ALLOWED), packages - set(ALLOWED)
