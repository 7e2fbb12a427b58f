"""Smoke tests of the benchmarks (benchmarks/): each runs in its --quick mode and must print
well-formed numbers. Nothing here is timed: the numbers themselves are benchmarks/results.md's
business. Also the test-peer helpers the benchmarks added to fake_psa and fake_kubo."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from typing import Any

import aiohttp
import pytest

from tests.fake_kubo import FakeKubo, StreamFault, generated_cid
from tests.fake_psa import FakePinningService
from tests.peers import ROOT

pytestmark = pytest.mark.slow  # each runs a benchmark, --quick, as subprocesses


def run_benchmark(module: str, *args: str, timeout: float = 90) -> dict[str, Any]:
    """Run `python -m benchmarks.MODULE --quick ARGS`; its last line is the JSON record."""
    result = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", "--quick", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-1000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) > 2, "a table comes before the JSON line"
    record = json.loads(lines[-1])
    assert record["benchmark"] == module.rsplit(".", 1)[-1] or record["benchmark"].startswith(
        "prototype_"
    )
    assert record["quick"] is True
    assert record["cpus"] >= 1 and record["python"].startswith("3.")
    return record


def number(value: Any, *, positive: bool = False) -> float:
    assert isinstance(value, int | float) and not isinstance(value, bool), value
    assert math.isfinite(value) and value >= 0, value
    if positive:
        assert value > 0
    return float(value)


def test_requests_per_pin() -> None:
    r = run_benchmark("requests_per_pin")
    pins = r["pins"]
    assert r["adds"] == pins and r["all_pinned_on_service"]
    for key in ("lists", "gets", "replaces", "deletes", "total", "lower_bound", "target"):
        number(r[key])
    assert r["total"] == r["adds"] + r["lists"] + r["gets"] + r["replaces"] + r["deletes"]
    assert r["status_rounds"] >= 1 and len(r["pending_per_round"]) == r["status_rounds"]
    assert pins <= r["lower_bound"] <= r["total"]
    assert isinstance(r["met"], bool)


def test_idle_cost() -> None:
    r = run_benchmark("idle_cost")
    number(r["cpu_seconds_per_cycle"], positive=True)
    number(r["wall_seconds_per_cycle"], positive=True)
    number(r["remote_requests_per_cycle"])
    assert r["rpc_calls_per_cycle"]["pin/ls"] == 1
    assert len(r["in_process"]) >= 2
    for part in ("sync_once", "startup_only"):
        number(r[part]["cpu_seconds"], positive=True)
        number(r[part]["max_rss_mb"], positive=True)
    number(r["daemon"]["cpu_seconds_per_interval"])
    assert r["daemon"]["rpc_calls_per_interval"]["pin/ls"] >= 1


def test_throughput(peers_installed: None) -> None:
    r = run_benchmark("throughput", timeout=120)
    assert set(r["servers"]) >= {"fake_psa", "npm_mock"}
    for server in r["servers"].values():
        assert len(server["rates"]) == 4
        for rate in server["rates"].values():
            number(rate, positive=True)
        for key in ("pinsyncd_vs_bare", "pinsyncd_vs_sequential", "pinsyncd_vs_kubo_loop"):
            number(server[key], positive=True)
    for listing in r["listing"]:
        assert listing["pins_on_service"] == r["pins"]
        number(listing["kubo_ls_requests"], positive=True)
        number(listing["pinsyncd_list_requests"], positive=True)


def test_memory() -> None:
    r = run_benchmark("memory")
    assert r["state_rows"] == {"local_pins": r["pins"], "remote_pins": r["pins"]}
    for run in ("first", "idle"):
        number(r[run]["max_rss_mb"], positive=True)
        number(r[run]["cycle_seconds"], positive=True)
        assert r[run]["rpc_calls"]["pin/ls"] == 1
    assert r["idle"]["remote_requests"] == 0
    assert isinstance(r["met"], bool)


def test_memory_of_an_initial_backup() -> None:
    r = run_benchmark("memory", "--initial", "--pins", "2000")
    assert r["initial"]["adds"] == 2000 and r["initial"]["remote_requests"] == 2001
    assert r["tracking"]["adds"] == 0 and r["all_pinned"]["adds"] == 0
    assert r["all_pinned"]["services"]["bench"]["pinned"] == 2000
    for run in ("initial", "tracking", "all_pinned"):
        number(r[run]["max_rss_mb"], positive=True)


def test_cycle_time() -> None:
    r = run_benchmark("cycle_time")
    assert len(r["runs"]) == 2
    for run in r["runs"]:
        number(run["first"]["cycle_seconds"], positive=True)
        number(run["idle"]["cycle_seconds"], positive=True)
    for growth in r["growth"].values():
        number(growth, positive=True)


def test_micro() -> None:
    r = run_benchmark("micro")
    for key, value in r.items():
        if key.endswith("_us") or key.endswith("_us_per_pin") or key.startswith("add_cpu_us"):
            number(value, positive=True)


def test_serve() -> None:
    r = run_benchmark("serve")
    assert r["pins"] == 300
    assert r["kubo_calls_per_pin"]["pin/add"] == 1.0
    for key in ("adds_per_second", "add_p50_ms", "add_p95_ms", "serve_peak_rss_mib"):
        number(r[key], positive=True)
    number(r["serve_cpu_ms_per_add"])
    assert set(r["list_ms"]) == {"first page (10)", "page of 1000", "name ipartial", "cid lookup"}


# --- what the benchmarks added to the test peers ----------------------------------------------


async def test_fake_psa_seed_and_request_counts() -> None:
    async with FakePinningService(token=None, count_mode="page") as svc:
        cids = [generated_cid(i, "seed") for i in range(2500)]
        assert svc.seed(cids, status="pinned", name_prefix="x") == 2500
        assert svc.pin_count == 2500
        assert svc.pins_for_cid(cids[7])[0]["pin"]["name"] == "x-7"
        async with aiohttp.ClientSession() as session:
            listed: list[str] = []
            before = None
            while True:
                params = {"limit": "1000", "status": "pinned"}
                if before:
                    params["before"] = before
                async with session.get(f"{svc.url}/pins", params=params) as response:
                    page = await response.json()
                if not page["results"]:
                    break
                assert page["count"] == len(page["results"])
                listed += [p["pin"]["cid"] for p in page["results"]]
                before = page["results"][-1]["created"]
            async with session.get(f"{svc.url}/pins/nope") as response:
                assert response.status == 404
        assert sorted(listed) == sorted(cids), "early stop at a full page loses nothing"
        assert svc.request_counts() == {
            "add": 0,
            "list": 4,
            "get": 1,
            "replace": 0,
            "delete": 0,
            "other": 0,
        }
        with pytest.raises(ValueError, match="bad status"):
            svc.seed(["x"], status="done")


async def test_fake_kubo_stream_is_the_same_once_cached() -> None:
    async with (
        FakeKubo(pins=2500, extra={"bafkqaaa": "extra"}) as node,
        aiohttp.ClientSession() as session,
    ):

        async def listing() -> bytes:
            url = f"{node.url}/api/v0/pin/ls"
            async with session.post(url, params={"stream": "true", "names": "true"}) as r:
                return await r.read()

        first, second = await listing(), await listing()
        node.extra["bafkqaab"] = "more"  # the cache follows changes to the pinset
        third = await listing()
        node.stream_faults.append(StreamFault("error", after=3000))  # past the end
        fourth = await listing()
    lines = [json.loads(line) for line in first.splitlines()]
    assert len(lines) == 2501 and first == second
    assert lines[0] == {"Cid": generated_cid(0, "fake"), "Type": "recursive", "Name": "pin-0"}
    assert third.endswith(b'{"Cid":"bafkqaab","Name":"more","Type":"recursive"}\n')
    assert fourth == third


def test_state_open() -> None:
    r = run_benchmark("state_open")
    (size,) = r["sizes"]
    assert size["pins"] == 2000
    for key in ("file_mb", "open_ms", "quick_check_ms"):
        number(size[key], positive=True)


def test_listing_vet() -> None:
    r = run_benchmark("listing_vet")
    (size,) = r["sizes"]
    assert size["pins"] == 2000
    for label in ("plain", "vetted", "two_types", "proxy"):
        number(size[f"{label}_first_wall"], positive=True)
        for key in ("first_cpu", "idle_wall", "idle_cpu"):  # rounded: may be 0.0 at 2,000
            number(size[f"{label}_{key}"])


def test_restore(peers_installed: None) -> None:
    r = run_benchmark("restore")
    assert r["pins"] == 50 and r["blocks_received"] >= 50
    assert r["service_requests"] == 1, "one page lists 50 requests"
    for key in ("wall_s", "cpu_s", "max_rss_mb", "pins_per_s", "mb_received"):
        number(r[key], positive=True)
    assert r["summary"].startswith("restored 50 of 50 pins")


def test_confirm_latency() -> None:
    r = run_benchmark("confirm_latency")
    assert r["pins"] == 50 and r["adds"] == 50
    number(r["returned_after_last_pinned_s"])
    number(r["wall_s"], positive=True)


def test_startup() -> None:
    r = run_benchmark("startup")
    for name in ("pinsyncd --version", "pinsyncd status", "pinsyncd check-config"):
        number(r["cpu_s"][name], positive=True)


def test_node_cost(peers_installed: None) -> None:
    r = run_benchmark("node_cost", timeout=180)
    for part in ("kubo_full", "kubo_probe"):
        number(r[part]["kubo_cpu"])
        number(r[part]["wall"], positive=True)
        assert r[part]["bytes"] > r["pins"] * 50, "every pin was listed"
    for part in ("pinsyncd_idle_cycle_probe", "pinsyncd_idle_cycle_full"):
        number(r[part]["cpu"], positive=True)
    assert r["listed_every_seconds"] >= r["default_interval_seconds"] > 0
    assert 0 < r["kubo_share_of_one_core"] < 1 and 0 < r["pinsyncd_share_of_one_core"] < 1
