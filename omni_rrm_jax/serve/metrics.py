"""The server's Prometheus metrics (`GET /metrics`), on a registry of its own."""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServerMetrics:
  """Requests by route and status, request latency, batch sizes, model time, and the
  programs compiled so far (`compiled`: a callable, read at each scrape)."""

  def __init__(self, compiled: Callable[[], int]):
    self.registry = CollectorRegistry()
    self.requests = Counter("omni_rrm_requests", "HTTP requests by route and status",
                            ["route", "status"], registry=self.registry)
    self.latency = Histogram("omni_rrm_request_seconds", "request latency by route",
                             ["route"], buckets=_LATENCY_BUCKETS, registry=self.registry)
    self.batch_rows = Histogram("omni_rrm_batch_rows", "rows per model call",
                                buckets=_ROW_BUCKETS, registry=self.registry)
    self.batch_seconds = Histogram("omni_rrm_batch_seconds", "seconds per model call",
                                   buckets=_LATENCY_BUCKETS, registry=self.registry)
    self.rows = Counter("omni_rrm_rows", "rows scored", registry=self.registry)
    Gauge("omni_rrm_compiled_programs", "model programs compiled (one per bucket)",
          registry=self.registry).set_function(compiled)

  def on_batch(self, rows: int, seconds: float) -> None:
    self.batch_rows.observe(rows)
    self.batch_seconds.observe(seconds)
    self.rows.inc(rows)

  def on_request(self, route: str, status: int, seconds: float) -> None:
    self.requests.labels(route, str(status)).inc()
    self.latency.labels(route).observe(seconds)
