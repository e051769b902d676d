"""Where logs go: library INFO lines to `WORKDIR/log.txt`, the console keeps warnings.

A run's console is for the person watching it: stage headers, progress bars,
results and problems. Everything the libraries log at INFO (checkpoint option
dumps, compilation notes, pipeline counts) goes to the log file of the workdir,
one line each, tagged with the process index, from every process.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile

LOG_FILE = "log.txt"
_FORMAT = "%(asctime)s p{process} %(levelname).1s %(name)s: %(message)s"


def log_path(workdir: str) -> str:
  """`WORKDIR/log.txt`; for a remote workdir (gs://...), a local file named after it."""
  if "://" not in workdir:
    return os.path.join(os.path.abspath(workdir), LOG_FILE)
  name = re.sub(r"[^A-Za-z0-9._-]+", "_", workdir).strip("_")
  return os.path.join(tempfile.gettempdir(), "omni-rrm-logs", name, LOG_FILE)


def configure_logging(workdir: str, *, verbose: bool = False, process_index: int = 0) -> str:
  """Sends INFO and above to the workdir's log file; the console shows WARNING
  and above (INFO too with `verbose`). Returns the log file's path.

  The console handler is the one already on the root logger (absl's, under
  `app.run`), or a new stderr handler.
  """
  path = log_path(workdir)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  root = logging.getLogger()
  root.setLevel(logging.INFO)
  # absl's logger follows --verbosity (DEBUG at 1); the file takes INFO and up.
  logging.getLogger("absl").setLevel(logging.INFO)
  console = [h for h in root.handlers if not isinstance(h, logging.FileHandler)]
  if not console:
    console = [logging.StreamHandler(sys.stderr)]
    root.addHandler(console[0])
  for handler in console:
    handler.setLevel(logging.INFO if verbose else logging.WARNING)
  for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
    if getattr(handler, "_omni_rrm", False):
      root.removeHandler(handler)
      handler.close()
  file_handler = logging.FileHandler(path, mode="a", encoding="utf-8")
  file_handler._omni_rrm = True  # replaced, not doubled, when configured again
  file_handler.setLevel(logging.INFO)
  file_handler.setFormatter(logging.Formatter(_FORMAT.format(process=process_index)))
  root.addHandler(file_handler)
  return path
