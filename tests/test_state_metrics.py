"""The gauges `/metrics` reads from a real SQLite state file at every scrape
(`pinsyncd.state_metrics`): what holds a service back, one gauge per cause; when its backoff
ends; its last success, kept across a restart; CIDs below `sync.replicas`."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from pinsyncd.metrics import Metrics
from pinsyncd.model import RemotePin, RemoteStatus, ServiceState
from pinsyncd.outcomes import BACKING_OFF, PAUSED, RETRY_AFTER
from pinsyncd.store import StateStore

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
PAST, FUTURE = 1_000_000_000.0, 4_000_000_000.0


def scrape(metrics: Metrics) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(metrics.render()[0].decode())
        for s in family.samples
    }


def per_service(samples: Samples, name: str) -> dict[str, float]:
    return {dict(labels)["service"]: value for (n, labels), value in samples.items() if n == name}


async def test_each_cause_that_holds_a_service_back_is_a_gauge_of_its_own(
    tmp_path: Path,
) -> None:
    """A refused token is `paused`, failed cycles `backoff`, a Retry-After `rate_limited`:
    never two at once. They follow the reason the last cycle saved, so a backoff whose wait
    has run out (its next cycle under way) still counts until a cycle goes through."""
    path = tmp_path / "state.db"
    store = await StateStore.open(path)
    try:
        for state in (
            ServiceState("ok", last_cycle=PAST, last_success=PAST),
            ServiceState("refused", paused_until=FUTURE, pause_reason=f"{PAUSED}token refused"),
            ServiceState(
                "failing", paused_until=FUTURE, pause_reason=f"{BACKING_OFF}3 failed", failures=3
            ),
            ServiceState("retrying", paused_until=PAST, pause_reason=f"{BACKING_OFF}1 failed"),
            ServiceState("limited", paused_until=FUTURE, pause_reason=RETRY_AFTER),
        ):
            await store.save_service_state(state)
    finally:
        await store.close()
    names = ["ok", "refused", "failing", "retrying", "limited", "never-synced"]
    samples = scrape(Metrics(path, lambda: names))
    paused = per_service(samples, "pinsyncd_service_paused")
    backoff = per_service(samples, "pinsyncd_service_backoff")
    limited = per_service(samples, "pinsyncd_service_rate_limited")
    assert paused == {n: float(n == "refused") for n in names}
    assert backoff == {n: float(n in ("failing", "retrying")) for n in names}
    assert limited == {n: float(n == "limited") for n in names}
    until = per_service(samples, "pinsyncd_service_backoff_until_timestamp_seconds")
    assert until == {**dict.fromkeys(names, 0.0), "failing": FUTURE, "retrying": PAST}


async def test_the_last_success_is_read_back_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = await StateStore.open(path)
    try:
        await store.save_service_state(ServiceState("a", last_cycle=PAST, last_success=PAST))
        # a later cycle that failed: the last success stays what it was
        await store.save_service_state(
            ServiceState("a", last_cycle=PAST + 60, last_success=PAST, failures=1)
        )
    finally:
        await store.close()
    store = await StateStore.open(path)  # a new process
    try:
        assert (await store.service_state("a")).last_success == PAST
        assert (await store.service_state("b")).last_success is None
    finally:
        await store.close()
    success = per_service(
        scrape(Metrics(path, lambda: ["a", "b"])),
        "pinsyncd_service_last_success_timestamp_seconds",
    )
    assert success == {"a": PAST, "b": 0.0}


async def test_cids_below_the_wanted_replicas_by_kind(tmp_path: Path) -> None:
    """Two services, `sync.replicas: 2`: of four recursive CIDs, two are pinned on both,
    one on one, one on none; the direct pin is on neither."""
    path = tmp_path / "state.db"
    store = await StateStore.open(path)
    try:
        pins = {f"cid{i}": "" for i in (0, 1, 2, 3, 9)}
        await store.replace_local_pins(pins, kinds={"cid9": "direct"})
        rows = [("a", "cid0"), ("b", "cid0"), ("a", "cid1"), ("b", "cid1"), ("a", "cid2")]
        await store.save(RemotePin(s, cid, RemoteStatus.PINNED) for s, cid in rows)
        await store.save([RemotePin("b", "cid3", RemoteStatus.QUEUED)])
    finally:
        await store.close()
    samples = scrape(Metrics(path, lambda: ["a", "b"], replicas=2))
    assert samples[("pinsyncd_replicas_wanted", frozenset())] == 2
    below = {
        dict(labels)["kind"]: v
        for (n, labels), v in samples.items()
        if n == "pinsyncd_cids_below_replicas"
    }
    nowhere = {
        dict(labels)["kind"]: v
        for (n, labels), v in samples.items()
        if n == "pinsyncd_cids_pinned_nowhere"
    }
    assert below == {"recursive": 2, "direct": 1}
    assert nowhere == {"recursive": 1, "direct": 1}
