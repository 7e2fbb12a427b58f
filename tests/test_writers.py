"""One writer per state file, for every command: the daemon and one-shot commands as real
subprocesses on one state file, against our fake service and fake Kubo over real sockets."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from pinsyncd.lock import EX_LOCKED, StateLock
from tests.daemon_helpers import (
    ServiceSpec,
    acli,
    log_events,
    start_daemon,
    write_config,
)
from tests.fake_kubo import FakeKubo, generated_cid
from tests.fake_psa import FakePinningService, Fault

TOKEN = "writers-secret-token-4242"


@pytest.fixture
async def service() -> AsyncIterator[FakePinningService]:
    async with FakePinningService(token=TOKEN, transition_after=0.3) as svc:
        yield svc


async def eventually(check: Callable[[], bool], what: str, limit: float = 60.0) -> None:
    """Poll `check` (a condition of the world, not a timing claim) until it holds."""
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.05)


async def daemon_ready(state: Path, process: asyncio.subprocess.Process) -> None:
    socket = state.with_name(state.name + ".sock")
    await eventually(lambda: socket.exists() or process.returncode is not None, "daemon up")
    assert process.returncode is None, "the daemon exited"


async def stop(process: asyncio.subprocess.Process) -> int:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(process.wait(), 60)


def each_once(service: FakePinningService, cids: list[str]) -> dict[int, int]:
    """How many CIDs have how many requests on the service."""
    counts: dict[int, int] = {}
    for cid in cids:
        n = len(service.pins_for_cid(cid))
        counts[n] = counts.get(n, 0) + 1
    return counts


@pytest.mark.slow
async def test_a_daemon_and_two_sync_once_together_pin_every_cid_once(
    service: FakePinningService, tmp_path: Path
) -> None:
    """The issue's case: a daemon and two `sync --once` (one with --wait) started at the same
    instant on a fresh state, 400 CIDs: every CID is added exactly once."""
    async with FakeKubo(pins=400) as node:
        config = tmp_path / "config.yaml"
        env = write_config(
            config,
            node_api=node.url,
            services=[ServiceSpec("spec", service.url, TOKEN, concurrency=8)],
        )
        log = tmp_path / "daemon.log"
        daemon, first, second = await asyncio.gather(
            start_daemon(config, env, log),
            acli(["sync", "--once", "-c", str(config)], env),
            acli(["sync", "--once", "--wait", "--timeout", "90s", "-c", str(config)], env),
        )
        try:
            for code, out, err in (first, second):
                assert code == 0, err
                assert "Traceback" not in err + out
            cids = list(node.pinset())
            await eventually(lambda: each_once(service, cids) == {1: 400}, "400 pinned once")
            assert service.request_counts()["add"] == 400
            assert daemon.returncode is None, log.read_text()
        finally:
            assert await stop(daemon) == 0
        assert "Traceback" not in log.read_text()


@pytest.mark.slow
async def test_beside_the_daemon_commands_ask_it_and_a_second_daemon_refuses(
    service: FakePinningService, tmp_path: Path
) -> None:
    async with FakeKubo(pins=50) as node:
        config = tmp_path / "config.yaml"
        env = write_config(
            config, node_api=node.url, services=[ServiceSpec("spec", service.url, TOKEN)]
        )
        state = tmp_path / "state.db"
        log = tmp_path / "daemon.log"
        daemon = await start_daemon(config, env, log)
        try:
            await daemon_ready(state, daemon)
            holder = json.loads((tmp_path / "state.db.lock").read_text())
            assert holder == {"pid": daemon.pid, "command": "run"}

            code, out, err = await acli(["run", "-c", str(config)], env, limit=30)
            assert code == EX_LOCKED
            (line,) = [e["event"] for e in log_events(err)]
            assert f"the daemon (PID {daemon.pid}) already runs on the state file {state}" in line

            code, out, err = await acli(["sync", "--once", "--wait", "-c", str(config)], env)
            assert code == 0, err
            assert f"the daemon (PID {daemon.pid}) runs on {state}; it does the sync now" in err
            cycles = [e for e in log_events(err) if e["event"] == "service cycle"]
            assert cycles and cycles[-1]["service"] == "spec"
            assert each_once(service, list(node.pinset())) == {1: 50}

            node.extra[generated_cid(1, "later")] = "later"  # a new pin, and the token
            service.inject(Fault("status", 401), times=None)  # is refused
            code, out, err = await acli(["sync", "--once", "-c", str(config)], env)
            assert code == 69, "the same exit code as when run alone (a paused service)"
            assert "spec: paused: the token from $PINSYNCD_TEST_TOKEN_SPEC was refused" in err
            service.clear_faults()

            code, out, err = await acli(["retry", "-c", str(config)], env)
            assert code == 0, err
            assert "1 paused service will be tried again now" in out
            cids = list(node.pinset())
            await eventually(lambda: each_once(service, cids) == {1: 51}, "the new pin too")

            code, out, err = await acli(["adopt", "--service", "spec", "-c", str(config)], env)
            assert code == 0, err
            assert "spec: 0 existing pins adopted" in out
            assert each_once(service, cids) == {1: 51}, "nothing was ever added twice"
        finally:
            assert await stop(daemon) == 0
        assert not (tmp_path / "state.db.sock").exists(), "the socket goes with the daemon"


async def test_kill_9_leaves_no_stale_lock(service: FakePinningService, tmp_path: Path) -> None:
    async with FakeKubo(pins=20) as node:
        config = tmp_path / "config.yaml"
        env = write_config(
            config, node_api=node.url, services=[ServiceSpec("spec", service.url, TOKEN)]
        )
        state = tmp_path / "state.db"
        first = await start_daemon(config, env, tmp_path / "first.log")
        await daemon_ready(state, first)
        first.send_signal(signal.SIGKILL)
        await first.wait()
        assert StateLock(state).holder() is None, "the kernel dropped the lock"
        log = tmp_path / "second.log"
        second = await start_daemon(config, env, log)
        try:
            await eventually(
                lambda: (
                    any(e["event"] == "pinsyncd started" for e in log_events(log.read_text()))
                    or second.returncode is not None
                ),
                "the second daemon started",
            )
            assert second.returncode is None
            assert "waiting for" not in log.read_text()
            code, _, err = await acli(["sync", "--once", "-c", str(config)], env)
            assert code == 0 and f"(PID {second.pid})" in err, "and answers on its socket"
            # Adds the first daemon had under way when killed are intents: the second one
            # settles them by lookup once their grace time is over, never by a second add.
            cids = list(node.pinset())
            await eventually(lambda: each_once(service, cids) == {1: 20}, "20 pinned once")
        finally:
            assert await stop(second) == 0
        assert each_once(service, list(node.pinset())) == {1: 20}


async def test_a_one_shot_holder_is_waited_for_by_every_other_writer(
    service: FakePinningService, tmp_path: Path
) -> None:
    """While a one-shot command holds the state (here: this test, as `pinsyncd sync`), a
    daemon and a `retry` wait for it, say so once, and go on when it is done."""
    async with FakeKubo(pins=5) as node:
        config = tmp_path / "config.yaml"
        env = write_config(
            config, node_api=node.url, services=[ServiceSpec("spec", service.url, TOKEN)]
        )
        state = tmp_path / "state.db"
        lock = StateLock(state)
        assert lock.try_acquire("sync") is None
        log = tmp_path / "daemon.log"
        daemon = await start_daemon(config, env, log)
        retry = await asyncio.create_subprocess_exec(
            sys.executable,
            *["-m", "pinsyncd", "retry", "-c", str(config), "--log-format", "json"],
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert retry.stderr is not None
        try:
            waiting = f"waiting for pinsyncd sync (PID {os.getpid()}) to finish with the state"
            await eventually(lambda: waiting in log.read_text(), "the daemon waits")
            # The lock is let go only once `retry` is waiting too (a slow start could
            # otherwise find it free).
            first = (await asyncio.wait_for(retry.stderr.readline(), 60)).decode()
            assert waiting in first, first
            assert service.requests == [], "nothing was sent while the lock was held"
            assert retry.returncode is None
        finally:
            lock.release()
        _out, rest = await asyncio.wait_for(retry.communicate(), 120)
        err = first + rest.decode()
        assert retry.returncode == 0, err
        assert err.count(waiting) == 1, err
        await daemon_ready(state, daemon)
        await eventually(lambda: each_once(service, list(node.pinset())) == {1: 5}, "pinned")
        assert await stop(daemon) == 0


@pytest.mark.slow
async def test_status_dry_run_and_metrics_need_no_token(tmp_path: Path) -> None:
    """The systemd layout: tokens in `${CREDENTIALS_DIRECTORY}`, which a shell does not have.
    Read-only commands work without it and print no token; a command the daemon carries
    out needs none either; one that would send alone says which token it lacks (exit 78)."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "spec").write_text(TOKEN)
    (credentials / "spec").chmod(0o600)
    async with (
        FakeKubo(pins=30) as node,
        FakePinningService(token=TOKEN, transition_after=0.3) as service,
    ):
        config = tmp_path / "config.yaml"
        env = write_config(
            config,
            node_api=node.url,
            services=[ServiceSpec("spec", service.url, TOKEN)],
            http_listen="127.0.0.1:0",
        )
        text = config.read_text().replace(
            f"token_env: {ServiceSpec('spec', '', '').env_var}",
            "token_file: ${CREDENTIALS_DIRECTORY}/spec",
        )
        config.write_text(text)
        shell = {k: v for k, v in env.items() if not k.startswith("PINSYNCD_TEST_TOKEN")}
        shell.pop("CREDENTIALS_DIRECTORY", None)

        for args in (
            ["status"],
            ["status", "--json"],
            ["status", "--failed"],
            ["sync", "--dry-run"],
        ):
            code, out, err = await acli([*args, "-c", str(config)], shell)
            assert code == 0, (args, err)
            assert TOKEN not in out + err

        code, out, err = await acli(["sync", "--once", "-c", str(config)], shell)
        assert code == 78
        assert re.search(r"services\[0\]\.token_file: .*CREDENTIALS_DIRECTORY.*not set", err), err
        assert service.requests == []

        unit = {**shell, "CREDENTIALS_DIRECTORY": str(credentials)}
        log = tmp_path / "daemon.log"
        daemon = await start_daemon(config, unit, log)
        try:
            await daemon_ready(tmp_path / "state.db", daemon)
            code, out, err = await acli(["sync", "--once", "--wait", "-c", str(config)], shell)
            assert code == 0, err
            assert TOKEN not in out + err
            code, out, err = await acli(["status", "--json", "-c", str(config)], shell)
            assert code == 0 and json.loads(out)["services"]["spec"]["pinned"] == 30
            started = next(
                e for e in log_events(log.read_text()) if e["event"] == "HTTP API listening"
            )
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{started['url']}/metrics") as response,
            ):
                metrics = await response.text()
            assert 'pinsyncd_pins{service="spec",status="pinned"} 30.0' in metrics
            assert TOKEN not in metrics
        finally:
            assert await stop(daemon) == 0
        assert TOKEN not in log.read_text()
