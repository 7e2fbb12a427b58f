"""`pinsyncd restore` as a user types it (the real CLI as a subprocess), on our loopback fakes:
which requests it takes (whose, which CIDs and names, from which service), what it says when
some cannot come back, and how it fails: a node that is down or goes away, a daemon on the
state file, a bad CID, an unknown service. The data really moving is in test_restore.py."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from pinsyncd.cids import other_spellings
from pinsyncd.ownership import APP_ID
from tests.cidgen import random_cids
from tests.daemon_helpers import ServiceSpec, acli, start_daemon, write_config
from tests.fake_kubo import FakeKubo
from tests.fake_psa import FakePinningService

TOKEN = "restore-token"
OLD_LAPTOP = "12D3KooWGoneLaptopGoneLaptopGoneLaptopGoneLaptopGoneLaptop"
NOBODY = "12D3KooWAnotherDeviceAnotherDeviceAnotherDeviceAnotherDev"


def meta(node: str, name: str = "") -> dict[str, str]:
    made = {"app_id": APP_ID, "node": node}
    return made | ({"local_name": name} if name else {})


@dataclass
class World:
    node: FakeKubo
    alpha: FakePinningService
    beta: FakePinningService
    config: Path
    env: dict[str, str]
    cids: dict[str, str]

    async def restore(self, *args: str) -> tuple[int, str, str]:
        return await acli(["restore", *args, "-c", str(self.config)], self.env)


@asynccontextmanager
async def world(tmp_path: Path) -> AsyncIterator[World]:
    """Node B (this node) and two services holding requests of every kind:

    - `mine`: B's, pinned on alpha and on beta (fetched once, from alpha);
    - `spelled`: B's, queued on alpha, pinned on beta as its CIDv1 (from beta);
    - `photo`: B's, named `photos/cat.jpg`, pinned on alpha, and no node can serve it;
    - `failed`: B's, failed on alpha (nowhere pinned);
    - `laptop`: the old laptop's, pinned on beta;
    - `stranger`: another device's, and `by_hand`: not pinsyncd's, both pinned on alpha.
    """
    names = ["mine", "spelled", "photo", "failed", "laptop", "stranger", "by_hand"]
    cids = dict(zip(names, random_cids(len(names), version=0), strict=True))
    async with (
        FakeKubo(peer_id="12D3KooWNodeBNodeBNodeBNodeBNodeBNodeBNodeBNodeBNo") as node,
        FakePinningService(token=TOKEN) as alpha,
        FakePinningService(token=TOKEN) as beta,
    ):
        me = node.peer_id
        alpha.add_pin(cids["mine"], name="mine", meta=meta(me, "mine"), status="pinned")
        beta.add_pin(cids["mine"], name="mine", meta=meta(me, "mine"), status="pinned")
        alpha.add_pin(cids["spelled"], meta=meta(me), status="queued")
        v1 = other_spellings(cids["spelled"])[0]
        beta.add_pin(v1, name=v1, meta=meta(me), status="pinned")
        alpha.add_pin(cids["photo"], name="photo", meta=meta(me, "photos/cat.jpg"), status="pinned")
        alpha.add_pin(cids["failed"], meta=meta(me, "failed"), status="failed")
        beta.add_pin(cids["laptop"], meta=meta(OLD_LAPTOP, "laptop"), status="pinned")
        alpha.add_pin(cids["stranger"], meta=meta(NOBODY, "stranger"), status="pinned")
        alpha.add_pin(cids["by_hand"], name="by hand", status="pinned")
        node.unfetchable.add(cids["photo"])
        config = tmp_path / "config.yaml"
        env = write_config(
            config,
            node_api=node.url,
            services=[ServiceSpec("alpha", alpha.url, TOKEN), ServiceSpec("beta", beta.url, TOKEN)],
        )
        yield World(node, alpha, beta, config, env, cids)


@pytest.mark.slow  # several CLI runs (and a daemon) as subprocesses
async def test_this_nodes_pins_come_back_each_once_and_what_cannot_says_why(
    tmp_path: Path,
) -> None:
    async with world(tmp_path) as w:
        code, out, err = await w.restore("--stall-timeout", "1s")
        assert code == 3, (out, err)
        spelled_v1 = other_spellings(w.cids["spelled"])[0]
        assert sorted(w.node.added) == sorted(
            [(w.cids["mine"], "mine"), (spelled_v1, ""), (w.cids["photo"], "photos/cat.jpg")]
        ), "each CID once, from the first service that has it pinned, with its old name"
        assert "restored 2 of 3 pins" in out, out
        assert f"{w.cids['photo']}  photos/cat.jpg: alpha: no provider" in out, out
        assert "the service named no delegate" not in out, "the fake names one"
        assert "not pinned on any service, so not restorable now: 1" in out, out
        assert f"{w.cids['failed']}  failed: failed on alpha" in out, out
        assert "left out: 3 requests" in out, out
        assert "Traceback" not in err

        # Again: what came back is not fetched again; the photo is tried again.
        w.node.unfetchable.clear()
        w.node.added.clear()
        code, out, err = await w.restore()
        assert (code, w.node.added) == (3, [(w.cids["photo"], "photos/cat.jpg")]), (out, err)
        assert "restored 1 of 1 pins" in out and "2 were already on this node" in out, out


@pytest.mark.slow  # several CLI runs (and a daemon) as subprocesses
async def test_dry_runs_choose_by_owner_cid_and_name_and_change_nothing(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        code, out, _err = await w.restore("--dry-run", "--name", "photos/*")
        assert code == 0 and "would restore 1 pins: 1 from alpha" in out, out
        assert w.cids["photo"] in out and w.cids["mine"] not in out

        code, out, _err = await w.restore("--dry-run", "--from-peer", OLD_LAPTOP)
        assert "would restore 4 pins: 2 from alpha, 2 from beta" in out, out
        assert f"{w.cids['laptop']}  laptop  <- beta  (1 delegate)" in out, out

        code, out, _err = await w.restore("--dry-run", "--all", "--cid", w.cids["stranger"])
        assert "would restore 1 pins: 1 from alpha" in out, out

        code, out, _err = await w.restore("--dry-run", "--service", "beta")
        assert "would restore 2 pins: 2 from beta" in out, out

        assert w.node.added == [] and w.node.calls["swarm/connect"] == 0
        assert w.alpha.count(method="POST") == 0 and w.alpha.count(method="DELETE") == 0
        assert not (tmp_path / "state.db").exists()


async def test_a_node_that_goes_away_stops_the_restore_and_the_next_run_goes_on(
    tmp_path: Path,
) -> None:
    async with world(tmp_path) as w:
        w.node.drop_pin_add = True
        code, out, err = await w.restore("--parallel", "1")
        assert code == 3, (out, err)
        assert "stopped with 3 left: node unreachable" in out, out
        assert "run restore again to go on" in out, out
        w.node.drop_pin_add = False
        w.node.unfetchable.clear()
        code, out, err = await w.restore()
        assert code == 3 and "restored 3 of 3 pins" in out, (out, err)  # 3: `failed` is not


@pytest.mark.slow  # several CLI runs (and a daemon) as subprocesses
async def test_refusals_are_one_line_and_exit_codes_say_which(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        code, _out, err = await w.restore("--cid", "not-a-cid")
        assert code == 1 and "not-a-cid" in err and "Traceback" not in err, err
        code, _out, err = await w.restore("--service", "gamma")
        assert code == 1 and "no service named 'gamma'" in err, err
        code, _out, err = await w.restore("--from-peer", "my-old-laptop")
        assert code == 2 and "'my-old-laptop' is not a peer id" in err, err

        await w.node.go_offline()
        code, _out, err = await w.restore()
        assert code == 1 and "restore: node unreachable" in err, err
        await w.node.come_back()

        log = tmp_path / "daemon.log"
        daemon = await start_daemon(w.config, w.env, log)
        try:
            await _wait_for_lock_holder(tmp_path / "state.db")
            code, _out, err = await w.restore()
            assert code == 75, err
            assert "stop it for the restore" in err, err
            assert w.node.added == []
        finally:
            daemon.send_signal(signal.SIGTERM)
            await asyncio.wait_for(daemon.wait(), 30)


async def _wait_for_lock_holder(state: Path) -> None:
    from pinsyncd.lock import StateLock

    for _ in range(300):
        holder = StateLock(state).holder()
        if holder is not None and holder.is_daemon:
            return
        await asyncio.sleep(0.1)
    pytest.fail("the daemon never took the state file")


async def test_on_a_terminal_a_bar_shows_cids_and_bytes(tmp_path: Path) -> None:
    """The real CLI on a pseudo-terminal (as a person runs it): rich's bar with the CIDs
    done of all and the bytes fetched."""
    import os
    import pty
    import sys

    async with world(tmp_path) as w:
        w.node.unfetchable.clear()
        leader, follower = pty.openpty()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "pinsyncd", "restore", "-c", str(w.config)),
            env=w.env | {"COLUMNS": "120", "TERM": "xterm"},
            stdin=follower,
            stdout=follower,
            stderr=follower,
        )
        os.close(follower)
        code = await asyncio.wait_for(process.wait(), 60)
        screen = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal's other end is gone: all is read
                break
            if not chunk:
                break
            screen += chunk
        os.close(leader)
    text = screen.decode(errors="replace")
    assert code == 3, text  # `failed` is nowhere pinned
    assert "restoring" in text and "3/3" in text and "8.8 KiB fetched" in text, text
    assert "restored 3 of 3 pins (8.8 KiB)" in text, text


def test_without_a_terminal_progress_is_a_log_line_at_most_every_10_s() -> None:
    from structlog.testing import capture_logs

    from pinsyncd.kubo import PinProgress
    from pinsyncd.restore.display import RestoreProgress
    from pinsyncd.store.restores import Outcome, RestoreItem

    now = [0.0]
    with capture_logs() as logs, RestoreProgress(3, terminal=False, clock=lambda: now[0]) as bar:
        bar.fetching("a", PinProgress(5, 5000))
        now[0] = 9.9
        bar.settled(RestoreItem("a", outcome=Outcome.RESTORED, bytes=6000))
        now[0] = 10.1
        bar.fetching("b", PinProgress(1, 1000))  # 10 s since the start: a line
        bar.settled(RestoreItem("b", outcome=Outcome.FAILED, reason="x", bytes=1000))
        now[0] = 12.0
        bar.settled(RestoreItem("c", outcome=Outcome.RESTORED, bytes=10))  # the last one
    lines = [entry for entry in logs if entry["event"] == "restoring"]
    assert [(x["done"], x["failed"], x["bytes"]) for x in lines] == [(1, 0, 7000), (3, 1, 7010)]


@pytest.mark.slow  # several CLI runs as subprocesses
async def test_on_a_node_already_synced_the_next_sync_adopts_rather_than_adds(
    tmp_path: Path,
) -> None:
    """A node whose state already had its first contact with both services: a restore from
    alpha alone makes every service look again at what it holds, so beta's request for the
    restored `mine` is adopted, not added again."""
    from tests.daemon_helpers import log_events

    async with world(tmp_path) as w:
        w.node.unfetchable.clear()
        code, _out, err = await acli(["sync", "--once", "-c", str(w.config)], w.env)
        assert code == 0, err
        posts = w.beta.count(method="POST")
        code, out, err = await w.restore("--service", "alpha")
        assert "restored 2 of 2 pins" in out, (out, err)  # mine and photo; spelled is beta's
        code, _out, err = await acli(["sync", "--once", "-c", str(w.config)], w.env)
        assert code == 0, err
        cycle = next(e for e in log_events(err) if e["event"] == "cycle done")
        assert cycle["services"]["beta"].get("adopted") == 1, cycle  # `mine`
        assert w.beta.count(method="POST") == posts + 1, "only photo, which beta lacked"
        assert len(w.beta.pins_for_cid(w.cids["mine"])) == 1
