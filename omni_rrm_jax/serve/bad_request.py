"""The one error a request handler turns into a 4xx with a one-line reason."""

from __future__ import annotations


class BadRequest(Exception):
  """A client error: `status` (4xx) and a one-line `reason` naming what and where."""

  def __init__(self, reason: str, status: int = 400):
    super().__init__(reason)
    self.reason = " ".join(str(reason).split())[:500]  # one line, bounded
    self.status = status
