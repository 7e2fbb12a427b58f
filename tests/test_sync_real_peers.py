"""pinsyncd end to end, as a user runs it: the CLI as a subprocess, a real Kubo node, and the
third-party npm mock-ipfs-pinning-service as two independent services."""

from __future__ import annotations

import asyncio
import math
import signal
import time
from collections.abc import Callable
from pathlib import Path

from pinsyncd.kubo import LocalNode
from pinsyncd.psa import PinningServiceClient, iter_pins
from pinsyncd.tokens import Secret
from tests.conftest import seed_pins
from tests.daemon_helpers import (
    ServiceSpec,
    cli,
    log_events,
    start_daemon,
    status_json,
    write_config,
)
from tests.peers import KuboNode, MockPinningService


async def node_pinset(api_url: str) -> dict[str, str]:
    async with LocalNode(api_url) as node:
        return {pin.cid: pin.name async for pin in node.iter_pins()}


async def service_pins(mock: MockPinningService) -> list[tuple[str, str, str]]:
    """(cid, requestid, name) of every pin on the service, from the service's own listing."""
    async with PinningServiceClient("check", mock.url, Secret(mock.token, "test")) as client:
        return [(p.pin.cid, p.requestid, p.pin.name or "") async for p in iter_pins(client)]


async def test_every_local_pin_reaches_two_services_exactly_once(
    kubo: KuboNode,
    mock_psa_factory: Callable[..., MockPinningService],
    tmp_path: Path,
) -> None:
    first, second = mock_psa_factory(token="first-token"), mock_psa_factory(token="second-token")
    config = tmp_path / "config.yaml"
    specs = [
        ServiceSpec("first", first.url, first.token, concurrency=8),
        ServiceSpec("second", second.url, second.token, concurrency=8),
    ]
    env = write_config(config, node_api=kubo.api_url, services=specs)
    local = await node_pinset(kubo.api_url)
    assert len(local) >= 3000

    started = time.monotonic()
    result = cli(["sync", "--once", "-c", str(config)], env)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    (done,) = [e for e in log_events(result.stderr) if e["event"] == "cycle done"]
    for name, mock in (("first", first), ("second", second)):
        pins = await service_pins(mock)
        assert sorted(cid for cid, _, _ in pins) == sorted(local), f"{name}: exactly once each"
        assert len({requestid for _, requestid, _ in pins}) == len(local)
        names = {cid: pin_name for cid, _, pin_name in pins}
        assert all(names[cid] == (local[cid] or cid) for cid in local)
        requests = done["services"][name]["requests"]
        # one adoption listing, one add per pin, and a status listing in pages of 1000
        bound = 1 + len(local) + math.ceil(len(local) / 1000) + 1
        assert requests <= bound, f"{name}: {requests} requests for {len(local)} pins"
    print(f"\n{len(local)} pins to 2 services in {elapsed:.1f}s")

    status = status_json(config, env)["services"]
    for name in ("first", "second"):
        assert status[name]["queued"] == len(local)
        assert status[name]["unsent"] == 0

    # The services finish some pins; the next run tracks them and sends nothing new.
    done_cids = sorted(local)[: len(local) // 2]
    first.set_status(done_cids, "pinned")
    second.set_status(done_cids[:10], "failed")
    result = cli(["sync", "--once", "-c", str(config)], env)
    assert result.returncode == 3, "EX_INCOMPLETE: pins failed on a service"
    assert result.stderr.strip().splitlines()[-1].startswith("pinsyncd: second: 10 pins failed")
    (done,) = [e for e in log_events(result.stderr) if e["event"] == "cycle done"]
    assert done["services"]["first"]["pinned"] == len(done_cids)
    assert "added" not in done["services"]["first"]
    assert done["services"]["second"]["failed"] == 10
    assert done["services"]["first"]["requests"] <= 2 + math.ceil(len(local) / 1000)
    status = status_json(config, env)["services"]
    assert (status["first"]["pinned"], status["first"]["queued"]) == (
        len(done_cids),
        len(local) - len(done_cids),
    )
    assert status["second"]["failed"] == 10
    assert len(await service_pins(first)) == len(local), "still exactly once"


async def test_daemon_picks_up_new_pins_and_stops_cleanly(
    kubo_factory: Callable[..., KuboNode],
    mock_psa_factory: Callable[..., MockPinningService],
    tmp_path: Path,
) -> None:
    node = kubo_factory("small")
    await seed_pins(node.api_url, 20, "first-batch")
    mock = mock_psa_factory()
    config = tmp_path / "config.yaml"
    env = write_config(
        config,
        node_api=node.api_url,
        services=[ServiceSpec("mock", mock.url, mock.token)],
        interval="1s",
    )
    log = tmp_path / "daemon.log"
    daemon = await start_daemon(config, env, log)
    try:
        count = len(await node_pinset(node.api_url))  # 20 + the empty directory Kubo pins
        await wait_for(lambda: len(asyncio_run_pins(mock)) == count, 30, "first batch synced")
        await seed_pins(node.api_url, 5, "second-batch")
        await wait_for(lambda: len(asyncio_run_pins(mock)) == count + 5, 30, "new pins")
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(daemon.wait(), 20)
    assert code == 0
    events = log_events(log.read_text())
    assert events[0]["event"] == "pinsyncd started"
    assert events[-1]["event"] == "pinsyncd stopped"
    assert any(e["event"] == "stopping: finishing requests under way" for e in events)
    assert "mock-token" not in log.read_text(), "the token never reaches the log"


async def test_dry_run_calls_no_service(
    kubo: KuboNode,
    mock_psa: MockPinningService,
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.yaml"
    env = write_config(
        config, node_api=kubo.api_url, services=[ServiceSpec("mock", mock_psa.url, mock_psa.token)]
    )
    result = cli(["sync", "--dry-run", "-c", str(config)], env)
    assert result.returncode == 0, result.stderr
    assert "first contact: would list the service's pins" in result.stdout
    assert await service_pins(mock_psa) == []
    assert not (tmp_path / "state.db").exists(), "a dry run writes nothing"


def test_unreachable_node_fails_with_one_line(tmp_path: Path, mock_psa: MockPinningService) -> None:
    config = tmp_path / "config.yaml"
    env = write_config(
        config,
        node_api="http://127.0.0.1:9",
        services=[ServiceSpec("mock", mock_psa.url, mock_psa.token)],
    )
    result = cli(["sync", "--once", "-c", str(config)], env)
    assert result.returncode == 69, "EX_UNAVAILABLE: the node could not be used"
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("pinsyncd: node unreachable: cannot connect to http://127.0.0.1:9")
    assert "Traceback" not in result.stderr


def test_bad_token_pauses_that_service_and_says_so(
    tmp_path: Path, kubo: KuboNode, mock_psa: MockPinningService
) -> None:
    config = tmp_path / "config.yaml"
    env = write_config(
        config,
        node_api=kubo.api_url,
        services=[ServiceSpec("mock", mock_psa.url, "not-the-token")],
    )
    result = cli(["sync", "--once", "-c", str(config)], env)
    assert result.returncode == 69, "EX_UNAVAILABLE: a paused service"
    assert result.stderr.strip().splitlines()[-1] == (
        "pinsyncd: mock: paused: the token from $PINSYNCD_TEST_TOKEN_MOCK was refused"
    )
    assert "not-the-token" not in result.stderr
    status = status_json(config, env)["services"]["mock"]
    assert status["paused"] == "paused: the token from $PINSYNCD_TEST_TOKEN_MOCK was refused"


def asyncio_run_pins(mock: MockPinningService) -> list[tuple[str, str, str]]:
    return asyncio.run(service_pins(mock))


async def wait_for(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await asyncio.to_thread(check):
            return
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out waiting: {what}")
