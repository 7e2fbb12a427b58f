"""`HttpApi` on a real socket (127.0.0.1, port 0) with a real aiohttp client, serving
`Metrics` whose pin gauges are read from a real SQLite state file."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from pinsyncd.http_api import HttpApi
from pinsyncd.listen import parse_listen
from pinsyncd.metrics import Metrics, outcome_of
from pinsyncd.model import RemotePin, RemoteStatus, ServiceState
from pinsyncd.psa import errors
from pinsyncd.store import StateStore
from pinsyncd.store.readonly import read_status

STATUS_DOC = {"services": {"a": {"pinned": 1}}, "local": {"pins": 3, "last_cycle": None}}


class Health:
    def __init__(self) -> None:
        self.state = (True, "fine")

    def __call__(self) -> tuple[bool, str]:
        return self.state


@pytest.fixture
async def state_path(tmp_path: Path) -> Path:
    """Service "a": 2 pinned, 1 queued, 1 failed for good, 1 intent, 1 local pin unsent;
    service "b": paused, nothing stored."""
    path = tmp_path / "state.db"
    store = await StateStore.open(path)
    try:
        await store.replace_local_pins({f"cid{i}": "" for i in range(6)})
        rows = [
            ("cid0", RemoteStatus.PINNED, 0),
            ("cid1", RemoteStatus.PINNED, 0),
            ("cid2", RemoteStatus.QUEUED, 0),
            ("cid3", RemoteStatus.FAILED, 5),
            ("cid4", RemoteStatus.INTENT, 0),
        ]
        await store.save(RemotePin("a", cid, s, attempts=n, updated=1.0) for cid, s, n in rows)
        paused = ServiceState(
            "b", paused_until=time.time() + 60, pause_reason="paused: the token was refused"
        )
        await store.save_service_state(paused)
    finally:
        await store.close()
    return path


@pytest.fixture
async def api(state_path: Path) -> AsyncIterator[tuple[HttpApi, Health]]:
    health = Health()
    metrics = Metrics(state_path, lambda: ["a", "b"])
    server = HttpApi("127.0.0.1:0", metrics, health, lambda: STATUS_DOC)
    await server.start()
    try:
        yield server, health
    finally:
        await server.stop()


async def fetch(url: str, method: str = "GET") -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.request(method, url) as response:
        return response.status, response.headers["Content-Type"], await response.text()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(parsed: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str):
    return parsed[(name, frozenset(labels.items()))]


def pins_of(
    parsed: dict[tuple[str, frozenset[tuple[str, str]]], float], service: str
) -> dict[str, float]:
    """`pinsyncd_pins` of one service, by status."""
    return {
        dict(labels)["status"]: v
        for (name, labels), v in parsed.items()
        if name == "pinsyncd_pins" and dict(labels)["service"] == service
    }


async def test_metrics_expose_counters_histogram_gauges_and_pins(api) -> None:
    server, _ = api
    m = server.metrics
    m.record_request("a", "add", "ok")
    m.record_request("a", "add", "ok")
    m.record_request("a", "list", outcome_of(errors.ServerError("a", "list", "HTTP 502")))
    m.record_retry("a")
    m.record_rate_limited("b")
    m.observe_cycle("a", 0.3)
    m.observe_cycle("a", 7.0)
    m.set_node(True, 6)
    m.set_last_cycle(1_700_000_000.0)
    status, content_type, text = await fetch(f"{server.url}/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=")
    p = samples(text)
    assert value(p, "pinsyncd_requests_total", service="a", operation="add", outcome="ok") == 2
    assert (
        value(p, "pinsyncd_requests_total", service="a", operation="list", outcome="server_error")
        == 1
    )
    assert value(p, "pinsyncd_retries_total", service="a") == 1
    assert value(p, "pinsyncd_rate_limited_total", service="b") == 1
    assert value(p, "pinsyncd_cycle_seconds_count", service="a") == 2
    assert value(p, "pinsyncd_cycle_seconds_sum", service="a") == pytest.approx(7.3)
    assert value(p, "pinsyncd_cycle_seconds_bucket", service="a", le="0.5") == 1
    assert value(p, "pinsyncd_cycle_seconds_bucket", service="a", le="+Inf") == 2
    assert value(p, "pinsyncd_node_online") == 1
    assert value(p, "pinsyncd_local_pins") == 6
    assert value(p, "pinsyncd_last_cycle_timestamp_seconds") == 1_700_000_000.0
    pins_a = {s: value(p, "pinsyncd_pins", service="a", status=s) for s in ("pinned", "queued")}
    assert pins_a == {"pinned": 2, "queued": 1}
    assert value(p, "pinsyncd_pins", service="a", status="failed") == 1
    assert value(p, "pinsyncd_pins", service="a", status="sending") == 1
    assert value(p, "pinsyncd_pins", service="a", status="unsent") == 1
    assert value(p, "pinsyncd_pins", service="a", status="pinning") == 0
    assert value(p, "pinsyncd_pins", service="b", status="unsent") == 6
    assert value(p, "pinsyncd_pins_failed_for_good", service="a") == 1
    for service in ("a", "b"):  # each of the 6 local pins in one status, on each service
        assert sum(pins_of(p, service).values()) == 6
    assert value(p, "pinsyncd_service_paused", service="a") == 0
    assert value(p, "pinsyncd_service_paused", service="b") == 1


async def test_pins_follow_the_current_service_list(tmp_path: Path, state_path: Path) -> None:
    names = ["a"]
    metrics = Metrics(state_path, lambda: names)
    services = {dict(labels).get("service") for _, labels in samples(metrics.render()[0].decode())}
    assert "b" not in services
    names.append("b")  # the config was reloaded
    parsed = samples(metrics.render()[0].decode())
    assert value(parsed, "pinsyncd_pins", service="b", status="unsent") == 6


async def test_a_missing_state_file_reads_as_empty(tmp_path: Path) -> None:
    parsed = samples(Metrics(tmp_path / "none.db", lambda: ["a"]).render()[0].decode())
    assert value(parsed, "pinsyncd_pins", service="a", status="pinned") == 0
    assert not (tmp_path / "none.db").exists()


async def test_a_damaged_state_file_drops_only_the_pin_gauges(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"not a database" * 100)
    metrics = Metrics(path, lambda: ["a"])
    metrics.set_node(False, 0)
    with structlog.testing.capture_logs() as logs:
        parsed = samples(metrics.render()[0].decode())
    assert value(parsed, "pinsyncd_node_online") == 0
    assert not any(name == "pinsyncd_pins" for name, _ in parsed)
    assert logs[0]["event"] == "cannot read the state file for metrics"


def test_outcomes_are_named_by_error_class() -> None:
    assert outcome_of(None) == "ok"
    assert outcome_of(errors.RateLimited("a", "add", "429", retry_after=1)) == "rate_limited"
    assert outcome_of(errors.NetworkError("a", "get", "reset")) == "network_error"
    assert outcome_of(errors.Unauthorized("a", "list", "secret-token refused")) == "unauthorized"
    assert outcome_of(errors.NotFound("a", "get", "gone")) == "not_found"
    assert outcome_of(errors.MalformedResponse("a", "get", "bad json")) == "malformed"
    assert outcome_of(errors.InsufficientFunds("a", "add", "pay")) == "insufficient_funds"
    assert outcome_of(errors.ClientError("a", "add", "418")) == "client_error"
    assert outcome_of(ValueError("boom")) == "internal_error"


async def test_healthz_answers_200_then_503_with_the_reason(api) -> None:
    server, health = api
    assert await fetch(f"{server.url}/healthz") == (200, "text/plain; charset=utf-8", "ok\n")
    health.state = (False, "no node listing for 15m")
    status, _, body = await fetch(f"{server.url}/healthz")
    assert (status, body) == (503, "no node listing for 15m\n")


async def test_status_is_the_callables_document(api) -> None:
    server, _ = api
    async with aiohttp.ClientSession() as session, session.get(f"{server.url}/status") as r:
        assert r.status == 200
        assert r.content_type == "application/json"
        assert await r.json() == STATUS_DOC


async def test_a_failing_status_answers_503(state_path: Path) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("the state file is damaged")

    server = HttpApi("127.0.0.1:0", Metrics(state_path, list), lambda: (True, ""), broken)
    await server.start()
    try:
        with structlog.testing.capture_logs():
            status, _, body = await fetch(f"{server.url}/status")
    finally:
        await server.stop()
    assert status == 503
    assert "damaged" in body


async def test_other_paths_are_404_and_other_methods_405(api) -> None:
    server, _ = api
    assert (await fetch(f"{server.url}/"))[0] == 404
    assert (await fetch(f"{server.url}/metrics/x"))[0] == 404
    assert (await fetch(f"{server.url}/metrics", "POST"))[0] == 405
    assert (await fetch(f"{server.url}/healthz", "DELETE"))[0] == 405


async def test_stop_twice_and_the_port_is_released(state_path: Path) -> None:
    server = HttpApi("127.0.0.1:0", Metrics(state_path, list), lambda: (True, ""), dict)
    with pytest.raises(RuntimeError):
        _ = server.url
    await server.start()
    url = server.url
    assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
    await server.stop()
    await server.stop()
    with pytest.raises(aiohttp.ClientConnectionError):
        await fetch(f"{url}/healthz")


async def test_a_non_loopback_address_is_warned_about(state_path: Path) -> None:
    server = HttpApi("0.0.0.0:0", Metrics(state_path, list), lambda: (True, ""), dict)
    with structlog.testing.capture_logs() as logs:
        await server.start()
        await server.stop()
    assert [e["log_level"] for e in logs] == ["warning"]
    assert "non-loopback" in logs[0]["event"]


async def test_ipv6_loopback(state_path: Path) -> None:
    server = HttpApi("[::1]:0", Metrics(state_path, list), lambda: (True, ""), dict)
    try:
        await server.start()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        assert server.url.startswith("http://[::1]:")
        assert (await fetch(f"{server.url}/healthz"))[0] == 200
    finally:
        await server.stop()


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:9123", ("127.0.0.1", 9123)),
        ("[::1]:9123", ("::1", 9123)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["9123", ":9123", "::1:9123", "host:port", "host:70000"])
def test_parse_listen_rejects(listen: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(listen)


async def test_unsent_in_metrics_is_the_one_status_shows_with_k_of_n(tmp_path: Path) -> None:
    """With `sync.replicas` 1 of 2 services, what is meant for a service is known from its
    last cycle: `/metrics` says the same as `status` (before, it counted every selected pin
    without a request as unsent on every service)."""
    path = tmp_path / "state.db"
    store = await StateStore.open(path)
    try:
        await store.replace_local_pins({f"cid{i}": "" for i in range(6)})
        await store.save(RemotePin("a", f"cid{i}", RemoteStatus.PINNED) for i in range(4))
        await store.save_service_state(ServiceState("a", unsent=2))
        await store.save_service_state(ServiceState("b", unsent=0))  # the others are a's
    finally:
        await store.close()
    metrics = Metrics(path, lambda: ["a", "b"], replicas=1)
    parsed = samples(metrics.render()[0].decode())
    status = read_status(path, ["a", "b"], replicas=1)["services"]
    for name, unsent in (("a", 2), ("b", 0)):
        assert status[name]["unsent"] == unsent
        assert value(parsed, "pinsyncd_pins", service=name, status="unsent") == unsent
