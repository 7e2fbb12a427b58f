"""`pinsyncd restore`, the way back, on real components: node A (a real Kubo) backs files up to
a real ipfs-cluster (which really fetches them into its own Kubo), A is stopped for good, and
node B, a fresh Kubo that never had the data, gets every file back, byte for byte, from the
cluster alone. Then B's first sync pins nothing twice, and a restore killed with SIGKILL is
carried on by the next one without fetching again what was done."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pinsyncd.ownership import APP_ID
from tests.cluster_peer import ClusterPeer
from tests.daemon_helpers import ServiceSpec, acli, log_events, status_json, write_config
from tests.fake_psa import FakePinningService
from tests.peers import KuboNode
from tests.servers import SPEC_TOKEN
from tests.test_cluster import add_content, local_pins, nowhere_cid, read_back

pytestmark = pytest.mark.peers

ClusterFactory = Callable[..., ClusterPeer]
KuboFactory = Callable[..., KuboNode]


def make_tree(root: Path) -> dict[str, bytes]:
    """A directory of nested folders and random files (about 3 MB); its files by path."""
    files = {
        "photos/2024/beach.jpg": os.urandom(1_200_000),
        "photos/2024/dunes.jpg": os.urandom(700_000),
        "photos/2025/snow/peak.jpg": os.urandom(900_000),
        "docs/readme.txt": b"the way back\n" * 100,
    }
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    return files


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def restore_outcomes(state: Path) -> dict[str, str]:
    """The `restore_items` records of a state file, read beside a running restore."""
    if not state.exists():
        return {}
    db = sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=10)
    try:
        return dict(db.execute("SELECT cid, outcome FROM restore_items").fetchall())
    except sqlite3.OperationalError:  # the file is there, its tables not yet
        return {}
    finally:
        db.close()


async def test_a_lost_node_comes_back_from_a_real_cluster(
    kubo_factory: KuboFactory,
    cluster_factory: ClusterFactory,
    service: FakePinningService,
    tmp_path: Path,
) -> None:
    # 1. Node A backs up a folder tree and two files to the cluster, until `pinned`.
    a = kubo_factory("a")
    cluster = cluster_factory()
    tree_dir = tmp_path / "tree"
    tree = make_tree(tree_dir)
    tree_cid = a.cli("add", "-r", "-Q", "--pin=false", str(tree_dir))
    a.cli("pin", "add", "--name", "photos and docs", tree_cid)
    singles = {"notes.txt": os.urandom(1_100_000), "film.mp4": os.urandom(1_500_000)}
    single_cids = {name: add_content(a, data, name) for name, data in singles.items()}
    backed_up = await local_pins(a)  # with the empty folder a new repository pins
    n = len(backed_up)
    assert n >= 3
    (tmp_path / "conf-a").mkdir()
    cluster_spec = ServiceSpec("cluster", cluster.url, cluster.token(), timeout="10s")
    config_a = tmp_path / "conf-a" / "config.yaml"
    env_a = write_config(
        config_a, node_api=a.api_url, services=[cluster_spec], extra_sync="origins: all"
    )
    code, _out, err = await acli(["sync", "--once", "--wait", "-c", str(config_a)], env_a, 180)
    assert code == 0, err
    a_id = a.rpc("id")["ID"]
    a.stop()  # for good: from now on the data exists only on the cluster

    # The fake service says it has one more of A's pins `pinned`, which nobody can serve.
    lost = nowhere_cid(cluster.kubo)
    service.add_pin(lost, name="lost", meta={"app_id": APP_ID, "node": a_id, "local_name": "lost"})
    service.set_status(lost, "pinned")

    # 2. Node B: a fresh repository that never had the data.
    b = kubo_factory("b")
    (tmp_path / "conf-b").mkdir()
    config_b = tmp_path / "conf-b" / "config.yaml"
    fake_spec = ServiceSpec("fake", service.url, SPEC_TOKEN)
    env_b = write_config(config_b, node_api=b.api_url, services=[cluster_spec, fake_spec])
    state_b = tmp_path / "conf-b" / "state.db"
    fresh = len(set(backed_up) - set(await local_pins(b)))  # B too pins the empty folder

    # Without --from-peer, B's own requests are wanted, and it has none.
    code, out, err = await acli(["restore", "--dry-run", "-c", str(config_b)], env_b)
    assert code == 0, err
    assert "would restore 0 pins" in out and f"left out: {n + 1} requests" in out, out
    code, out, err = await acli(
        ["restore", "--dry-run", "--from-peer", a_id, "-c", str(config_b)], env_b
    )
    assert code == 0, err
    assert f"would restore {fresh + 1} pins: {fresh} from cluster, 1 from fake" in out, out
    assert f"already on this node (not fetched again): {n - fresh}" in out, out
    assert not state_b.exists() or not restore_outcomes(state_b), "a dry run writes nothing"

    # 3. A restore, killed with SIGKILL once the cluster's pins are back: the fake's pin
    # (last in line, one at a time) cannot be fetched, so the restore waits on it.
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pinsyncd",
        "restore",
        "--from-peer",
        a_id,
        "--parallel",
        "1",
        "--stall-timeout",
        "10m",
        "-c",
        str(config_b),
        env=env_b,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    for _ in range(1200):
        outcomes = restore_outcomes(state_b)
        if list(outcomes.values()).count("restored") == fresh:
            break
        assert process.returncode is None, "the restore ended before it was killed"
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"the cluster's pins were not restored: {outcomes}")
    assert process.returncode is None
    print(f"\n{fresh} pins ({sum(map(len, [*tree.values(), *singles.values()]))} bytes of files)")
    print(f"restored from the cluster, then killed, after {time.monotonic() - started:.1f}s")
    process.send_signal(signal.SIGKILL)
    await process.wait()
    assert restore_outcomes(state_b)[lost] == "waiting"

    # 4. The second run fetches only what is left; the lost pin fails, and says why.
    code, out, err = await acli(
        ["restore", "--from-peer", a_id, "--stall-timeout", "2s", "-c", str(config_b)], env_b
    )
    assert code == 3, (out, err)
    assert "restored 0 of 1 pins" in out and f"{n} were already on this node" in out, out
    assert f"{lost}  lost: fake: no provider: not one block came in 2s" in out, out
    assert "connection refused" in out, out
    assert a_id in out and "next sync adopts them" in out, out

    restored = await local_pins(b)
    assert restored == backed_up, "every pin is back, with its name"
    for name, data in singles.items():
        assert sha(read_back(b, single_cids[name])) == sha(data), name
    for path, data in tree.items():
        assert sha(read_back(b, f"{tree_cid}/{path}")) == sha(data), path

    # 5. B's first sync (the cluster only) adopts A's requests and pins nothing twice.
    config_sync = tmp_path / "conf-b" / "sync.yaml"
    env_sync = write_config(config_sync, node_api=b.api_url, services=[cluster_spec])
    code, _out, err = await acli(["sync", "--once", "--wait", "-c", str(config_sync)], env_sync)
    assert code == 0, err
    cycles = [e for e in log_events(err) if e["event"] == "cycle done"]
    assert cycles, err
    first = cycles[0]["services"]["cluster"]
    assert first.get("adopted") == n and not first.get("added"), first
    status = await asyncio.to_thread(status_json, config_sync, env_sync)
    assert status["services"]["cluster"]["pinned"] == n
