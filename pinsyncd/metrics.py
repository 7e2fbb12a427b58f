"""Prometheus metrics for one daemon: request, retry and 429 counters, cycle durations, the
node's state, and (read from the state file at scrape time) pins by service and status.

Everything lives in the `Metrics` object's own `CollectorRegistry`, never the global one, so
several daemons (or tests) in one process never share counters. Labels only ever hold service
names from the config, operation names, outcomes and pin statuses: never a token or a URL.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pinsyncd.model import DEFAULT_MAX_ATTEMPTS
from pinsyncd.psa import errors
from pinsyncd.store import StateError
from pinsyncd.store.drill_record import read_drill
from pinsyncd.store.readonly import read_status

log = structlog.get_logger("pinsyncd.metrics")

DRILL_RESULTS = ("fetched", "not_fetched", "not_pinned", "error", "inconclusive")
"""The `result` label values of `pinsyncd_drill_cids` (see `pinsyncd.drill.report`)."""

PIN_STATUSES = ("pinned", "pinning", "queued", "failed", "unsent", "sending", "failed_for_good")
"""The `status` label values of `pinsyncd_pins` (the counts `pinsyncd status --json` shows)."""

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


class PinsCollector(Collector):
    """`pinsyncd_pins{service,status}` and `pinsyncd_service_paused{service}`, read from the
    state file at every scrape (a WAL reader: it never blocks the daemon's writes). The
    service names come from `services()`, so a reloaded config is picked up at once."""

    def __init__(
        self,
        state_path: Path,
        services: Callable[[], Sequence[str]],
        *,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        replicas: int | None = None,
    ) -> None:
        self.state_path = state_path
        self.services = services
        # Both may be updated when the config is reloaded: the counts are then those of
        # `pinsyncd status` and `/status` (`unsent` with `sync.replicas` below N included).
        self.max_attempts = max_attempts
        self.replicas = replicas

    def collect(self) -> Iterator[Metric]:
        names = list(self.services())
        try:
            status = read_status(
                self.state_path, names, max_attempts=self.max_attempts, replicas=self.replicas
            )
        except (StateError, sqlite3.Error) as exc:
            log.warning("cannot read the state file for metrics", error=str(exc))
            return
        pins = GaugeMetricFamily(
            "pinsyncd_pins", "Pins by service and status.", labels=["service", "status"]
        )
        paused = GaugeMetricFamily(
            "pinsyncd_service_paused",
            "1 when the service is paused until the user acts (refused token, no funds).",
            labels=["service"],
        )
        for name, counts in status["services"].items():
            for state in PIN_STATUSES:
                pins.add_metric([name, state], counts[state])
            paused.add_metric([name], 1 if counts["paused"] else 0)
        yield pins
        yield paused


class DrillCollector(Collector):
    """The last restore drill of each service (`pinsyncd check --retrieval`), read from the
    record beside the state file at every scrape: `pinsyncd_drill_last_timestamp_seconds
    {service}` and `pinsyncd_drill_cids{service,result}`. Nothing for a service never drilled."""

    def __init__(self, state_path: Path, services: Callable[[], Sequence[str]]) -> None:
        self.state_path = state_path
        self.services = services

    def collect(self) -> Iterator[Metric]:
        drill = read_drill(self.state_path, list(self.services()))
        when = GaugeMetricFamily(
            "pinsyncd_drill_last_timestamp_seconds",
            "Unix time of the service's last restore drill (pinsyncd check --retrieval).",
            labels=["service"],
        )
        cids = GaugeMetricFamily(
            "pinsyncd_drill_cids",
            "CIDs of the service's last restore drill, by result (not_fetched: the service "
            "says it is pinned and could not serve it).",
            labels=["service", "result"],
        )
        for name, entry in (drill or {}).get("services", {}).items():
            when.add_metric([name], entry["timestamp"])
            for result in DRILL_RESULTS:
                count = entry.get(result, 0)
                cids.add_metric([name, result], count if type(count) is int else 0)
        yield when
        yield cids


class Metrics:
    """The daemon's metrics. Recording is cheap and thread-safe; `render()` reads the state
    file (through `PinsCollector`), so call it off the event loop."""

    def __init__(
        self,
        state_path: Path,
        services: Callable[[], Sequence[str]],
        *,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        replicas: int | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
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
