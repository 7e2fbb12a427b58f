"""Prometheus metrics of `pinsyncd serve`, in a registry of their own: the API's requests by
operation and HTTP status, how long CIDs took to pin (or fail), the requests by account and
status and the pins held in Kubo (read from the state at each scrape), whether the node can
be reached, the build and the process. Labels hold account names from the config,
operations, statuses and outcomes: never a token, a CID or a name."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from pinsyncd.operator_http import process_registry
from pinsyncd.serve.pinner import Finished
from pinsyncd.serve.store import ServeStore

PIN_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 86400, float("inf"))
STATUSES = ("queued", "pinning", "pinned", "failed")


class ServeMetrics:
    def __init__(self, store: ServeStore, accounts: list[str]) -> None:
        self._store = store
        self.accounts = accounts
        self.busy: Callable[[], int] = lambda: 0
        """How many CIDs are being fetched now (the pinner's count, once there is one)."""
        self.registry = r = process_registry()
        self._api = Counter(
            "pinsyncd_serve_api_requests",
            "Pinning Service API requests answered, by operation and HTTP status.",
            ["operation", "code"],
            registry=r,
        )
        self._pins = Histogram(
            "pinsyncd_serve_pin_seconds",
            "Time from starting to fetch a CID to it being pinned, failed or cancelled.",
            ["outcome"],
            buckets=PIN_BUCKETS,
            registry=r,
        )
        self._requests = Gauge(
            "pinsyncd_serve_requests",
            "Pin requests stored, by account and status.",
            ["account", "status"],
            registry=r,
        )
        self._held = Gauge(
            "pinsyncd_serve_held_pins",
            "CIDs pinned in Kubo for requests: ours (pinned by this service), found (pinned "
            "before it was asked), unpin (waiting to be removed).",
            ["state"],
            registry=r,
        )
        self.node_up = Gauge(
            "pinsyncd_serve_node_up",
            "1 when the node could be reached at the last try.",
            registry=r,
        )
        self.in_progress = Gauge(
            "pinsyncd_serve_pins_in_progress", "CIDs being fetched now.", registry=r
        )

    def record_request(self, operation: str, code: int) -> None:
        self._api.labels(operation, str(code)).inc()

    def record_pin(self, finished: Finished) -> None:
        self._pins.labels(finished.outcome).observe(finished.seconds)

    async def render(self) -> tuple[bytes, str]:
        """Read the counts from the state, then the text exposition and its Content-Type."""
        counts = await self._store.counts()
        self._requests.clear()
        for account in {*self.accounts, *(a for a, _ in counts)}:
            for status in STATUSES:
                self._requests.labels(account, status).set(counts.get((account, status), 0))
        self.in_progress.set(self.busy())
        held = await self._store.held_counts()
        for state in ("ours", "found", "unpin"):
            self._held.labels(state).set(held.get(state, 0))
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
