"""`pinsyncd ls` and `pinsyncd show CID`: one pin at a time, in Kubo's words, from the state
alone (no request sent), through the real CLI, against a state holding every status; names
and reasons that a node or a server sent are shown escaped, never as terminal sequences."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pinsyncd.cids import other_spellings
from pinsyncd.model import Origin, RemotePin, RemoteStatus
from pinsyncd.store import StateStore
from tests.cidgen import random_cids
from tests.daemon_helpers import ServiceSpec, acli, write_config

pytestmark = pytest.mark.slow  # the CLI as a subprocess, several times

EVIL = "\x1b]0;owned\x07\x1b[31mred\nsecond line"


async def state_with_every_status(tmp_path: Path) -> tuple[Path, dict[str, str], list[str]]:
    config = tmp_path / "config.yaml"
    env = write_config(
        config,
        node_api="http://127.0.0.1:9",
        services=[
            ServiceSpec("alpha", "http://127.0.0.1:9", "t"),
            ServiceSpec("beta", "http://127.0.0.1:9", "t"),
        ],
    )
    cids = random_cids(6, version=0)
    store = await StateStore.open(tmp_path / "state.db")
    try:
        await store.replace_local_pins(
            {cid: f"file-{i}" for i, cid in enumerate(cids[:5])} | {cids[5]: EVIL}
        )
        rows = [
            RemotePin("alpha", cids[0], RemoteStatus.PINNED, "r0", "2026-12-01T00:00:00Z"),
            RemotePin("beta", cids[0], RemoteStatus.PINNED, "r0b", "2026-12-01T00:00:01Z"),
            RemotePin("alpha", cids[1], RemoteStatus.QUEUED, "r1"),
            RemotePin("alpha", cids[2], RemoteStatus.PINNING, "r2"),
            RemotePin(
                "alpha",
                cids[3],
                RemoteStatus.FAILED,
                "r3",
                attempts=2,
                next_attempt=4e9,
                details="could not fetch: \x1b[2Jgone",
            ),
            RemotePin("alpha", cids[4], RemoteStatus.INTENT),
            RemotePin("beta", cids[4], RemoteStatus.ERROR, attempts=1, last_error="HTTP 400"),
            RemotePin(
                "alpha",
                cids[5],
                RemoteStatus.PINNED,
                "r5",
                name=EVIL,
                origin=Origin.ADOPTED,
                owned=False,
            ),
        ]
        await store.save(rows)
    finally:
        await store.close()
    return config, env, cids


async def test_ls_lists_by_service_and_status_in_kubos_words(tmp_path: Path) -> None:
    config, env, cids = await state_with_every_status(tmp_path)
    code, out, err = await acli(["ls", "-c", str(config)], env)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 8
    assert f"alpha  {cids[1]}  queued  file-1" in lines
    assert f"alpha  {cids[4]}  sending  file-4" in lines
    assert f"beta   {cids[4]}  error (HTTP 400)  file-4" in lines
    assert f"alpha  {cids[3]}  failed (could not fetch: \\x1b[2Jgone)  file-3" in lines
    assert "\x1b" not in out and f"alpha  {cids[5]}  pinned  \\x1b]0;owned\\x07" in out

    code, out, _err = await acli(
        ["ls", "--service", "alpha", "--status", "queued,pinning,failed", "-c", str(config)], env
    )
    assert [line.split()[1] for line in out.splitlines()] == sorted(cids[1:4])

    v1 = other_spellings(cids[0])[0]  # asked for by its CIDv1: the same pin
    code, out, _err = await acli(["ls", "--cid", v1, "--json", "-c", str(config)], env)
    rows = json.loads(out)
    assert {(r["service"], r["status"], r["requestid"]) for r in rows} == {
        ("alpha", "pinned", "r0"),
        ("beta", "pinned", "r0b"),
    }
    code, out, _err = await acli(["ls", "--name", "file-[23]", "-c", str(config)], env)
    assert len(out.splitlines()) == 2

    code, _out, err = await acli(["ls", "--status", "done", "-c", str(config)], env)
    assert code == 2 and "unknown status 'done'" in err


async def test_show_says_where_one_cid_is(tmp_path: Path) -> None:
    config, env, cids = await state_with_every_status(tmp_path)
    code, out, err = await acli(["show", cids[4], "-c", str(config)], env)
    assert code == 0, err
    assert out.splitlines()[0] == (
        f'{cids[4]}: pinned on the node (recursive) as "file-4", backed up'
    )
    assert "alpha  sending" in out and "beta   error, attempts 1, why: HTTP 400" in out
    assert out.splitlines()[-1] == "pinned on 0 of 2 services (sync.replicas: 2; below it)"

    code, out, _err = await acli(["show", cids[5], "--json", "-c", str(config)], env)
    doc = json.loads(out)
    assert doc["local"]["name"] == EVIL, "JSON keeps the bytes; the terminal form escapes them"
    (row,) = doc["services"]["alpha"]
    assert row["adopted"] and not row["owned"] and doc["services"]["beta"] == []
    code, out, _err = await acli(["show", cids[5], "-c", str(config)], env)
    assert "\x1b" not in out and "not this device's" in out

    code, _out, err = await acli(["show", "not-a-cid", "-c", str(config)], env)
    assert code == 1 and "not-a-cid" in err
