"""Fused softmax attention for CPU: a C++ kernel called as an XLA FFI custom call.

In XLA ops (the reference, `models/blockwise_attention.py`) attention on CPU
is a chain of separate ops over the logits, each streaming them through
memory; at short head dims (16 in the tiny RM benchmark) those passes, not
the products, were most of the step. The kernel
(`csrc/cpu_attention.cc`) does the whole softmax of a tile of query rows
while its logits are in cache, forward and backward (the backward recomputing
the probabilities from the row maxima and sums the forward kept), so no
[B, H, T, S] tensor exists; it runs on XLA's intra-op thread pool.

The arithmetic is the reference's (float32 logits, masked keys left out of
the softmax, a query row without any allowed key getting the mean of the
values), computed in float32 whatever the inputs' dtype: other dtypes are
converted on the way in and the output and gradients back.

The kernel is built from its source with the system C++ compiler on first use
(`-march=native`: the machine's own vector instructions) into a cache
directory, `~/.cache/omni_rrm_jax/` or `$OMNI_RRM_KERNEL_CACHE`, under a name
that hashes the source, jaxlib's version, the compiler and its flags and the
CPU, so a changed source or another machine builds anew; concurrent builds
each write a temporary file and rename it into place.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile
import threading

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

SOURCE = pathlib.Path(__file__).resolve().parent / "csrc" / "cpu_attention.cc"
CACHE_ENV = "OMNI_RRM_KERNEL_CACHE"
# -ffp-contract=fast: fused multiply-adds (ISO modes of g++ leave them off).
FLAGS = ("-O3", "-march=native", "-ffp-contract=fast", "-shared", "-fPIC", "-std=c++17")
FORWARD_TARGET = "omni_rrm_cpu_attention_fwd"
BACKWARD_TARGET = "omni_rrm_cpu_attention_bwd"
MAX_HEAD_DIM = 128
_OTHERS = "choose another model.attention (e.g. 'blockwise' or 'reference')"

_lock = threading.Lock()
_library = None  # the loaded kernel, once registered


def cache_dir() -> pathlib.Path:
  """Where built kernels are kept."""
  root = os.environ.get(CACHE_ENV)
  return pathlib.Path(root) if root else pathlib.Path.home() / ".cache" / "omni_rrm_jax"


def _compiler() -> str:
  compiler = os.environ.get("CXX") or "g++"
  path = shutil.which(compiler)
  if path is None:
    raise RuntimeError(f"model.attention='cpu_fused' builds its kernel with a C++ compiler, and "
                       f"{compiler!r} was not found (set CXX to one); or {_OTHERS}")
  return path


def _cpu_id() -> str:
  """The CPU's model and feature flags (what -march=native compiles for)."""
  try:
    text = pathlib.Path("/proc/cpuinfo").read_text()
  except OSError:
    return platform.processor() or platform.machine()
  lines = [line for line in text.splitlines()
           if line.startswith(("model name", "flags", "Features"))]
  return "\n".join(dict.fromkeys(lines))  # the first core's lines once


def library_path(compiler: str) -> pathlib.Path:
  """The cached kernel's path for this source, jaxlib, compiler, flags and CPU."""
  version = subprocess.run([compiler, "--version"], capture_output=True, text=True,
                           check=False).stdout.splitlines()[:1]
  key = hashlib.sha256()
  for part in (SOURCE.read_bytes(), jaxlib.__version__, compiler, *version, *FLAGS, _cpu_id()):
    key.update(part if isinstance(part, bytes) else part.encode())
    key.update(b"\0")
  return cache_dir() / f"cpu_attention-{key.hexdigest()[:20]}.so"


def build(compiler: str, target: pathlib.Path) -> None:
  """Compiles the kernel to `target`: into a temporary file beside it, then
  renamed into place (atomic; a concurrent build of the same key writes the
  same file)."""
  try:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
  except OSError as error:
    raise RuntimeError(f"building the cpu_fused attention kernel failed (cannot write to "
                       f"{target.parent}: {error.strerror}; set {CACHE_ENV} to a writable "
                       f"folder); or {_OTHERS}") from error
  try:
    command = [compiler, *FLAGS, "-I", jax.ffi.include_dir(), str(SOURCE), "-o", tmp]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
      lines = done.stderr.splitlines()
      errors = [line for line in lines if "error" in line] or lines
      first = errors[0].strip() if errors else "no output"
      raise RuntimeError(f"building the cpu_fused attention kernel failed ({compiler} exited "
                         f"with {done.returncode}: {first}); {_OTHERS}")
    os.replace(tmp, target)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def load() -> ctypes.CDLL:
  """Builds (if not cached), loads and registers the kernel, once per process."""
  global _library
  with _lock:
    if _library is None:
      compiler = _compiler()
      path = library_path(compiler)
      if not path.exists():
        build(compiler, path)
      try:
        library = ctypes.CDLL(str(path))
      except OSError as error:
        raise RuntimeError(f"loading the cpu_fused attention kernel {path} failed ({error}); "
                           f"{_OTHERS}") from error
      for name, symbol in ((FORWARD_TARGET, library.OmniRrmCpuAttentionForward),
                           (BACKWARD_TARGET, library.OmniRrmCpuAttentionBackward)):
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(symbol), platform="cpu")
      _library = library
  return _library


def _check(q_bthd, k_bskd, v_bskd, mask_bts) -> None:
  backend = jax.default_backend()
  if backend != "cpu":
    raise RuntimeError(f"model.attention='cpu_fused' is a CPU kernel and the default backend "
                       f"is {backend!r}; {_OTHERS}")
  b, t, h, d = q_bthd.shape
  _, s, k, _ = k_bskd.shape
  if k_bskd.shape != (b, s, k, d) or v_bskd.shape != k_bskd.shape or h % k:
    raise ValueError(f"cpu_fused attention: queries {q_bthd.shape}, keys {k_bskd.shape} and "
                     f"values {v_bskd.shape} must be [B, T, H, D] and [B, S, K, D], K dividing H")
  if mask_bts.ndim != 3 or mask_bts.shape[0] not in (1, b) or mask_bts.shape[1:] != (t, s):
    raise ValueError(f"cpu_fused attention: the mask {mask_bts.shape} must be [B or 1, T, S]")
  if d > MAX_HEAD_DIM:
    raise ValueError(f"cpu_fused attention supports head dims up to {MAX_HEAD_DIM}, not {d}; "
                     f"{_OTHERS}")


def _f32(x):
  return x.astype(jnp.float32)


def _forward(q_bthd, k_bskd, v_bskd, mask_bts, scale):
  """(output float32 [B, T, H, D], stats [B, T, H, 2]: row maximum, sum)."""
  load()
  shapes = (jax.ShapeDtypeStruct(q_bthd.shape, jnp.float32),
            jax.ShapeDtypeStruct(q_bthd.shape[:3] + (2,), jnp.float32))
  call = jax.ffi.ffi_call(FORWARD_TARGET, shapes, vmap_method="sequential")
  return call(_f32(q_bthd), _f32(k_bskd), _f32(v_bskd), mask_bts.astype(bool),
              scale=np.float32(scale))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _attention(q_bthd, k_bskd, v_bskd, mask_bts, scale):
  return _forward(q_bthd, k_bskd, v_bskd, mask_bts, scale)[0].astype(v_bskd.dtype)


def _attention_fwd(q_bthd, k_bskd, v_bskd, mask_bts, scale):
  out_bthd, stats = _forward(q_bthd, k_bskd, v_bskd, mask_bts, scale)
  # The float32 output is kept (the backward's dout . out per row).
  return out_bthd.astype(v_bskd.dtype), (q_bthd, k_bskd, v_bskd, mask_bts, out_bthd, stats)


def _attention_bwd(scale, residuals, dout_bthd):
  q_bthd, k_bskd, v_bskd, mask_bts, out_bthd, stats = residuals
  shapes = (jax.ShapeDtypeStruct(q_bthd.shape, jnp.float32),
            jax.ShapeDtypeStruct(k_bskd.shape, jnp.float32),
            jax.ShapeDtypeStruct(v_bskd.shape, jnp.float32))
  call = jax.ffi.ffi_call(BACKWARD_TARGET, shapes, vmap_method="sequential")
  dq, dk, dv = call(_f32(q_bthd), _f32(k_bskd), _f32(v_bskd), mask_bts.astype(bool), out_bthd,
                    stats, _f32(dout_bthd), scale=np.float32(scale))
  return dq.astype(q_bthd.dtype), dk.astype(k_bskd.dtype), dv.astype(v_bskd.dtype), None


_attention.defvjp(_attention_fwd, _attention_bwd)


def cpu_fused_attention(q_bthd: jax.Array, k_bskd: jax.Array, v_bskd: jax.Array,
                        mask_bts: jax.Array, scale: float) -> jax.Array:
  """Softmax attention [B, T, H, D] over keys / values [B, S, K, D] (H a
  multiple of K, head dim at most 128), mask bool [B or 1, T, S]; see the
  module docstring. Output in the values' dtype."""
  _check(q_bthd, k_bskd, v_bskd, mask_bts)
  return _attention(q_bthd, k_bskd, v_bskd, mask_bts, float(scale))
