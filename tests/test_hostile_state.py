"""Hostile input that reaches the state file: servers that echo the token, a corrupt or full
state file, wall-clock steps, repeated crashes, rows that can no longer be acted on. The real
daemon and CLI run as subprocesses against loopback servers."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from pinsyncd import clock
from pinsyncd.backoff import RetryPolicy
from pinsyncd.config import Service
from pinsyncd.model import RemotePin, RemoteStatus
from pinsyncd.psa import PinningServiceClient
from pinsyncd.store import StateStore
from pinsyncd.sync.context import NodeView
from pinsyncd.sync.service import ServiceExecutor
from pinsyncd.tokens import Secret
from tests.cidgen import random_cids
from tests.daemon_helpers import ServiceSpec, acli, start_daemon, write_config
from tests.fake_kubo import FakeKubo
from tests.fake_psa import FakePinningService, Fault

TOKEN = "s3cr3t-T0KEN-echoed-4f2a9c"


async def wait_for(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {what}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def state_file_bytes(directory: Path) -> dict[str, bytes]:
    """The state file and its WAL and SHM files, as they are on disk now."""
    return {p.name: p.read_bytes() for p in directory.glob("state.db*") if p.is_file()}


@pytest.mark.slow
async def test_a_token_echoed_everywhere_is_found_nowhere(tmp_path: Path) -> None:
    """A service echoes the token in its status details, a pin's name, a non-JSON 200 body,
    an HTML 500 page and a Failure's details. Afterwards the token is in no state file (main,
    WAL, SHM), no debug log line, no CLI output and no HTTP endpoint."""
    async with (
        FakeKubo(pins=12) as node,
        FakePinningService(
            token=TOKEN,
            transition_after=0.2,
            info={"status_details": f"authorized by Bearer {TOKEN}"},
        ) as svc,
    ):
        cids = sorted(node.pinset())
        svc.fail_cids = {cids[0]}  # `status --failed` prints its details
        svc.add_pin(cids[1], name=f"echo {TOKEN}", status="pinned", details=f"{TOKEN}!")
        svc.inject(Fault("malformed", body=f"<p>{TOKEN}</p>", after_apply=True), method="POST")
        svc.inject(Fault("html_500", body=f"<pre>Bearer {TOKEN}</pre>"), method="POST")
        svc.inject(Fault("status", status=500, details=f"header was {TOKEN}"), method="POST")
        svc.inject(Fault("html_500", status=502, body=f"{TOKEN}"), method="GET", times=2)
        port = free_port()
        config = tmp_path / "config.yaml"
        env = write_config(
            config,
            node_api=node.url,
            services=[ServiceSpec("alpha", svc.url, TOKEN)],
            interval="1s",
            retry="base: 100ms\ncap: 500ms",
            http_listen=f"127.0.0.1:{port}",
        )
        log = tmp_path / "daemon.log"
        daemon = await start_daemon(config, env, log, log_level="debug")
        outputs: list[str] = []
        try:
            await wait_for(
                lambda: all(
                    any(p["status"] in ("pinned", "failed") for p in svc.pins_for_cid(cid))
                    for cid in cids
                ),
                60,
                "every pin pinned or failed",
            )
            await asyncio.sleep(1.5)  # a status round records the failure and the details
            state_files = state_file_bytes(tmp_path)
            async with aiohttp.ClientSession() as http:
                for endpoint in ("/status", "/healthz", "/metrics", "/"):
                    async with http.get(f"http://127.0.0.1:{port}{endpoint}") as response:
                        outputs.append(await response.text())
            for args in (
                ["status"],
                ["status", "--json"],
                ["status", "--failed"],
                ["status", "--failed", "--json"],
                ["check-config"],
            ):
                code, out, err = await acli([*args, "-c", str(config)], env)
                assert code == 0, err
                outputs += [out, err]
        finally:
            daemon.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(daemon.wait(), 30) == 0
        state_files.update(state_file_bytes(tmp_path))
    assert {"state.db", "state.db-wal", "state.db-shm"} <= set(state_files)  # read while running
    log_text = log.read_text()
    assert '"level": "debug"' in log_text
    assert TOKEN not in log_text
    for name, content in state_files.items():
        assert TOKEN.encode() not in content, f"the token is in {name}"
    for out in outputs:
        assert TOKEN not in out
    # What was echoed is kept, scrubbed: the details and the name were stored.
    assert b"authorized by Bearer ***" in b"".join(state_files.values())
    assert b"echo ***" in b"".join(state_files.values())


# --- rows and intents, with the executor in process (real sockets, real SQLite) -------------

EXEC_TOKEN = "hostile-state-token"
LONG_AGO = "an-earlier-boot@0"  # a row's stamp from before this boot: its grace is over
ONLINE = NodeView(online=True, peer_id="12D3KooWHostilePeer", origins=())


def executor_for(svc: FakePinningService, store: StateStore) -> ServiceExecutor:
    config = Service("spec", svc.url, Secret(EXEC_TOKEN, "$TOKEN"), 4, 0.2)
    client = PinningServiceClient("spec", svc.url, config.token, timeout=0.2, read_retries=0)
    return ServiceExecutor(config, client, store, None, retry=RetryPolicy(base=0.01, cap=0.05))


async def test_what_lookups_learn_is_committed_as_they_go(tmp_path: Path) -> None:
    """300 adds whose answers were lost; the service stops answering lookups partway. The
    lookups that were answered are committed: a crash or hang there does not throw them away
    (before, all 300 stayed intents, and repeated crashes never got past the step)."""
    store = await StateStore.open(tmp_path / "state.db")
    local = {cid: f"f{i}" for i, cid in enumerate(random_cids(300))}
    async with FakePinningService(token=EXEC_TOKEN) as svc:
        svc.inject(Fault("reset", after_apply=True), method="POST", times=None)
        executor = executor_for(svc, store)
        async with executor.client:
            await executor.sync(local, ONLINE)
            rows = await store.remote_pins("spec")
            assert sum(r.status is RemoteStatus.INTENT for r in rows.values()) == 300
            await store.save(replace(r, updated=1.0, stamp=LONG_AGO) for r in rows.values())
            svc.clear_faults()
            svc.inject(Fault("hang", delay=5), method="GET", skip=12, times=None)
            report = await executor.sync(local, ONLINE, send=False)
        assert report.error, "the cycle ended with the lookup error"
    rows = await store.remote_pins("spec")
    await store.close()
    settled = [r for r in rows.values() if r.status is not RemoteStatus.INTENT]
    assert len(settled) >= 50  # at least one batch of lookups
    assert all(r.requestid for r in settled)


async def test_an_intent_for_a_cid_that_does_not_parse_is_dropped(tmp_path: Path) -> None:
    """An intent left by an older version for a CID that does not parse used to crash the
    service's cycle at every start (the lookup cannot be asked): it is dropped, the rest go."""
    store = await StateStore.open(tmp_path / "state.db")
    await store.save(
        [RemotePin("spec", "bafy-not-a-cid", RemoteStatus.INTENT, updated=1.0, stamp=LONG_AGO)]
    )
    local = {cid: f"f{i}" for i, cid in enumerate(random_cids(20))}
    async with FakePinningService(token=EXEC_TOKEN) as svc:
        executor = executor_for(svc, store)
        async with executor.client:
            report = await executor.sync(local, ONLINE)
        assert report.added == 20 and not report.errors
        assert all(len(svc.pins_for_cid(cid)) == 1 for cid in local)
    rows = await store.remote_pins("spec")
    await store.close()
    assert "bafy-not-a-cid" not in rows and len(rows) == 20


# --- the wall clock steps (the boot clock measures how old an intent is) --------------------


async def _intents_written_now(
    tmp_path: Path, count: int, *, wall_clock_step: float
) -> tuple[StateStore, dict[str, str]]:
    """`count` intents written now on the boot clock, whose wall time has since stepped by
    `wall_clock_step` seconds."""
    store = await StateStore.open(tmp_path / "state.db")
    local = {cid: f"f{i}" for i, cid in enumerate(random_cids(count))}
    written = time.time() - wall_clock_step
    await store.save(
        RemotePin("spec", cid, RemoteStatus.INTENT, name=name, updated=written, stamp=clock.stamp())
        for cid, name in local.items()
    )
    return store, local


async def test_a_clock_step_forward_does_not_shorten_an_intents_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five adds were sent a moment ago and the service is still handling them; then the wall
    clock steps forward an hour (NTP, a laptop waking up) and pinsyncd restarts. Before, the
    intents looked an hour old: they were looked up at once, not found, and added again (5
    duplicates). Their age is on the boot clock now: they wait out their grace, and are then
    found by lookup. Nothing is added twice."""
    boot = clock.boot_seconds()
    monkeypatch.setattr(clock, "boot_seconds", lambda: boot)
    # Written "an hour ago", as the stepped wall clock sees it.
    store, local = await _intents_written_now(tmp_path, 5, wall_clock_step=+3600)
    async with FakePinningService(token=EXEC_TOKEN) as svc:
        executor = executor_for(svc, store)
        async with executor.client:
            await executor.sync(local, ONLINE)  # a restarted process, at once
            assert svc.count(method="POST") == 0
            waiting = await store.remote_pins("spec")  # not looked up: still in their grace
            assert {r.status for r in waiting.values()} == {RemoteStatus.INTENT}
            for cid, name in local.items():  # the service has finished handling them
                svc.add_pin(cid, name=name, status="pinned")
            monkeypatch.setattr(clock, "boot_seconds", lambda: boot + executor.intent_grace + 1)
            await executor.sync(local, ONLINE)
        assert svc.count(method="POST") == 0
        assert all(len(svc.pins_for_cid(cid)) == 1 for cid in local)
    rows = await store.remote_pins("spec")
    await store.close()
    assert {r.status for r in rows.values()} == {RemoteStatus.PINNED}


async def test_a_clock_step_back_does_not_stall_an_intent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wall clock steps back an hour after an add whose answer was lost. Before, its
    intent waited that hour (its age was negative); on the boot clock it is looked up once
    its grace is over."""
    boot = clock.boot_seconds()
    monkeypatch.setattr(clock, "boot_seconds", lambda: boot)
    # Written "in an hour", as the stepped-back wall clock sees it.
    store, local = await _intents_written_now(tmp_path, 3, wall_clock_step=-3600)
    async with FakePinningService(token=EXEC_TOKEN) as svc:
        executor = executor_for(svc, store)
        async with executor.client:
            await executor.sync({}, ONLINE)  # first contact done: only a lookup finds them
            for cid, name in local.items():
                svc.add_pin(cid, name=name, status="pinned")
            monkeypatch.setattr(clock, "boot_seconds", lambda: boot + executor.intent_grace + 1)
            await executor.sync(local, ONLINE)
        assert svc.count(method="POST") == 0
    rows = await store.remote_pins("spec")
    await store.close()
    assert {r.status for r in rows.values()} == {RemoteStatus.PINNED}
