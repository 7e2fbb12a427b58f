"""kill -9 in the middle of a large initial sync, several times: every CID must end on the
service exactly once. Run against our spec-faithful service, which (unlike the npm mock)
creates a new request for every add, so a duplicate would be visible."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import Callable
from pathlib import Path

from pinsyncd.kubo import LocalNode
from tests.conftest import seed_pins
from tests.daemon_helpers import ServiceSpec, acli, start_daemon, write_config
from tests.fake_psa import FakePinningService, Fault
from tests.peers import KuboNode
from tests.test_hostile_state import wait_for

PINS = 600
KILLS = 5


async def test_kill_9_during_initial_sync_never_pins_twice(
    kubo_factory: Callable[..., KuboNode], tmp_path: Path
) -> None:
    node = kubo_factory("crash")
    await seed_pins(node.api_url, PINS, "crash")
    async with LocalNode(node.api_url) as client:
        local = {pin.cid async for pin in client.iter_pins()}
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    async with FakePinningService(token="crash-token", transition_after=0.2) as svc:
        # Every add takes a little while, so that the kills land in the middle of the sync.
        svc.chaos(1.0, kinds=[Fault("slow", delay=0.03)], method="POST", seed=seed)
        config = tmp_path / "config.yaml"
        env = write_config(
            config,
            node_api=node.api_url,
            services=[ServiceSpec("spec", svc.url, "crash-token", concurrency=4, timeout="1s")],
            interval="1h",
            status_interval="300ms",
        )
        on_service_after_kill: list[int] = []
        intents_after_kill: list[int] = []
        for kill in range(KILLS):
            sent = svc.count(method="POST", path_prefix="/pins")
            daemon = await start_daemon(config, env, tmp_path / f"daemon-{kill}.log")
            # Killed while it sends, however long this machine takes to start it: once its
            # first add arrived, at a random moment in the next 0.6 s.
            await wait_for(
                lambda sent=sent: (
                    svc.count(method="POST", path_prefix="/pins") > sent
                    or len(svc.pins) >= len(local)
                ),
                120,
                "the daemon sending",
            )
            await asyncio.sleep(rng.uniform(0.0, 0.6))
            daemon.kill()
            await daemon.wait()
            on_service_after_kill.append(len(svc.pins))
            intents_after_kill.append(count_intents(tmp_path / "state.db"))
        svc.chaos(0)
        code, _, stderr = await acli(
            ["sync", "--once", "--wait", "--timeout", "60s", "-c", str(config)], env
        )
        assert code == 0, stderr

    report = (
        f"seed={seed} pins={len(local)} kills={KILLS} on service after each kill="
        f"{on_service_after_kill} intents left by each kill={intents_after_kill} "
        f"adds sent={svc.count(method='POST', path_prefix='/pins')}"
    )
    print("\n" + report)
    assert any(0 < n < len(local) for n in on_service_after_kill), f"no kill mid-sync: {report}"
    duplicates = {cid: n for cid in local if (n := len(svc.pins_for_cid(cid))) != 1}
    assert duplicates == {}, f"{report}: CIDs not exactly once: {list(duplicates.items())[:5]}"
    assert len(svc.pins) == len(local), report


def count_intents(state: Path) -> int:
    if not state.exists():
        return 0
    db = sqlite3.connect(state)
    try:
        return db.execute("SELECT COUNT(*) FROM remote_pins WHERE status='intent'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()
