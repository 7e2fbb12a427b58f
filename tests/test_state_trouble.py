"""A state file that is damaged or cannot be written: the real CLI and daemon as
subprocesses, loopback servers, real SQLite files overwritten or denied room to grow.

Damage is never fatal and never silent: readers say so in one line, a writer sets the file
aside (nothing is deleted) and rebuilds from the services, adopting what is there, so not one
pin is requested twice. A state file that cannot grow (full disk) does not stop the daemon:
/healthz says why, and it carries on by itself once there is room."""

from __future__ import annotations

import asyncio
import json
import random
import resource
import signal
import sqlite3
from pathlib import Path

import aiohttp
import pytest

from pinsyncd.config import load_config
from pinsyncd.daemon import Daemon
from pinsyncd.store import StateDamaged, StateStore
from tests.cidgen import random_cids
from tests.daemon_helpers import ServiceSpec, acli, log_events, start_daemon, write_config
from tests.fake_kubo import FakeKubo
from tests.fake_psa import FakePinningService
from tests.test_hostile_state import free_port, wait_for

TOKEN = "state-trouble-token"


def damage(path: Path, offset: int, size: int = 4096, seed: int = 7) -> None:
    """Overwrite `size` bytes of `path` at `offset` with random bytes (repeatable)."""
    noise = random.Random(seed).randbytes(size)
    with path.open("r+b") as file:
        file.seek(offset)
        file.write(noise)


def _config(
    path: Path, node: FakeKubo, svc: FakePinningService, http_listen: str | None = None
) -> dict[str, str]:
    """One service, a 1 s interval, short backoff; returns the env with the token."""
    return write_config(
        path,
        node_api=node.url,
        services=[ServiceSpec("alpha", svc.url, TOKEN)],
        interval="1s",
        retry="base: 100ms\ncap: 500ms",
        http_listen=http_listen,
    )


def _middle_page_of(state: Path, table: str) -> int:
    """The index (from 0) of the middle one of `table`'s pages in the file: damage there
    hits rows that every reader reads, wherever the schema puts its other tables."""
    db = sqlite3.connect(state)
    try:
        pages = [n for (n,) in db.execute("SELECT pageno FROM dbstat WHERE name=?", (table,))]
    finally:
        db.close()
    assert len(pages) >= 2, pages
    return sorted(pages)[len(pages) // 2] - 1  # dbstat counts pages from 1


async def _synced_state(
    tmp_path: Path, node: FakeKubo, svc: FakePinningService
) -> tuple[Path, dict[str, str]]:
    config = tmp_path / "config.yaml"
    env = _config(config, node, svc)
    code, _out, err = await acli(["sync", "--wait", "-c", str(config)], env)
    assert code == 0, err
    return config, env


@pytest.mark.parametrize("where", ["header", "middle"])
@pytest.mark.slow
async def test_a_damaged_state_file_is_set_aside_and_rebuilt_without_a_second_request(
    tmp_path: Path, where: str
) -> None:
    async with (
        FakeKubo(pins=50) as node,
        FakePinningService(token=TOKEN, transition_after=0.0) as svc,
    ):
        config, env = await _synced_state(tmp_path, node, svc)
        state = tmp_path / "state.db"
        # Fold the WAL in, so the damage hits what the next process reads.
        code, _out, err = await acli(["status", "-c", str(config)], env)
        assert code == 0, err
        store = await StateStore.open(state)
        await store.close()
        size = state.stat().st_size
        assert size >= 3 * 4096
        damage(state, 0 if where == "header" else _middle_page_of(state, "remote_pins") * 4096)
        damaged = state.read_bytes()
        adds = svc.count(method="POST")
        assert adds == 50

        code, out, err = await acli(["status", "-c", str(config)], env)
        assert code == 1
        assert "Traceback" not in err + out
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "is damaged" in lines[0] and "sets it aside" in lines[0]

        with pytest.raises(StateDamaged):
            await StateStore.open(state)

        code, out, err = await acli(["sync", "--wait", "-c", str(config)], env)
        assert code == 0, err
        assert "Traceback" not in err
        asides = sorted(tmp_path.glob("state.db.damaged-*"))  # noqa: ASYNC240
        assert [p.name for p in asides if not p.name.endswith(("-wal", "-shm"))]
        kept = next(p for p in asides if not p.name.endswith(("-wal", "-shm")))
        assert kept.read_bytes() == damaged  # set aside as it was, not deleted or "repaired"
        warning = [e for e in log_events(err) if e.get("level") == "warning"]
        assert any("is damaged" in e["event"] and kept.name in e["event"] for e in warning)
        # Rebuilt by adopting the service's 50 pins: not one more add.
        assert svc.count(method="POST") == adds
        assert all(len(svc.pins_for_cid(cid)) == 1 for cid in node.pinset())
        code, out, err = await acli(["status", "--json", "-c", str(config)], env)
        assert code == 0, err
        assert json.loads(out)["services"]["alpha"]["pinned"] == 50


async def _spawn_daemon(
    config: Path, env: dict[str, str], lines: list[str]
) -> tuple[asyncio.subprocess.Process, asyncio.Task[None]]:
    """The daemon, logging into a pipe (a file log would itself hit the size limit)."""
    daemon = await start_daemon(config, env, None)

    async def drain() -> None:
        assert daemon.stdout is not None
        async for line in daemon.stdout:
            lines.append(line.decode())

    return daemon, asyncio.create_task(drain())


async def _health(port: int) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/healthz") as response,
    ):
        return response.status, await response.text()


@pytest.mark.slow
async def test_a_state_file_that_cannot_grow_pauses_sending_and_resumes_by_itself(
    tmp_path: Path,
) -> None:
    """The daemon may not make its state file any bigger (RLIMIT_FSIZE: what a full disk
    looks like to SQLite). It keeps running, sends no add (none could have a committed
    intent), says so once and on /healthz, and once there is room syncs what came meanwhile:
    every CID pinned exactly once."""
    async with (
        FakeKubo(pins=20) as node,
        FakePinningService(token=TOKEN, transition_after=0.0) as svc,
    ):
        port = free_port()
        config = tmp_path / "config.yaml"
        env = _config(config, node, svc, http_listen=f"127.0.0.1:{port}")
        lines: list[str] = []
        daemon, drain = await _spawn_daemon(config, env, lines)
        try:
            await wait_for(lambda: svc.count(method="POST") == 20, 60, "20 pins added")
            await wait_for(lambda: bool(node.calls["pin/ls"] >= 3), 30, "a few listings")
            limit = 4096  # smaller than any write the state file needs now
            resource.prlimit(daemon.pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
            node.extra = {cid: f"new-{i}" for i, cid in enumerate(random_cids(10))}
            listed = node.calls["pin/ls"]
            await wait_for(lambda: node.calls["pin/ls"] >= listed + 4, 60, "four listings")
            code, body = await _health(port)
            assert code == 503 and "state file cannot be written" in body, body
            code, out, err = await acli(["status", "-c", str(config)], env)
            assert code == 0, err
            assert "daemon: NOT HEALTHY: the state file cannot be written" in out, out
            assert svc.count(method="POST") == 20  # no add without a committed intent
            assert daemon.returncode is None
            warnings = [
                e for e in log_events("".join(lines)) if "cannot write the state file" in e["event"]
            ]
            assert len(warnings) == 1, warnings

            resource.prlimit(daemon.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
            await wait_for(lambda: svc.count(method="POST") == 30, 60, "the 10 new pins added")
            for _ in range(100):  # the next write that works clears the problem
                code, body = await _health(port)
                if code == 200:
                    break
                await asyncio.sleep(0.1)
            assert code == 200, body
        finally:
            daemon.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(daemon.wait(), 30) == 0
            await drain
    events = log_events("".join(lines))
    assert any("can be written again" in e["event"] for e in events)
    assert "Traceback" not in "".join(lines)
    assert all(len(svc.pins_for_cid(cid)) == 1 for cid in node.pinset())


async def test_damage_found_while_the_daemon_runs_restarts_it_on_a_fresh_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is overwritten under the running daemon (in process here, so that its page
    cache can be dropped and SQLite reads the damage). The daemon sets the file aside and
    carries on with a fresh one, adopting the service's pins: it does not exit, and asks for
    nothing twice."""
    async with (
        FakeKubo(pins=300) as node,
        FakePinningService(token=TOKEN, transition_after=0.0) as svc,
    ):
        config_path = tmp_path / "config.yaml"
        env = _config(config_path, node, svc)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        daemon = Daemon(load_config(config_path), watch_config=False)
        running = asyncio.create_task(daemon.run())
        try:
            await wait_for(lambda: svc.count(method="POST") == 300, 60, "300 pins added")
            state = tmp_path / "state.db"
            store = daemon._store
            assert store is not None
            await store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            size = state.stat().st_size
            for offset in range(0, size, 2 * 4096):
                damage(state, offset, seed=offset)
            await store._db.execute("PRAGMA shrink_memory")  # what it cached is gone
            node.extra = {cid: f"new-{i}" for i, cid in enumerate(random_cids(5))}
            await wait_for(
                lambda: any(p.name.startswith("state.db.damaged-") for p in tmp_path.iterdir()),
                30,
                "the damaged file set aside",
            )
            await wait_for(lambda: svc.count(method="POST") == 305, 60, "the 5 new pins added")
            assert not running.done()
        finally:
            daemon.stop()
            assert await asyncio.wait_for(running, 30) == 0
    assert all(len(svc.pins_for_cid(cid)) == 1 for cid in node.pinset())
