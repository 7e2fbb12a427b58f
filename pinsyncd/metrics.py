"""Prometheus metrics for one daemon: request, retry and 429 counters, cycle durations, the
node's state, the build, the process (CPU, memory, file descriptors, Python's GC), and the
gauges read from the state file at scrape time (`state_metrics`).

Everything lives in the `Metrics` object's own `CollectorRegistry`, never the global one, so
several daemons (or tests) in one process never share counters. Labels only ever hold service
names from the config, operation names, outcomes and pin statuses: never a token or a URL.
No `_created` series: prometheus_client's switch for them is process-wide, and pinsyncd
turns it off (Prometheus ignores them in the text format; they only double the series).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from pinsyncd.model import DEFAULT_MAX_ATTEMPTS
from pinsyncd.operator_http import process_registry
from pinsyncd.psa import errors
from pinsyncd.state_metrics import DrillCollector, PinsCollector

CYCLE_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, float("inf"))

_OUTCOMES: dict[type[BaseException], str] = {
    errors.Unauthorized: "unauthorized",
    errors.NotFound: "not_found",
    errors.InsufficientFunds: "insufficient_funds",
    errors.BadRequest: "bad_request",
    errors.ClientError: "client_error",
    errors.RateLimited: "rate_limited",
    errors.ServerError: "server_error",
    errors.NetworkError: "network_error",
    errors.MalformedResponse: "malformed",
    errors.NotSent: "not_sent",
    errors.RedirectRefused: "redirect_refused",
    errors.PinningServiceError: "error",
    asyncio.CancelledError: "cancelled",
}


def outcome_of(exc: BaseException | None) -> str:
    """The `outcome` label for a request that raised `exc` ("ok" when it did not): from the
    error's class only, never its message. Unknown exceptions are "internal_error"."""
    if exc is None:
        return "ok"
    for cls in type(exc).__mro__:
        if cls in _OUTCOMES:
            return _OUTCOMES[cls]
    return "internal_error"


class Metrics:
    """The daemon's metrics. Recording is cheap and thread-safe; `render()` reads the state
    file (through `state_metrics`), so call it off the event loop."""

    def __init__(
        self,
        state_path: Path,
        services: Callable[[], Sequence[str]],
        *,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        replicas: int | None = None,
    ) -> None:
        self.registry = r = process_registry()
        self._requests = Counter(
            "pinsyncd_requests",
            "Requests to pinning services, by operation and outcome.",
            ["service", "operation", "outcome"],
            registry=r,
        )
        self._retries = Counter(
            "pinsyncd_retries", "Requests retried after a failure.", ["service"], registry=r
        )
        self._rate_limited = Counter(
            "pinsyncd_rate_limited", "HTTP 429 answers from a service.", ["service"], registry=r
        )
        self._cycle = Histogram(
            "pinsyncd_cycle_seconds",
            "Duration of one service's sync cycle.",
            ["service"],
            buckets=CYCLE_BUCKETS,
            registry=r,
        )
        self._node_online = Gauge(
            "pinsyncd_node_online", "1 when the last listing of the local node worked.", registry=r
        )
        self._local_pins = Gauge(
            "pinsyncd_local_pins", "Pins on the local node at the last listing.", registry=r
        )
        self._last_cycle = Gauge(
            "pinsyncd_last_cycle_timestamp_seconds",
            "Unix time the local node was last listed.",
            registry=r,
        )
        self.pins = PinsCollector(
            state_path, services, max_attempts=max_attempts, replicas=replicas
        )
        r.register(self.pins)
        r.register(DrillCollector(state_path, services))

    def record_request(self, service: str, operation: str, outcome: str) -> None:
        self._requests.labels(service, operation, outcome).inc()

    def record_retry(self, service: str) -> None:
        self._retries.labels(service).inc()

    def record_rate_limited(self, service: str) -> None:
        self._rate_limited.labels(service).inc()

    def observe_cycle(self, service: str, seconds: float) -> None:
        self._cycle.labels(service).observe(seconds)

    def set_node(self, online: bool, local_pins: int) -> None:
        self._node_online.set(1 if online else 0)
        self._local_pins.set(local_pins)

    def set_last_cycle(self, timestamp: float) -> None:
        self._last_cycle.set(timestamp)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition and its Content-Type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
