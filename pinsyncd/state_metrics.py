"""The gauges read from the state file at every scrape of `/metrics`: pins by service and
status, pins failed for good, what holds each service back and its last success, CIDs below
`sync.replicas`, and the last restore drill of each service.

A WAL reader: a scrape never blocks the daemon's writes. The service names come from a
callable, so a reloaded config is picked up at once. Everything is read through
`store.readonly` (the counts are those `pinsyncd status` shows) and judged by the core
(`outcomes.hold_of`); labels hold service names, statuses, pin kinds and drill results only.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import structlog
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pinsyncd.model import DEFAULT_MAX_ATTEMPTS, ServiceState
from pinsyncd.outcomes import Hold, hold_of
from pinsyncd.store import StateError
from pinsyncd.store.drill_record import read_drill
from pinsyncd.store.readonly import read_service_states, read_status

log = structlog.get_logger("pinsyncd.metrics")

PIN_STATUSES = ("pinned", "pinning", "queued", "failed", "sending", "unsent")
"""The `status` label values of `pinsyncd_pins`: each pin of a service is in exactly one,
so their sum is the number of pins the service has or is meant to get."""

DRILL_RESULTS = ("fetched", "not_fetched", "not_pinned", "error", "inconclusive")
"""The `result` label values of `pinsyncd_drill_cids` (see `pinsyncd.drill.report`)."""

_HOLD_GAUGES = (
    (
        Hold.PAUSED,
        "pinsyncd_service_paused",
        "1 while the service is paused until the user acts (token refused, no funds).",
    ),
    (
        Hold.BACKOFF,
        "pinsyncd_service_backoff",
        "1 while the service backs off after failed cycles (5xx, network, bad answers).",
    ),
    (
        Hold.RATE_LIMITED,
        "pinsyncd_service_rate_limited",
        "1 while nothing is sent to the service until its Retry-After has passed.",
    ),
)


def _gauge(name: str, documentation: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=list(labels))


class PinsCollector(Collector):
    """Pins, services and replication, from `read_status` and `read_service_states`."""

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
            states = read_service_states(self.state_path, names)
        except (StateError, sqlite3.Error) as exc:
            log.warning("cannot read the state file for metrics", error=str(exc))
            return
        yield from _pins(status["services"])
        yield from _services(states)
        yield from _replication(status["replication"])


def _pins(services: dict[str, dict[str, Any]]) -> Iterator[Metric]:
    pins = _gauge(
        "pinsyncd_pins",
        "Pins by service and status, each in one status (sending: added, no answer yet; "
        "unsent: meant for the service, no request on it yet).",
        ["service", "status"],
    )
    for_good = _gauge(
        "pinsyncd_pins_failed_for_good",
        "Pins that retry.max_attempts tries did not get pinned on the service (counted in "
        "pinsyncd_pins as failed, or as unsent when the add never got through).",
        ["service"],
    )
    for name, counts in services.items():
        for status in PIN_STATUSES:
            pins.add_metric([name, status], counts[status])
        for_good.add_metric([name], counts["failed_for_good"])
    yield pins
    yield for_good


def _services(states: dict[str, ServiceState]) -> Iterator[Metric]:
    holds = {hold: _gauge(name, text, ["service"]) for hold, name, text in _HOLD_GAUGES}
    until = _gauge(
        "pinsyncd_service_backoff_until_timestamp_seconds",
        "Unix time the service's backoff ends (0 while it does not back off).",
        ["service"],
    )
    success = _gauge(
        "pinsyncd_service_last_success_timestamp_seconds",
        "Unix time the service's last cycle that went through ended (0: none yet).",
        ["service"],
    )
    for name, state in states.items():
        hold = hold_of(state.pause_reason)
        for kind, gauge in holds.items():
            gauge.add_metric([name], 1 if hold is kind else 0)
        until.add_metric([name], state.paused_until if hold is Hold.BACKOFF else 0)
        success.add_metric([name], state.last_success or 0)
    yield from holds.values()
    yield until
    yield success


def _replication(replication: dict[str, Any]) -> Iterator[Metric]:
    wanted = _gauge(
        "pinsyncd_replicas_wanted",
        "Services each selected CID should be pinned on (sync.replicas, at most the number "
        "of services).",
    )
    wanted.add_metric([], replication["replicas"])
    below = _gauge(
        "pinsyncd_cids_below_replicas",
        "Selected CIDs pinned on fewer services than pinsyncd_replicas_wanted, by kind of pin "
        "(those pinned on none included).",
        ["kind"],
    )
    nowhere = _gauge(
        "pinsyncd_cids_pinned_nowhere",
        "Selected CIDs pinned on no service, by kind of pin.",
        ["kind"],
    )
    for kind, counts in replication["kinds"].items():
        below.add_metric([kind], counts["below"])
        nowhere.add_metric([kind], counts["none"])
    yield wanted
    yield below
    yield nowhere


class DrillCollector(Collector):
    """The last restore drill of each service (`pinsyncd check --retrieval`), read from the
    record beside the state file at every scrape: `pinsyncd_drill_last_timestamp_seconds
    {service}` and `pinsyncd_drill_cids{service,result}`. Nothing for a service never drilled."""

    def __init__(self, state_path: Path, services: Callable[[], Sequence[str]]) -> None:
        self.state_path = state_path
        self.services = services

    def collect(self) -> Iterator[Metric]:
        drill = read_drill(self.state_path, list(self.services()))
        when = _gauge(
            "pinsyncd_drill_last_timestamp_seconds",
            "Unix time of the service's last restore drill (pinsyncd check --retrieval).",
            ["service"],
        )
        cids = _gauge(
            "pinsyncd_drill_cids",
            "CIDs of the service's last restore drill, by result (not_fetched: the service "
            "says it is pinned and could not serve it).",
            ["service", "result"],
        )
        for name, entry in (drill or {}).get("services", {}).items():
            when.add_metric([name], entry["timestamp"])
            for result in DRILL_RESULTS:
                count = entry.get(result, 0)
                cids.add_metric([name, result], count if type(count) is int else 0)
        yield when
        yield cids
