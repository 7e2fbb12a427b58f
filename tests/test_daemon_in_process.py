"""The daemon in this test's own event loop (the subprocess tests cover signals, systemd and
the CLI): its first listing and cycles, `sync --once --wait` and `retry` asked over its real
control socket, a reload that adds a service whose token is refused, and a clean stop that
frees the state file. Loopback servers: our Kubo RPC fake and our Pinning Service fakes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from pinsyncd import control
from pinsyncd.config import load_config
from pinsyncd.daemon import Daemon
from pinsyncd.lock import StateLock
from pinsyncd.store.readonly import read_status
from tests.cidgen import random_cids
from tests.daemon_helpers import ServiceSpec, write_config
from tests.fake_kubo import FakeKubo
from tests.fake_psa import FakePinningService
from tests.test_hostile_state import wait_for

TOKEN = "in-process-token"


async def ask(state: Path, command: str, body: dict[str, Any]) -> tuple[int, str | None, list[str]]:
    """What `pinsyncd <command>` typed beside the daemon gets: exit code, error, lines."""
    lines: list[str] = []
    answer = await control.ask(
        control.socket_path(state), command, body, lambda line: lines.append(str(line))
    )
    assert answer is not None, "the daemon did not answer on its control socket"
    code, error = answer
    return code, error, lines


async def test_the_daemon_in_process_from_start_to_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        FakeKubo(pins=40) as node,
        FakePinningService(token=TOKEN, transition_after=0.0) as alpha,
        FakePinningService(token=TOKEN, transition_after=0.0) as beta,
    ):
        config_path = tmp_path / "config.yaml"
        state = tmp_path / "state.db"
        env = write_config(
            config_path, node_api=node.url, services=[ServiceSpec("alpha", alpha.url, TOKEN)]
        )
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        daemon = Daemon(load_config(config_path), watch_config=False)
        running = asyncio.create_task(daemon.run())
        try:
            # The first listing and cycle, then status rounds until every pin is pinned.
            await wait_for(lambda: alpha.count(method="POST") == 40, 60, "40 pins added")
            await wait_for(
                lambda: read_status(state, ["alpha"])["services"]["alpha"]["pinned"] == 40,
                60,
                "40 pinned",
            )
            assert daemon.cycles >= 1 and not running.done()

            # `sync --once --wait` beside it: a listing and a cycle now, 5 new pins.
            node.extra = {cid: f"new-{i}" for i, cid in enumerate(random_cids(5))}
            code, error, lines = await ask(state, "sync", {"wait": True, "timeout": 60})
            assert (code, error) == (0, None), lines
            assert any("node listed" in line for line in lines), lines
            assert alpha.count(method="POST") == 45
            assert read_status(state, ["alpha"])["services"]["alpha"]["pinned"] == 45

            # A reload adds beta, whose token is refused: beta is paused and says why,
            # alpha goes on, and `sync --once` reports the paused service with exit 1.
            env = write_config(
                config_path,
                node_api=node.url,
                services=[
                    ServiceSpec("alpha", alpha.url, TOKEN),
                    ServiceSpec("beta", beta.url, "not-the-token"),
                ],
            )
            for key, value in env.items():
                monkeypatch.setenv(key, value)
            daemon.reload()
            await wait_for(lambda: daemon.reloads == 1, 30, "the reload")
            await wait_for(
                lambda: bool(read_status(state, ["alpha", "beta"])["services"]["beta"]["paused"]),
                30,
                "beta paused",
            )
            status = read_status(state, ["alpha", "beta"])["services"]
            assert "token" in status["beta"]["paused"]
            assert beta.count(method="POST") == 0
            assert status["alpha"]["pinned"] == 45
            code, error, lines = await ask(state, "sync", {"wait": False})
            assert code == 69 and error and "beta: paused: the token" in error, (error, lines)

            # With the right token, `retry` clears the pause and beta gets every pin once.
            monkeypatch.setenv(ServiceSpec("beta", beta.url, TOKEN).env_var, TOKEN)
            daemon.reload()
            await wait_for(lambda: daemon.reloads == 2, 30, "the second reload")
            code, error, lines = await ask(state, "retry", {"services": ["beta"], "cids": None})
            assert (code, error) == (0, None), lines
            await wait_for(lambda: beta.count(method="POST") == 45, 60, "beta's 45 adds")
        finally:
            daemon.stop()
            assert await asyncio.wait_for(running, 30) == 0

    # Stopped cleanly: the state file is free for the next writer, the socket is gone, and
    # no CID was asked for twice anywhere.
    lock = StateLock(state)
    assert lock.try_acquire("test") is None
    lock.release()
    assert not control.socket_path(state).exists()
    for service in (alpha, beta):
        assert all(len(service.pins_for_cid(cid)) == 1 for cid in node.pinset())
