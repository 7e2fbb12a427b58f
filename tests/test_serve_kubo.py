"""`pinsyncd serve` as a real process over a real Kubo node (the "home" node), used by real
clients over real sockets: Kubo's own `ipfs pin remote` on another Kubo node, and pinsyncd
backing a Kubo node up to it. The data really moves over bitswap between the Kubo nodes, all
on 127.0.0.1 (`--profile test` nodes that refuse to dial off loopback).

- Kubo's client: `pin remote add` (waiting for `pinned`), `ls` with each filter, `rm`.
- The full backup: a folder tree of random bytes pinned on a laptop node, `pinsyncd sync` to
  serve; every block is on the home node, and a fresh node reads the files back from it
  alone once the laptop is gone.
- A SIGKILL of serve with pins still pending loses none and doubles none.
- Two accounts on one CID share one Kubo pin; a pin the node had before is never removed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pinsyncd.cids import cid_forms
from tests import loopback_guard
from tests.conftest import DialGuard
from tests.daemon_helpers import cli
from tests.peers import IPFS_BIN, KuboNode
from tests.serve_process import ServeProcess, serve_process, write_token

KuboFactory = Callable[..., KuboNode]
TOKENS = {"laptop": "laptop-token-7f3a9c", "desktop": "desktop-token-5b21e4"}
ALL_STATUSES = "queued,pinning,pinned,failed"


@pytest.fixture
def home(kubo_factory: KuboFactory) -> KuboNode:
    """The always-on node that serve pins into."""
    return kubo_factory("home")


@pytest.fixture
def served(home: KuboNode, tmp_path: Path) -> Iterator[ServeProcess]:
    with serve_process(tmp_path / "serve", home.api_url, TOKENS) as process:
        yield process
        print(f"serve log:\n{process.tail()}")


# --- helpers ---------------------------------------------------------------------------------


def ipfs(node: KuboNode, *args: str, timeout: float = 60.0, check: bool = True) -> str:
    """The `ipfs` CLI against `node`, with a deadline; its stdout."""
    result = subprocess.run(
        [str(IPFS_BIN), *args], env=node.env, capture_output=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"ipfs {' '.join(args)} exited {result.returncode}: {result.stderr.decode()[-800:]}"
        )
    return result.stdout.decode()


def wait_for(check: Callable[[], Any], seconds: float, what: str, every: float = 0.2) -> Any:
    """Poll `check` until it returns something truthy (returned); fail after `seconds`."""
    deadline = time.monotonic() + seconds
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {seconds:.0f}s waiting for {what} (last: {last!r})")


def recursive_pins(node: KuboNode) -> list[str]:
    """The node's recursive pins, as CIDv1 (one entry per line of `ipfs pin ls`)."""
    out = ipfs(node, "pin", "ls", "--type=recursive", "--quiet")
    return [v1(line.strip()) for line in out.splitlines() if line.strip()]


def v1(cid: str) -> str:
    return next(form for form in cid_forms(cid) if form.startswith("b"))


def requests_of(
    served: ServeProcess, user: str, statuses: str = ALL_STATUSES
) -> list[dict[str, Any]]:
    """Every request of `user` with one of `statuses` (default: any)."""
    status, body = served.call("GET", f"/pins?status={statuses}&limit=1000", user)
    assert status == 200, body
    assert body["count"] == len(body["results"]), "fewer than 1000: every one is listed"
    return list(body["results"])


def add_pin(served: ServeProcess, user: str, cid: str, **pin: Any) -> dict[str, Any]:
    status, body = served.call("POST", "/pins", user, {"cid": cid, **pin})
    assert status == 202, body
    return dict(body)


def settled(served: ServeProcess, user: str, requestid: str, seconds: float = 60.0) -> str:
    """The request's status once it is pinned or failed."""

    def done() -> str | None:
        status, body = served.call("GET", f"/pins/{requestid}", user)
        assert status == 200, body
        return str(body["status"]) if body["status"] in ("pinned", "failed") else None

    return str(wait_for(done, seconds, f"{requestid} to settle"))


def random_tree(root: Path, seed_files: int = 9) -> dict[str, bytes]:
    """A small folder tree of random bytes (about 2.5 MB, several files over one 256 KiB
    chunk): relative path -> content."""
    files: dict[str, bytes] = {}
    sizes = [300_000, 12_000, 700_000, 1_000, 260_000, 90_000, 600_000, 45_000, 420_000]
    for index, size in enumerate(sizes[:seed_files]):
        relative = f"d{index % 3}/sub{index % 2}/file{index}.bin"
        data = os.urandom(size)
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(data)
        files[relative] = data
    return files


def peer_addresses(node: KuboNode) -> list[str]:
    identity = node.rpc("id")
    return [f"{a}/p2p/{identity['ID']}" if "/p2p/" not in a else a for a in identity["Addresses"]]


def laptop_config(root: Path, node: KuboNode, served: ServeProcess) -> tuple[Path, dict[str, str]]:
    """A pinsyncd config on the laptop node with one service: serve on the home node."""
    root.mkdir(parents=True, exist_ok=True)
    token = write_token(root / "home.token", TOKENS["laptop"])
    config = root / "laptop.yaml"
    config.write_text(
        "node:\n"
        f"  api: {node.api_url}\n"
        "  timeout: 10s\n"
        "sync:\n"
        "  interval: 1h\n"
        "  status_interval: 500ms\n"
        "  origins: all  # the laptop's loopback addresses go as origins\n"
        "state:\n"
        f"  path: {root / 'state.db'}\n"
        "services:\n"
        "  - name: home\n"
        f"    endpoint: {served.url}\n"
        f"    token_file: {token}\n"
        "    timeout: 10s\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PINSYNCD_")}
    env["PYTHONPATH"] = loopback_guard.PYTHONPATH
    return config, env


# --- 1. Kubo's own client ---------------------------------------------------------------------


@pytest.mark.slow
def test_kubo_pin_remote_commands_work_against_serve(
    served: ServeProcess, home: KuboNode, kubo_factory: KuboFactory, dial_guard: DialGuard
) -> None:
    """A second Kubo node (the laptop) adds serve as a remote service and uses every `ipfs pin
    remote` command on it, as a user would: `add` (waiting for `pinned`: the home node
    fetched the blocks from the laptop), `ls` by status, CID and name, `rm`; the pin is
    then gone from the home node too.

    The nodes find each other both ways: Kubo's client sends its own addresses as `origins`,
    which serve has the home node dial (`origins: all`), and it dials the `delegates` serve
    answers with (the home node's addresses) itself."""
    laptop = kubo_factory("laptop")
    ipfs(laptop, "pin", "remote", "service", "add", "home", served.url, TOKENS["laptop"])
    data = os.urandom(900_000)
    cid = ipfs(laptop, "add", "-Q", write_file(laptop.repo.parent / "big.bin", data)).strip()
    assert v1(cid) not in recursive_pins(home)

    out = ipfs(laptop, "pin", "remote", "add", "--service=home", "--name=big", cid, timeout=120)
    assert "Status: pinned" in out, out
    assert recursive_pins(home).count(v1(cid)) == 1
    stat = json.loads(ipfs(home, "dag", "stat", "--offline", "--enc=json", cid))
    assert (
        stat["TotalSize"] == json.loads(ipfs(laptop, "dag", "stat", "--enc=json", cid))["TotalSize"]
    )
    (request,) = requests_of(served, "laptop")
    assert request["pin"]["origins"] == peer_addresses(laptop), "Kubo sends its addresses"
    assert set(request["pin"]["origins"]) <= set(dial_guard.take()), "serve dialled them"
    assert request["delegates"] == peer_addresses(home)

    def remote_ls(*filters: str) -> list[str]:
        out = ipfs(laptop, "pin", "remote", "ls", "--service=home", *filters)
        return [line for line in out.splitlines() if line.strip()]

    assert remote_ls("--status=pinned") == [f"{cid}\tpinned\tbig"]
    assert remote_ls("--status=queued,pinning,failed") == []
    assert remote_ls(f"--cid={cid}") == [f"{cid}\tpinned\tbig"]
    assert remote_ls("--name=big") == [f"{cid}\tpinned\tbig"]
    assert remote_ls("--name=other") == []
    # the other account sees none of it
    assert requests_of(served, "desktop") == []

    ipfs(laptop, "pin", "remote", "rm", "--service=home", f"--cid={cid}")
    assert remote_ls("--status=queued,pinning,pinned,failed") == []
    wait_for(lambda: v1(cid) not in recursive_pins(home), 30, "the home node to unpin it")


def write_file(path: Path, data: bytes) -> str:
    """Write `data` to `path`; the path (for `ipfs add`)."""
    path.write_bytes(data)
    return str(path)


# --- 2. the full backup, and a restore from the home node alone -------------------------------


@pytest.mark.slow
def test_a_laptop_backed_up_by_pinsyncd_is_readable_from_home_alone(
    served: ServeProcess, home: KuboNode, kubo_factory: KuboFactory, tmp_path: Path
) -> None:
    """A laptop node with a folder tree and a file pinned; `pinsyncd sync --wait` backs them
    up to serve on the home node (the laptop's loopback addresses go as origins). Every
    request is `pinned`, for pinsyncd and for serve; every block is on the home node; with
    the laptop stopped, a fresh node that knows only the home node reads every byte back."""
    laptop = kubo_factory("laptop")
    files = random_tree(tmp_path / "photos")
    tree = ipfs(laptop, "add", "-r", "-Q", str(tmp_path / "photos")).strip()
    notes = os.urandom(400_000)
    single = ipfs(laptop, "add", "-Q", write_file(tmp_path / "notes.bin", notes)).strip()
    local = set(recursive_pins(laptop))
    assert {v1(tree), v1(single)} <= local

    config, env = laptop_config(tmp_path / "pinsyncd", laptop, served)
    started = time.monotonic()
    result = cli(
        ["sync", "--once", "--wait", "--timeout", "2m", "--json", "-c", str(config)],
        env,
        timeout=180,
    )
    print(f"pinsyncd sync --wait took {time.monotonic() - started:.2f}s")
    assert result.returncode == 0, result.stdout + result.stderr
    status = cli(["status", "--json", "-c", str(config)], env)
    assert status.returncode == 0, status.stderr
    home_status = json.loads(status.stdout)["services"]["home"]
    assert home_status["pinned"] == len(local), home_status
    assert (home_status["queued"], home_status["pinning"], home_status["failed"]) == (0, 0, 0)

    requests = requests_of(served, "laptop")
    assert {r["status"] for r in requests} == {"pinned"}
    assert sorted(v1(r["pin"]["cid"]) for r in requests) == sorted(local)
    assert set(recursive_pins(home)) >= local
    for cid in (tree, single):
        there = json.loads(ipfs(home, "dag", "stat", "--offline", "--enc=json", cid))
        here = json.loads(ipfs(laptop, "dag", "stat", "--offline", "--enc=json", cid))
        assert (there["TotalSize"], there["UniqueBlocks"]) == (
            here["TotalSize"],
            here["UniqueBlocks"],
        )

    laptop.stop()
    reader = kubo_factory("reader")
    ipfs(reader, "swarm", "connect", peer_addresses(home)[0])
    out = tmp_path / "restored"
    ipfs(reader, "--timeout=60s", "get", "-o", str(out), tree, timeout=90)
    restored = {
        str(path.relative_to(out)): path.read_bytes() for path in out.rglob("*") if path.is_file()
    }
    assert restored == files
    assert ipfs_bytes(reader, "--timeout=60s", "cat", single) == notes


def ipfs_bytes(node: KuboNode, *args: str, timeout: float = 90.0) -> bytes:
    result = subprocess.run(
        [str(IPFS_BIN), *args], env=node.env, capture_output=True, timeout=timeout, check=True
    )
    return result.stdout


# --- 3. a SIGKILL with pins pending ------------------------------------------------------------


@pytest.mark.slow
def test_pending_pins_survive_a_sigkill_of_serve(
    served: ServeProcess, home: KuboNode, kubo_factory: KuboFactory, tmp_path: Path
) -> None:
    """Requests for data only a laptop node has, which the home node is not connected to: they
    stay queued or pinning. serve is killed (SIGKILL) and started again on the same state and
    port; then the laptop dials the delegates, as a client does, and every request reaches
    `pinned`: none lost, none doubled, each CID pinned once on the home node."""
    laptop = kubo_factory("laptop")
    cids = [
        ipfs(laptop, "add", "-Q", write_file(tmp_path / f"f{i}.bin", os.urandom(300_000))).strip()
        for i in range(6)
    ]
    sent = [add_pin(served, "laptop", cid, name=f"f{i}") for i, cid in enumerate(cids)]
    sent.append(add_pin(served, "desktop", cids[0], name="again"))  # one CID, two accounts
    sent.append(add_pin(served, "laptop", cids[1], name="f1-again"))  # one CID twice
    wait_for(
        lambda: requests_of(served, "laptop", "pinning"), 30, "a pin to be under way (pinning)"
    )
    assert served.stop(signal.SIGKILL) == -signal.SIGKILL

    served.start()
    before = requests_of(served, "laptop") + requests_of(served, "desktop")
    assert sorted(r["requestid"] for r in before) == sorted(r["requestid"] for r in sent)
    assert {r["status"] for r in before} <= {"queued", "pinning"}, "the data is unreachable"

    ipfs(laptop, "swarm", "connect", *sent[0]["delegates"])
    for request in sent:
        user = "desktop" if request["pin"]["name"] == "again" else "laptop"
        assert settled(served, user, request["requestid"]) == "pinned"

    after = requests_of(served, "laptop") + requests_of(served, "desktop")
    assert sorted(r["requestid"] for r in after) == sorted(r["requestid"] for r in sent)
    assert {r["status"] for r in after} == {"pinned"}
    pins = recursive_pins(home)
    assert all(pins.count(v1(cid)) == 1 for cid in cids), pins


# --- 4. two accounts, one CID; a pin the node had before ---------------------------------------


@pytest.mark.slow
def test_two_accounts_share_one_pin_and_a_pin_made_by_hand_stays(
    served: ServeProcess, home: KuboNode, tmp_path: Path
) -> None:
    """Two accounts ask for one CID: one Kubo pin. Deleting one request keeps it, deleting the
    second removes it. A CID pinned by hand on the home node before is never unpinned nor
    renamed by serve, even after its only request is deleted; a direct pin by hand becomes
    recursive (the request needs every block) and keeps its name."""
    shared = ipfs(home, "add", "-Q", "--pin=false", write_file(tmp_path / "s", b"shared")).strip()
    by_hand = ipfs(home, "add", "-Q", "--pin-name=mine", write_file(tmp_path / "h", b"mine"))
    by_hand = by_hand.strip()
    direct = ipfs(home, "add", "-Q", "--pin=false", write_file(tmp_path / "d", b"direct"))
    direct = direct.strip()
    ipfs(home, "pin", "add", "--recursive=false", "--name=mine-direct", direct)
    assert v1(by_hand) in recursive_pins(home) and v1(shared) not in recursive_pins(home)

    first = add_pin(served, "laptop", shared, name="shared")
    second = add_pin(served, "desktop", shared, name="shared-too")
    hand = add_pin(served, "laptop", by_hand, name="mine-remote")
    hand_direct = add_pin(served, "desktop", direct, name="direct-remote")
    for user, request in (
        ("laptop", first),
        ("desktop", second),
        ("laptop", hand),
        ("desktop", hand_direct),
    ):
        assert settled(served, user, request["requestid"]) == "pinned"
    assert recursive_pins(home).count(v1(shared)) == 1

    delete(served, "laptop", first["requestid"])
    settle_unpins(served, home, tmp_path / "sentinel1")
    assert v1(shared) in recursive_pins(home), "the desktop's request still names it"
    assert requests_of(served, "desktop")[0]["status"] == "pinned"

    delete(served, "desktop", second["requestid"])
    wait_for(lambda: v1(shared) not in recursive_pins(home), 30, "the last request's unpin")

    delete(served, "laptop", hand["requestid"])
    delete(served, "desktop", hand_direct["requestid"])
    settle_unpins(served, home, tmp_path / "sentinel2")
    for cid, name in ((by_hand, "mine"), (direct, "mine-direct")):
        listed = ipfs(home, "pin", "ls", "--type=recursive", "--names", cid).split()
        assert listed == [cid, "recursive", name], "the user's own pin: kept, not renamed"


def delete(served: ServeProcess, user: str, requestid: str) -> None:
    status, body = served.call("DELETE", f"/pins/{requestid}", user)
    assert status == 202, body


def settle_unpins(served: ServeProcess, home: KuboNode, path: Path) -> None:
    """Wait until serve has handled the deletes sent so far: a request for a new CID, pinned
    and deleted after them, is unpinned (the pinner handles every pending unpin in each round,
    so one made later being done means the earlier ones were looked at)."""
    cid = ipfs(home, "add", "-Q", "--pin=false", write_file(path, os.urandom(64))).strip()
    request = add_pin(served, "laptop", cid)
    assert settled(served, "laptop", request["requestid"]) == "pinned"
    delete(served, "laptop", request["requestid"])
    wait_for(lambda: v1(cid) not in recursive_pins(home), 30, "the sentinel's unpin")
