"""The restore drill, `pinsyncd check --retrieval`: a throwaway Kubo node, connected only to
a service's delegates, fetches a sample of the CIDs the service says are pinned.

Against a real ipfs-cluster (which really fetched the data) every CID comes back with the
local node stopped; against the fake service (which says `pinned` and never fetched a
block) none does, and `status`, `status --json` and `/metrics` say so. The tests that need
real peers get the `peers` marker from their fixtures."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pinsyncd.cli import main
from pinsyncd.drill.report import (
    EX_NOT_RUN,
    EX_NOT_SERVED,
    EX_OK,
    CidResult,
    DrillReport,
    Outcome,
    Reason,
    ServiceResult,
    choose,
    exit_code,
    record_entry,
    render,
)
from pinsyncd.drill.throwaway import ThrowawayError, find_binary, remove_leftovers
from pinsyncd.kubo import PinProgress, ProgressWatch
from pinsyncd.metrics import Metrics
from pinsyncd.status import render_table
from pinsyncd.store.drill_record import drill_path, read_drill, write_drill
from pinsyncd.store.readonly import read_status
from tests.cluster_peer import ClusterPeer, free_port
from tests.daemon_helpers import ServiceSpec, acli, status_json, write_config
from tests.fake_psa import FakePinningService
from tests.loopback_guard import ADDR_FILTERS
from tests.peers import IPFS_BIN, KuboNode
from tests.servers import SPEC_TOKEN
from tests.test_cluster import add_content, cluster_config, wait_until

KuboFactory = Callable[..., KuboNode]
ClusterFactory = Callable[..., ClusterPeer]

LOOPBACK_ONLY = f"Swarm.AddrFilters={json.dumps(ADDR_FILTERS)}"
"""The throwaway node in a test dials nothing off loopback, like every test node."""

CID_A = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
CID_B = "QmbbD1qA2TQqsRRAc3UBuujY9SKu9CximSf6SdZqajXdUC"


# --- the pure parts --------------------------------------------------------------------------


def test_choose_draws_distinct_items_or_takes_them_all() -> None:
    items = [f"cid-{i}" for i in range(10)]
    drawn = choose(items, 3, random.Random(7))
    assert len(drawn) == 3 and len(set(drawn)) == 3 and set(drawn) <= set(items)
    assert choose(items, 3, random.Random(7)) == drawn, "the same seed draws the same"
    assert choose(items[:2], 3, random.Random(7)) == items[:2]
    assert choose([], 3, random.Random(7)) == []


def test_exit_code_a_pinned_cid_not_served_wins_over_a_drill_that_could_not_run() -> None:
    assert exit_code([]) == EX_OK
    assert exit_code([Outcome.FETCHED, Outcome.NOT_PINNED]) == EX_OK
    assert exit_code([Outcome.FETCHED, Outcome.ERROR]) == EX_NOT_RUN
    assert exit_code([Outcome.INCONCLUSIVE]) == EX_NOT_RUN
    assert exit_code([Outcome.ERROR, Outcome.NOT_FETCHED, Outcome.FETCHED]) == EX_NOT_SERVED


def test_progress_watch_stalls_only_after_the_limit_without_change() -> None:
    watch = ProgressWatch(10.0, now=100.0)
    assert not watch.update(0, 0, 105.0)  # Kubo's ticker line with nothing new
    assert not watch.stalled(110.0)
    assert watch.stalled(110.5)
    assert watch.update(3, 800_000, 110.5)  # blocks came: the clock starts again
    assert not watch.stalled(120.0)
    assert not watch.update(3, 800_000, 119.0)
    assert watch.stalled(121.0)
    assert watch.progress == PinProgress(3, 800_000)


def test_report_lines_counts_and_the_kept_entry() -> None:
    service = ServiceResult("alpha", seconds=4.2, delegates=2, connected=1)
    service.cids = [
        CidResult(CID_A, None, blocks=13, size=3_000_753, seconds=0.4),
        CidResult(CID_B, Reason.NOTHING_FETCHED, "no block came within 2s", seconds=2.0),
    ]
    report = DrillReport(time=1_800_000_000.0, timeout=2.0, services=[service])
    lines = render(report)
    assert lines[0] == f"alpha  {CID_A}  fetched: 13 blocks, 2.9 MiB in 0.4s"
    assert lines[1] == (f"alpha  {CID_B}  NOT FETCHED (nothing fetched): no block came within 2s")
    assert lines[2].startswith("alpha: 1 of 2 fetched (2.9 MiB in 4.2s, from 1 of 2 delegates)")
    assert "1 not fetched" in lines[2] and "WARNING" in lines[2]
    assert report.exit_code == EX_NOT_SERVED
    entry = record_entry(service, report.time)
    assert entry["fetched"] == 1 and entry["not_fetched"] == 1 and entry["bytes"] == 3_000_753
    assert [f["cid"] for f in entry["failing"]] == [CID_B]
    assert entry["failing"][0]["reason"] == "nothing_fetched"


def test_the_record_is_replaced_whole_and_keeps_other_services(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    assert read_drill(state, ["alpha"]) is None
    alpha = ServiceResult("alpha", [CidResult(CID_A)])
    beta = ServiceResult("beta", [CidResult(CID_B, Reason.STALLED, "stalled after 3 blocks")])
    write_drill(state, {"alpha": record_entry(alpha, 1000.0)}, 1000.0)
    write_drill(state, {"beta": record_entry(beta, 2000.0)}, 2000.0)  # a --service beta drill
    drill = read_drill(state, ["alpha", "beta", "gamma"])
    assert drill is not None
    assert drill["timestamp"] == 2000.0
    assert drill["services"]["alpha"]["fetched"] == 1
    assert drill["services"]["alpha"]["timestamp"] == 1000.0
    assert drill["services"]["beta"]["not_fetched"] == 1
    assert read_drill(state, ["gamma"]) is None, "a service no longer configured is left out"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.db.drill.json"], "no temp file"
    drill_path(state).write_text("{not json")
    assert read_drill(state, ["alpha"]) is None, "an unreadable record is no record"


def test_status_and_metrics_show_the_last_drill(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    served = ServiceResult("alpha", [CidResult(CID_A), CidResult(CID_B)])
    hollow = ServiceResult(
        "beta", [CidResult(CID_A, Reason.NOTHING_FETCHED, "x"), CidResult(CID_B)]
    )
    when = time.time()
    write_drill(state, {s.service: record_entry(s, when) for s in (served, hollow)}, when)
    text = render_table(read_status(state, ["alpha", "beta"]))
    assert "  alpha: 2 of 2 fetched without this node" in text
    assert "  beta: 1 of 2 fetched without this node (1 not fetched)" in text
    assert f"WARNING: beta says it has pinned 1 CIDs it could not serve: {CID_A}" in text
    assert "WARNING: alpha" not in text
    body = Metrics(state, lambda: ["alpha", "beta"]).render()[0].decode()
    assert 'pinsyncd_drill_cids{result="not_fetched",service="beta"} 1.0' in body
    assert 'pinsyncd_drill_cids{result="fetched",service="alpha"} 2.0' in body
    stamp = 'pinsyncd_drill_last_timestamp_seconds{service="alpha"} '
    assert [float(line.removeprefix(stamp)) for line in body.splitlines() if stamp in line] == [
        when
    ]


# --- the command's refusals, in one line -----------------------------------------------------


def _config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    config = tmp_path / "config.yaml"
    env = write_config(
        config,
        node_api="http://127.0.0.1:1",
        services=[ServiceSpec("alpha", "http://127.0.0.1:9", "t0ken-x")],
    )
    for key, value in env.items():
        if key.startswith("PINSYNCD_TEST_TOKEN"):
            monkeypatch.setenv(key, value)
    return config


def test_a_bad_cid_or_a_missing_binary_is_one_line_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, monkeypatch)
    assert main(["check", "--retrieval", "-c", str(config), "--cid", "not-a-cid"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pinsyncd: invalid CID 'not-a-cid'")
    missing = str(tmp_path / "no" / "ipfs")
    assert main(["check", "--retrieval", "-c", str(config), "--ipfs-binary", missing]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not an executable file" in err[0] and "Traceback" not in err[0]
    monkeypatch.delenv("PINSYNCD_IPFS_BINARY", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["check", "--retrieval", "-c", str(config)]) == 1
    assert "'ipfs' is not on PATH" in capsys.readouterr().err
    assert not drill_path(tmp_path / "state.db").exists(), "nothing ran, nothing kept"


def test_the_binary_comes_from_the_option_then_the_environment_then_path(tmp_path: Path) -> None:
    binary = tmp_path / "bin" / "ipfs"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    assert find_binary(str(binary), {}) == str(binary)
    assert find_binary(None, {"PINSYNCD_IPFS_BINARY": str(binary)}) == str(binary)
    assert find_binary(None, {"PATH": str(binary.parent)}) == str(binary)
    with pytest.raises(ThrowawayError, match="not on PATH"):
        find_binary(None, {"PATH": str(tmp_path)})


# --- real peers ------------------------------------------------------------------------------


def _drill_args(config: Path, *extra: str) -> list[str]:
    return [
        "check",
        "--retrieval",
        "-c",
        str(config),
        "--ipfs-binary",
        str(IPFS_BIN),
        "--ipfs-config",
        LOOPBACK_ONLY,
        *extra,
    ]


def _nested_directory(root: Path) -> Path:
    folder = root / "album"
    (folder / "2026" / "summer").mkdir(parents=True)
    (folder / "index.txt").write_text("an album\n")
    (folder / "2026" / "cover.bin").write_bytes(os.urandom(300_000))
    (folder / "2026" / "summer" / "beach.bin").write_bytes(os.urandom(700_000))
    return folder


async def test_a_cluster_serves_every_sampled_cid_with_the_node_stopped(
    kubo_factory: KuboFactory, cluster_factory: ClusterFactory, tmp_path: Path
) -> None:
    started = time.monotonic()
    local = kubo_factory("local")
    cluster = cluster_factory()
    big = add_content(local, os.urandom(2 * 2**20), "two-mib")
    small = add_content(local, os.urandom(200_000), "small")
    folder = local.cli("add", "-r", "-Q", "--pin=false", str(_nested_directory(tmp_path)))
    local.cli("pin", "add", "--name", "album", folder)
    config, env = cluster_config(tmp_path, local, cluster, origins="all")
    code, _, err = await acli(
        ["sync", "--once", "--wait", "--timeout", "2m", "-c", str(config)], env
    )
    assert code == 0, err
    pinned = status_json(config, env)["services"]["cluster"]["pinned"]
    assert pinned >= 3, "the three, and the empty folder a Kubo repo starts with"
    local.stop()  # from here on, only the cluster has the data
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {**env, "TMPDIR": str(scratch)}

    drill_started = time.monotonic()
    code, out, err = await acli(_drill_args(config, "--sample", "10", "--json"), env, limit=300)
    drill_seconds = time.monotonic() - drill_started
    assert code == 0, out + err
    found = json.loads(out)["services"]["cluster"]
    results = {c["cid"]: c for c in found["cids"]}
    assert {big, small, folder} <= set(results) and len(results) == pinned
    assert all(c["result"] == "fetched" for c in results.values()), found
    assert results[big]["bytes"] >= 2 * 2**20 and results[big]["blocks"] >= 9
    assert results[folder]["blocks"] >= 8, "the directory, its subdirectories and file chunks"
    assert (
        found["connected"] >= 1
        and found["verified_blocks"] >= sum(c["blocks"] for c in results.values()) - 1
    )
    assert list(scratch.iterdir()) == [], "the throwaway repo is deleted"

    code, out, err = await acli(["status", "-c", str(config)], env)
    assert code == 0, err
    assert f"  cluster: {pinned} of {pinned} fetched without this node" in out
    print(f"\n{out}")

    code, out, err = await acli(_drill_args(config, "--sample", "2"), env, limit=300)
    assert code == 0, out + err
    print(out)
    lines = out.splitlines()
    assert len(lines) == 3 and all(" fetched: " in line for line in lines[:2]), out
    assert lines[2].startswith("cluster: 2 of 2 fetched ("), out
    assert "WARNING" not in out
    total = sum(c["bytes"] for c in results.values())
    print(
        f"\ndrill against ipfs-cluster: {pinned} CIDs, {total} bytes, {drill_seconds:.1f}s "
        f"(CLI, throwaway node included); test {time.monotonic() - started:.1f}s"
    )


def _copy_block(cid: str, source: KuboNode, target: KuboNode) -> None:
    data = subprocess.run(
        [str(IPFS_BIN), "block", "get", cid], env=source.env, capture_output=True, check=True
    ).stdout
    target.cli("block", "put", "--cid-codec", "dag-pb", stdin=data)


async def test_a_service_that_never_fetched_the_data_is_caught(
    kubo_factory: KuboFactory, service: FakePinningService, tmp_path: Path
) -> None:
    """The fake service says `pinned` and never fetched a block. Its delegate is a real Kubo
    node that holds the first two blocks of one file (the transfer stalls after them) and
    nothing of the other (nothing comes); the other service's delegate does not exist
    (nothing to connect to)."""
    started = time.monotonic()
    local = kubo_factory("local")
    empty = kubo_factory("empty")
    partial, missing = (
        add_content(local, os.urandom(size), f"file-{i}")
        for i, size in enumerate((600_000, 100_000))
    )
    cids = [partial, missing]
    first_leaf = local.cli("refs", partial).split()[0]
    for block in (partial, first_leaf):  # a root and one of its three leaves
        _copy_block(block, local, empty)
    empty_id = empty.rpc("id")["ID"]
    service.delegates = list(empty.rpc("id")["Addresses"])
    service.transition_after = 0.05
    async with FakePinningService(
        token=SPEC_TOKEN,
        transition_after=0.05,
        delegates=[f"/ip4/127.0.0.1/tcp/{free_port()}/p2p/{empty_id}"],
    ) as gone:
        config = tmp_path / "config.yaml"
        env = write_config(
            config,
            node_api=local.api_url,
            services=[
                ServiceSpec("hollow", service.url, SPEC_TOKEN),
                ServiceSpec("gone", gone.url, SPEC_TOKEN),
            ],
            extra_sync="include: ['file-*']",  # not the empty folder every Kubo node holds
        )
        code, _, err = await acli(
            ["sync", "--once", "--wait", "--timeout", "1m", "-c", str(config)], env
        )
        assert code == 0, err
        local.stop()

        drill_started = time.monotonic()
        code, out, err = await acli(_drill_args(config, "--timeout", "2s"), env, limit=300)
        drill_seconds = time.monotonic() - drill_started
    assert code == EX_NOT_SERVED, out + err
    print(f"\n{out}")
    lines = out.splitlines()
    assert (
        f"hollow  {missing}  NOT FETCHED (nothing fetched): no block came from 1 connected "
        "delegates within 2s" in lines
    ), out
    stalled = f"hollow  {partial}  NOT FETCHED (stalled): stalled after "
    assert any(line.startswith(stalled) and "nothing more for 2s" in line for line in lines), out
    for cid in cids:
        assert any(
            line.startswith(f"gone  {cid}  NOT FETCHED (delegates unreachable): none of its")
            for line in lines
        ), out
    assert any(line.startswith("hollow: 0 of 2 fetched") for line in lines), out
    assert SPEC_TOKEN not in out + err

    text_status = await acli(["status", "-c", str(config)], env)
    assert "WARNING: hollow says it has pinned 2 CIDs it could not serve" in text_status[1]
    assert "WARNING: gone says it has pinned 2 CIDs it could not serve" in text_status[1]
    drill = status_json(config, env)["drill"]
    assert drill["services"]["hollow"]["not_fetched"] == 2
    assert drill["services"]["hollow"]["fetched"] == 0
    assert {f["cid"] for f in drill["services"]["gone"]["failing"]} == set(cids)
    assert {f["reason"] for f in drill["services"]["gone"]["failing"]} == {"delegates_unreachable"}
    body = Metrics(tmp_path / "state.db", lambda: ["hollow", "gone"]).render()[0].decode()
    assert 'pinsyncd_drill_cids{result="not_fetched",service="hollow"} 2.0' in body
    assert 'pinsyncd_drill_cids{result="fetched",service="gone"} 0.0' in body
    print(
        f"\ndrill against the fake service: 2 services x 2 CIDs, none served, "
        f"{drill_seconds:.1f}s (--timeout 2s); test {time.monotonic() - started:.1f}s"
    )


def _processes_using(repo: Path) -> list[int]:
    """PIDs of the processes whose IPFS_PATH is `repo` (the throwaway daemon)."""
    wanted = f"IPFS_PATH={repo}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if wanted in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def _running(pids: list[int]) -> list[int]:
    return [pid for pid in pids if Path(f"/proc/{pid}").exists()]


@pytest.mark.parametrize(
    ("signal_number", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGKILL, -9)]
)
async def test_an_interrupted_drill_stops_the_throwaway_node_and_deletes_its_repo(
    kubo_factory: KuboFactory,
    service: FakePinningService,
    tmp_path: Path,
    signal_number: int,
    code: int,
) -> None:
    empty = kubo_factory("empty")
    cid = empty.cli("add", "-Q", "--only-hash", stdin=os.urandom(64))  # held by nobody
    service.delegates = list(empty.rpc("id")["Addresses"])
    service.add_pin(cid, name="nowhere", status="pinned")
    config = tmp_path / "config.yaml"
    env = write_config(
        config,
        node_api=f"http://127.0.0.1:{free_port()}",
        services=[ServiceSpec("hollow", service.url, SPEC_TOKEN)],
    )
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pinsyncd",
        *_drill_args(config, "--cid", cid, "--timeout", "10m"),
        env={**env, "TMPDIR": str(scratch)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:

        async def fetching() -> bool:
            repos = list(scratch.iterdir())
            return bool(repos) and (repos[0] / "api").exists() and bool(_processes_using(repos[0]))

        await wait_until(fetching, 60, "the throwaway node is up")
        repo = next(scratch.iterdir())
        daemons = _processes_using(repo)
        process.send_signal(signal_number)
        out, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == code, out.decode() + err.decode()
    assert "Traceback" not in err.decode()
    if signal_number == signal.SIGKILL:  # no time to clean up: the kernel stops the daemon,
        await wait_until(lambda: _stopped(daemons), 60, "the orphaned daemon stopped")
        assert remove_leftovers(scratch) == [repo], "and the next drill deletes its repo"
    assert list(scratch.iterdir()) == [], "the throwaway repo is deleted"
    assert daemons and not _running(daemons), "its daemon stopped"


async def _stopped(pids: list[int]) -> bool:
    return not _running(pids)


async def test_the_drill_never_dials_this_node_and_says_when_it_cannot_tell(
    kubo_factory: KuboFactory, service: FakePinningService, tmp_path: Path
) -> None:
    """The service names this node itself as its delegate (it holds the data): the drill
    never dials it. With this node's peer id unknown (no listing yet, node down) it cannot
    tell, and a fetch proves nothing: inconclusive. A CID the service does not say is pinned
    is not checked."""
    local = kubo_factory("local")
    mine = add_content(local, os.urandom(50_000), "mine")
    queued = local.cli("add", "-Q", "--only-hash", stdin=os.urandom(64))
    service.delegates = list(local.rpc("id")["Addresses"])
    service.add_pin(mine, name="mine", status="pinned")
    service.add_pin(queued, name="queued", status="queued")
    args = ("--cid", mine, "--cid", queued, "--timeout", "5s", "--json")

    known = tmp_path / "known"
    known.mkdir()
    spec = ServiceSpec("alpha", service.url, SPEC_TOKEN)
    env = write_config(known / "config.yaml", node_api=local.api_url, services=[spec])
    code, out, err = await acli(_drill_args(known / "config.yaml", *args), env)
    assert code == EX_NOT_SERVED, out + err
    results = {c["cid"]: c for c in json.loads(out)["services"]["alpha"]["cids"]}
    assert results[mine]["reason"] == "no_delegates"
    assert (
        results[mine]["detail"] == "its only delegates are this node, which the drill never dials"
    )
    assert results[queued]["result"] == "not_pinned"
    assert results[queued]["detail"] == "its request is queued"

    unknown = tmp_path / "unknown"
    unknown.mkdir()
    env = write_config(
        unknown / "config.yaml", node_api=f"http://127.0.0.1:{free_port()}", services=[spec]
    )
    code, out, err = await acli(_drill_args(unknown / "config.yaml", *args), env)
    assert code == EX_NOT_RUN, out + err
    results = {c["cid"]: c for c in json.loads(out)["services"]["alpha"]["cids"]}
    assert results[mine]["result"] == "inconclusive"
    assert "peer id is unknown" in results[mine]["detail"]
    assert results[mine]["bytes"] >= 50_000, "it was fetched, from the only peer there was"
    drill = status_json(unknown / "config.yaml", env)["drill"]["services"]["alpha"]
    assert (drill["inconclusive"], drill["not_pinned"], drill["fetched"]) == (1, 1, 0)
