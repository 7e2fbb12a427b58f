"""Monitoring as Prometheus sees it: a real `pinsyncd run` (a subprocess) syncing four fake
services in four conditions, its `/metrics` scraped over HTTP and parsed with
prometheus_client's own parser. Each pin is counted once per service; a paused service, one
backing off and one rate limited are told apart; the last success, the build, the process;
no `_created` series. The example alert rules (prometheus/pinsyncd.rules.yml) use only names
this daemon exposes, and the real promtool checks them and runs their unit tests."""

from __future__ import annotations

import asyncio
import json
import platform
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

import pinsyncd
from tests.daemon_helpers import ROOT, ServiceSpec, daemon_for, log_events
from tests.fake_kubo import FakeKubo
from tests.fake_psa import FakePinningService, Fault

pytestmark = pytest.mark.slow  # one daemon run as a subprocess for the module

RULES = ROOT / "prometheus" / "pinsyncd.rules.yml"
RULES_TESTS = ROOT / "tests" / "prometheus_rules_test.yml"
PROMTOOL = ROOT / ".peers" / "bin" / "promtool"
PINS, ACCEPTED = 12, 10  # the node's pins; adds the "mixed" service accepts (then 400s)
TOKEN = "monitoring-token-1234"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass(frozen=True)
class Scrape:
    text: str
    samples: Samples
    names: frozenset[str]  # every metric family and sample name in the exposition
    status: dict[str, Any]  # /status, read right after
    started: float  # Unix time before the daemon started
    scraped: float  # Unix time after the scrape

    def per_service(self, name: str, **labels: str) -> dict[str, float]:
        return {
            dict(ls)["service"]: v
            for (n, ls), v in self.samples.items()
            if n == name and labels.items() <= dict(ls).items()
        }


async def _get(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url) as response:
        assert response.status == 200, url
        return await response.text()


async def _until(check: Callable[[], Any], what: str, seconds: float = 90) -> Any:
    """Poll `check` (a coroutine function) until it returns something true; the bound only
    keeps a broken run from hanging, nothing is timed."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if result := await check():
            return result
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for: {what}")


def _mixed_done(status: dict[str, Any]) -> bool:
    s = status["services"]
    want = {"pinned": 3, "pinning": 2, "failed": 2, "queued": 3, "unsent": 2, "sending": 0}
    return (
        all(s["mixed"][k] == v for k, v in want.items())
        and str(s["refused"]["paused"]).startswith("paused:")
        and str(s["failing"]["paused"]).startswith("backing off:")
        and str(s["limited"]["paused"]).startswith("rate limited:")
    )


async def _scenario(root: Path) -> Scrape:
    """The daemon syncs 12 pins to: `mixed`, which takes 10 adds and refuses the rest with a
    400 (so they stay unsent; with retry.max_attempts 1 they, and the 2 pins it marks
    failed, have failed for good), of which it pins 3, keeps 2 pinning and 3 queued;
    `refused` (a wrong token), `failing` (503 to everything), `limited` (429, wait an hour)."""
    async with (
        FakeKubo(pins=PINS) as node,
        FakePinningService(token=TOKEN) as mixed,
        FakePinningService(token="another-token-5678") as refused,
        FakePinningService(token=TOKEN) as failing,
        FakePinningService(token=TOKEN) as limited,
    ):
        mixed.inject(
            Fault("status", status=400), method="POST", path="/pins", skip=ACCEPTED, times=None
        )
        failing.inject(Fault("status", status=503), times=None)
        limited.inject(Fault("rate_limit", retry_after=3600), times=None)
        services = [
            ServiceSpec(name, svc.url, TOKEN)
            for name, svc in (
                ("mixed", mixed),
                ("refused", refused),
                ("failing", failing),
                ("limited", limited),
            )
        ]
        started = time.time()
        daemon = await daemon_for(
            root,
            node.url,
            services,
            retry="base: 1h\ncap: 1h\nmax_attempts: 1",
            http_listen="127.0.0.1:0",
        )
        try:
            async with aiohttp.ClientSession() as session:
                base = await _until(lambda: _listening(daemon.log), "the HTTP API")

                async def status() -> dict[str, Any]:
                    return json.loads(await _get(session, f"{base}/status"))

                async def accepted() -> bool:
                    return len(mixed.pins) == ACCEPTED and (await status())["services"]["mixed"][
                        "unsent"
                    ] == (PINS - ACCEPTED)

                await _until(accepted, "the adds to mixed")
                cids = sorted(pin["pin"]["cid"] for pin in mixed.pins)
                for cid in cids[:3]:
                    mixed.set_status(cid, "pinned")
                for cid in cids[3:5]:
                    mixed.set_status(cid, "pinning")
                for cid in cids[5:7]:
                    mixed.set_status(cid, "failed")

                async def settled() -> bool:
                    return _mixed_done(await status())

                await _until(settled, "every service in its condition")
                text = await _get(session, f"{base}/metrics")
                scraped = time.time()
                after = await status()
        finally:
            daemon.process.terminate()
            assert await asyncio.wait_for(daemon.process.wait(), 30) == 0
    families = list(text_string_to_metric_families(text))
    samples = {(s.name, frozenset(s.labels.items())): s.value for f in families for s in f.samples}
    names = frozenset({f.name for f in families} | {s.name for f in families for s in f.samples})
    return Scrape(text, samples, names, after, started, scraped)


async def _listening(log: Path) -> str | None:
    events = log_events(await asyncio.to_thread(log.read_text))
    return next((e["url"] for e in events if e["event"] == "HTTP API listening"), None)


@pytest.fixture(scope="module")
def scrape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scrape]:
    yield asyncio.run(_scenario(tmp_path_factory.mktemp("monitoring")))


def test_each_pin_is_counted_once_per_service(scrape: Scrape) -> None:
    """The statuses of `pinsyncd_pins` partition each service's pins: they add up to the
    node's 12 on every service, whatever state each pin is in. Failed for good is a gauge
    of its own (before, it was a status too, and mixed's pins added up to 16)."""
    for service in ("mixed", "refused", "failing", "limited"):
        by_status = {
            dict(labels)["status"]: v
            for (name, labels), v in scrape.samples.items()
            if name == "pinsyncd_pins" and dict(labels)["service"] == service
        }
        assert sum(by_status.values()) == PINS, (service, by_status)
        if service == "mixed":
            assert by_status == {
                "pinned": 3,
                "pinning": 2,
                "queued": 3,
                "failed": 2,
                "sending": 0,
                "unsent": 2,
            }
        else:
            assert by_status["unsent"] == PINS
    for_good = scrape.per_service("pinsyncd_pins_failed_for_good")
    assert for_good == {"mixed": 4, "refused": 0, "failing": 0, "limited": 0}
    assert scrape.status["services"]["mixed"]["failed_for_good"] == 4


def test_paused_backing_off_and_rate_limited_are_told_apart(scrape: Scrape) -> None:
    services = ("mixed", "refused", "failing", "limited")
    paused = scrape.per_service("pinsyncd_service_paused")
    backoff = scrape.per_service("pinsyncd_service_backoff")
    limited = scrape.per_service("pinsyncd_service_rate_limited")
    assert paused == {s: float(s == "refused") for s in services}
    assert backoff == {s: float(s == "failing") for s in services}
    assert limited == {s: float(s == "limited") for s in services}
    until = scrape.per_service("pinsyncd_service_backoff_until_timestamp_seconds")
    assert until["failing"] > scrape.started, "the end of its backoff, as Unix time"
    assert until["mixed"] == until["refused"] == until["limited"] == 0


def test_the_last_success_is_only_that_of_a_cycle_that_went_through(scrape: Scrape) -> None:
    success = scrape.per_service("pinsyncd_service_last_success_timestamp_seconds")
    assert scrape.started < success["mixed"] <= scrape.scraped
    assert success["refused"] == success["failing"] == success["limited"] == 0


def test_the_build_and_the_process_and_no_created_series(scrape: Scrape) -> None:
    build = scrape.samples[
        (
            "pinsyncd_build_info",
            frozenset(
                {"version": pinsyncd.__version__, "python": platform.python_version()}.items()
            ),
        )
    ]
    assert build == 1
    for name in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "process_open_fds",
        "python_gc_collections_total",
        "python_info",
    ):
        assert name in scrape.names, name
    assert scrape.samples[("process_resident_memory_bytes", frozenset())] > 0
    assert not [name for name in scrape.names if name.endswith("_created")]
    assert "_created" not in scrape.text
    assert TOKEN not in scrape.text


# --- the example alert rules ------------------------------------------------------------

PROMQL_WORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "bool", "offset"}
PROMQL_WORDS |= {"group_left", "group_right", "inf", "nan"}
PROMETHEUS_OWN = {"up"}  # made by Prometheus for every scrape, not by the daemon


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not a function
    (followed by `(`), a keyword, a label in `{...}` or `by (...)`, a string, a number or a
    duration."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b\d[\d.]*(?:[smhdwy]|ms)?\b", "", expr)  # numbers and durations
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        after = expr[match.end() :].lstrip()
        if after.startswith("(") or match.group() in PROMQL_WORDS:
            continue
        names.add(match.group())
    return names


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_metric_names_of_an_expression() -> None:
    assert metric_names(
        'time() - max by (service) (pinsyncd_x{a="b"}[5m] offset 1h) > 6 * 3600 and on(i) up'
    ) == {"pinsyncd_x", "up"}


def test_the_alert_rules_use_only_metrics_the_daemon_exposes(scrape: Scrape) -> None:
    used: set[str] = set()
    for rule in rules():
        assert rule["alert"].startswith("Pinsyncd")
        assert rule["labels"]["severity"] in ("warning", "critical")
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        used |= names
    assert used - PROMETHEUS_OWN <= scrape.names, sorted(used - PROMETHEUS_OWN - scrape.names)
    # the conditions the rules are there for, each by the metric that shows it
    for name in (
        "pinsyncd_service_paused",
        "pinsyncd_service_backoff",
        "pinsyncd_service_last_success_timestamp_seconds",
        "pinsyncd_pins_failed_for_good",
        "pinsyncd_cids_below_replicas",
        "pinsyncd_last_cycle_timestamp_seconds",
        "pinsyncd_drill_cids",
    ):
        assert name in used, name


def test_promtool_checks_the_rules_and_runs_their_unit_tests(peers_installed: None) -> None:
    if not PROMTOOL.exists():
        pytest.skip(f"no promtool at {PROMTOOL}: scripts/install-peers did not build it")
    for args in (["check", "rules", str(RULES)], ["test", "rules", str(RULES_TESTS)]):
        result = subprocess.run(
            [str(PROMTOOL), *args], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULES_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert tested == {rule["alert"] for rule in rules()}, "every alert fires in a unit test"
