"""The `serve` task: an exported RM or judge behind HTTP, under uvicorn.

uvicorn is the ASGI server most Python model servers run on (a small, well
kept dependency with a pure-Python HTTP/1.1 parser, h11); the app is
`serve/app.py`. The socket is bound before the model loads, so `serve.port=0`
picks a free port; `WORKDIR/serve.json` names the address once the app is
ready, which is what a test or a launcher waits for.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile

import jax

from omni_rrm_jax.config.validate import check as check_settings
from omni_rrm_jax.core.api_key import read_api_key
from omni_rrm_jax.serve.app import ScoreServer
from omni_rrm_jax.serve.scorers import make_scorer
from omni_rrm_jax.sharding.mesh import make_mesh
from omni_rrm_jax.sharding.rules import rules_from_config

log = logging.getLogger(__name__)


def _bind(host: str, port: int) -> socket.socket:
  family = socket.AF_INET6 if ":" in host else socket.AF_INET
  sock = socket.socket(family, socket.SOCK_STREAM)
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  try:
    sock.bind((host, port))
  except OSError as e:
    sock.close()
    raise ValueError(f"serve.host={host!r}, serve.port={port}: cannot bind ({e.strerror})") from None
  return sock


def build_server(config, workdir: str) -> ScoreServer:
  """The app of `config` (model loaded, not yet listening)."""
  if not config.model.path:
    raise ValueError("config.model.path is empty: set --config.model.path=HF_FOLDER")
  if not os.path.isfile(os.path.join(config.model.path, "config.json")):
    raise FileNotFoundError(f"config.model.path={config.model.path!r}: no config.json there "
                            "(an exported Hugging Face folder)")
  if jax.process_count() > 1:
    raise ValueError("omni-rrm serve runs as one process (it shards the model over its "
                     "devices); start one server per host behind a load balancer")
  check_settings(config, process_count=1, device_count=jax.device_count())
  if config.serve.media_root and not os.path.isdir(config.serve.media_root):
    raise FileNotFoundError(f"serve.media_root={config.serve.media_root!r} is not a folder")
  api_key = read_api_key(config.serve.api_key_file)
  mesh = make_mesh(dict(config.mesh))
  rules = rules_from_config(dict(config.rules))
  scorer = make_scorer(config, mesh=mesh, rules=rules)
  staging = tempfile.mkdtemp(prefix="uploads-", dir=workdir)
  return ScoreServer(scorer, config.serve, staging_dir=staging, api_key=api_key,
                     model_name=os.path.basename(os.path.normpath(config.model.path)))


def run(config, workdir: str) -> dict:
  import uvicorn

  os.makedirs(workdir, exist_ok=True)
  sv = config.serve
  sock = _bind(sv.host, sv.port)  # first: a taken port fails before the model loads
  server = build_server(config, workdir)
  host, port = sock.getsockname()[:2]
  url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
  address = os.path.join(workdir, "serve.json")

  class _Server(uvicorn.Server):
    async def startup(self, sockets=None):
      await super().startup(sockets=sockets)
      tmp = address + ".tmp"
      with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"url": url, "kind": server.scorer.kind, "pid": os.getpid()}, f)
      os.replace(tmp, address)
      log.info("serving %s (%s) at %s", config.model.path, server.scorer.kind, url)
      print(f"omni-rrm serve: {server.scorer.kind} at {url}", flush=True)

  uv = _Server(uvicorn.Config(server.app, log_level="warning", access_log=False,
                              timeout_graceful_shutdown=5))
  try:
    uv.run(sockets=[sock])
  finally:
    if os.path.exists(address):
      os.remove(address)
  return {"task": "serve", "url": url, "kind": server.scorer.kind}
