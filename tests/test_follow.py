"""How soon pending requests are looked at again (`pinsyncd.follow`), and what it gives a
user: `sync --once --wait` with the default `status_interval` (a minute) returns seconds
after a service that pins in half a second has pinned everything, where it took a minute.
The tight figure is `benchmarks/confirm_latency.py`'s; here only a generous bound."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from pinsyncd.config import load_config
from pinsyncd.daemon import Daemon
from pinsyncd.follow import FollowUp
from pinsyncd.model import RemotePin, RemoteStatus
from pinsyncd.planner import plan_service
from pinsyncd.store.readonly import read_status
from tests.daemon_helpers import ServiceSpec, acli, log_events, write_config
from tests.fake_kubo import FakeKubo
from tests.fake_psa import FakePinningService
from tests.test_hostile_state import wait_for

TOKEN = "follow-token"


def test_soon_after_a_send_then_twice_as_long_up_to_the_interval() -> None:
    follow = FollowUp(ceiling=60.0)
    waits = [follow.after(sent=300, pending=300)]
    waits += [follow.after(sent=0, pending=300) for _ in range(8)]
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    assert follow.after(sent=1, pending=301) == 1.0, "something new: soon again"
    assert follow.after(sent=0, pending=0) is None, "nothing pending: no status round"
    assert follow.after(sent=0, pending=5) == 1.0, "and a new pending set starts soon"


def test_an_intent_is_looked_up_at_the_first_round_after_its_grace() -> None:
    follow = FollowUp(ceiling=60.0)
    for _ in range(7):
        follow.after(sent=0, pending=10)  # the step has grown to a minute
    assert follow.after(sent=0, pending=10, intents_due_in=3.5) == 3.5
    assert follow.after(sent=0, pending=10, intents_due_in=0.0) == 0.05
    assert FollowUp(ceiling=0.5).after(sent=1, pending=1) == 0.5, "never above the interval"


def test_the_plan_says_when_the_first_intent_leaves_its_grace() -> None:
    rows = {
        cid: RemotePin("svc", cid, RemoteStatus.INTENT, updated=100.0 - age)
        for cid, age in (("a", 5.0), ("b", 25.0), ("c", 70.0))
    }
    plan = plan_service(
        "svc", {c: "" for c in rows}, rows, now=100.0, adopted=True, intent_grace=60.0
    )
    assert plan.resolve == ["c"] and plan.waiting == 2
    assert plan.intents_due_in == 35.0, "b's grace ends first"
    none = plan_service("svc", {}, {}, now=100.0, adopted=True, intent_grace=60.0)
    assert none.intents_due_in is None


@pytest.mark.slow  # the CLI as a subprocess
async def test_sync_wait_returns_seconds_after_the_last_pin_is_pinned(tmp_path: Path) -> None:
    async with (
        FakeKubo(pins=300) as node,
        FakePinningService(token=TOKEN, transition_after=0.25) as alpha,
        FakePinningService(token=TOKEN, transition_after=0.25) as beta,
    ):
        config = tmp_path / "config.yaml"
        env = write_config(
            config,
            node_api=node.url,
            services=[ServiceSpec("alpha", alpha.url, TOKEN), ServiceSpec("beta", beta.url, TOKEN)],
            status_interval="1m",  # the default
        )
        started = time.monotonic()
        code, _out, err = await acli(["sync", "--once", "--wait", "-c", str(config)], env)
        took = time.monotonic() - started
    assert code == 0, err
    assert took < 30, f"{took:.1f}s: the wait still polls once per status_interval"
    cycles = [e for e in log_events(err) if e["event"] in ("cycle done", "status round")]
    assert alpha.count(method="POST") == beta.count(method="POST") == 300
    assert alpha.count(method="GET") <= 2 * len(cycles), "one list per round, no GET per pin"


async def test_the_daemon_sees_new_pins_pinned_within_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon (in this event loop) with the default status_interval: a pin that the
    service pins in half a second shows as pinned in `status` seconds later, not a minute."""
    async with (
        FakeKubo(pins=20) as node,
        FakePinningService(token=TOKEN, transition_after=0.25) as alpha,
    ):
        config = tmp_path / "config.yaml"
        env = write_config(
            config,
            node_api=node.url,
            services=[ServiceSpec("alpha", alpha.url, TOKEN)],
            status_interval="1m",
        )
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        daemon = Daemon(load_config(config), watch_config=False)
        running = asyncio.create_task(daemon.run())
        try:
            started = time.monotonic()
            await wait_for(
                lambda: (
                    read_status(tmp_path / "state.db", ["alpha"])["services"]["alpha"]["pinned"]
                    == 20
                ),
                30,
                "20 pinned",
            )
            assert time.monotonic() - started < 30
        finally:
            daemon.stop()
            await asyncio.wait_for(running, 30)
