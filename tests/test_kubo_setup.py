"""`pinsyncd init` and `pinsyncd import-kubo` against real Kubo: its pinning services added
with `ipfs pin remote service add`, its MFS policy switched on with `ipfs config`, its RPC on
a Unix socket behind API.Authorizations; the config they write is then used for real syncs.
And the warning when Kubo's MFS policy and `sync.mfs` pin the root to the same service."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pinsyncd.config import load_config
from tests import loopback_guard
from tests.daemon_helpers import ServiceSpec, acli, log_events, write_config
from tests.fake_psa import FakePinningService
from tests.peers import KuboNode

RPC_SECRET = "bearer:rpc-secret-4711"


def env_for(home: Path, repo: Path | None) -> dict[str, str]:
    """The CLI's environment: this checkout, a home of its own (so the user's config folder
    is the test's), and the Kubo repo."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PINSYNCD_", "XDG_"))}
    env["PYTHONPATH"] = loopback_guard.PYTHONPATH
    env["HOME"] = str(home)
    env.pop("IPFS_PATH", None)
    if repo is not None:
        env["IPFS_PATH"] = str(repo)
    return env


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder with a short path: a Unix socket's path may not be longer than 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="pk", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def configure(node: KuboNode, *args: str) -> None:
    """`ipfs config ...` on a node whose daemon is not running (written to the repo)."""
    saved, node.auth = node.auth, None
    try:
        node.cli("config", *args)
    finally:
        node.auth = saved


def add_services(
    node: KuboNode, *services: tuple[str, str, str], mfs: tuple[str, ...] = ()
) -> None:
    """`ipfs pin remote service add NICKNAME ENDPOINT KEY` for each, and Kubo's own MFS policy
    switched on for the nicknames in `mfs` (the daemon not yet running)."""
    for nickname, endpoint, key in services:
        node.cli("pin", "remote", "service", "add", nickname, endpoint, key)
    for nickname in mfs:
        configure(node, "--json", f"Pinning.RemoteServices.{nickname}.Policies.MFS.Enable", "true")


def add_file(node: KuboNode, content: bytes) -> str:
    return node.cli("add", "-q", "--pin=true", stdin=content)


async def test_init_from_kubo_on_a_unix_socket_with_rpc_auth_and_two_services(
    peers_installed: None, tmp_path: Path, short_dir: Path
) -> None:
    node = KuboNode(tmp_path / "repo", online=False, auth=RPC_SECRET)
    node.init()
    configure(node, "Addresses.API", f"/unix{short_dir}/api.sock")
    scopes = {
        "narrow": {"AuthSecret": "bearer:only-id", "AllowedPaths": ["/api/v0/id"]},
        "pinsyncd": {"AuthSecret": RPC_SECRET, "AllowedPaths": ["/api/v0"]},
    }
    configure(node, "--json", "API.Authorizations", json.dumps(scopes))
    home = tmp_path / "home"
    config_path = tmp_path / "etc" / "config.yaml"
    env = {**env_for(home, node.repo), "PINSYNCD_CONFIG": str(config_path)}
    async with (
        FakePinningService(token="alpha-key-0001") as alpha,
        FakePinningService(token="beta-key-0002") as beta,
    ):
        add_services(
            node,
            ("alpha", alpha.url, "alpha-key-0001"),
            ("beta", beta.url, "beta-key-0002"),
            mfs=("alpha",),
        )
        node.start()
        try:
            cids = {add_file(node, f"file {i}".encode()) for i in range(3)}
            code, out, err = await acli(["init"], env)
            assert code == 0, err
            text = config_path.read_text()
            for secret in ("alpha-key-0001", "beta-key-0002", "rpc-secret-4711"):
                assert secret not in text + out + err, "a key is never written or printed"
            assert f"api: /unix{short_dir}/api.sock" in text
            assert "token_file: tokens/kubo-rpc" in text
            assert "Kubo's own MFS policy already pins the MFS root to alpha" in text
            tokens = config_path.parent / "tokens"
            assert stat.S_IMODE(tokens.stat().st_mode) == 0o700
            expected = {"alpha": "alpha-key-0001", "beta": "beta-key-0002", "kubo-rpc": RPC_SECRET}
            for name, secret in expected.items():
                assert (tokens / name).read_text().strip() == secret
                assert stat.S_IMODE((tokens / name).stat().st_mode) == 0o600
            assert "note: Kubo's own MFS policy pins the MFS root to alpha" in out
            assert "next: pinsyncd check-config, then pinsyncd sync --once" in out

            # The other commands find it where init wrote it: no -c needed.
            code, out, err = await acli(["check-config"], env)
            assert code == 0, err
            assert "RPC secret from" in out and f"unix:{short_dir}/api.sock" in out
            code, out, err = await acli(["sync", "--once"], env)
            assert code in (0, 3), err
            for svc in (alpha, beta):
                assert cids <= {pin["pin"]["cid"] for pin in svc.pins}

            # Without the secret the node says why, and what to do.
            config_path.write_text(text.replace("  token_file: tokens/kubo-rpc\n", ""))
            code, out, err = await acli(["sync", "--once"], env)
            assert "HTTP 403" in out + err and "node.token_file" in out + err
        finally:
            node.stop()
    code, _, err = await acli(["init"], env)
    assert code == 1 and "exists; --force replaces it" in err


async def test_init_without_kubos_config_asks_its_rpc_and_leaves_the_keys_to_fill_in(
    peers_installed: None, tmp_path: Path
) -> None:
    """Kubo never gives a service's key over its RPC: without its config file, the services
    come from the RPC and their token files are left for the user to fill in."""
    node = KuboNode(tmp_path / "repo", online=False)
    async with FakePinningService(token="gamma-key-0003") as gamma:
        node.init()
        add_services(node, ("gamma", gamma.url, "gamma-key-0003"))
        node.start()
        try:
            only_api = tmp_path / "only-api"  # the repo as seen by a user who cannot read it
            only_api.mkdir()
            shutil.copy(node.repo / "api", only_api / "api")
            config_path = tmp_path / "conf" / "pinsyncd.yaml"
            env = env_for(tmp_path / "home", None)
            args = ["init", "--output", str(config_path), "--ipfs-path", str(only_api)]
            code, out, err = await acli(args, env)
            assert code == 0, err
            assert f"key to put in {config_path.parent / 'tokens' / 'gamma'}" in out
            assert "fill in (the key alone, then chmod 600)" in out
            code, out, err = await acli(["check-config", "-c", str(config_path)], env)
            assert code == 78 and "services[0].token_file" in err and "does not exist" in err
            (config_path.parent / "tokens").mkdir(mode=0o700)
            (config_path.parent / "tokens" / "gamma").write_text("gamma-key-0003\n")
            (config_path.parent / "tokens" / "gamma").chmod(0o600)
            code, out, err = await acli(["check-config", "-c", str(config_path)], env)
            assert code == 0, err
            code, out, err = await acli(["sync", "--once", "-c", str(config_path)], env)
            assert code in (0, 3), err
        finally:
            node.stop()


async def test_import_kubo_adds_only_the_services_the_config_lacks(
    peers_installed: None, tmp_path: Path
) -> None:
    node = KuboNode(tmp_path / "repo", online=False)
    async with (
        FakePinningService(token="known-key-1") as known,
        FakePinningService(token="new-key-2") as new,
    ):
        node.init()
        add_services(
            node, ("known", known.url + "/", "known-key-1"), ("fresh.svc", new.url, "new-key-2")
        )
        node.start()
        try:
            config_path = tmp_path / "config.yaml"
            env = write_config(
                config_path,
                node_api=node.api_url,
                services=[ServiceSpec("mine", known.url, "known-key-1")],
            )
            env = {**env, "IPFS_PATH": str(node.repo)}
            before = config_path.read_text()
            code, out, err = await acli(["import-kubo", "-c", str(config_path), "--dry-run"], env)
            assert code == 0, err
            assert "would add" in out and "name: fresh.svc" in out
            assert config_path.read_text() == before and not (tmp_path / "tokens").exists()

            code, out, err = await acli(["import-kubo", "-c", str(config_path)], env)
            assert code == 0, err
            assert "added 1 service(s)" in out and "skipped  known" in out
            assert "new-key-2" not in config_path.read_text() + out + err
            config = load_config(config_path, env=env)
            assert [s.name for s in config.services] == ["mine", "fresh.svc"]
            assert (tmp_path / "tokens" / "fresh.svc").read_text().strip() == "new-key-2"

            code, out, err = await acli(["import-kubo", "-c", str(config_path)], env)
            assert code == 0 and "nothing to add" in out
        finally:
            node.stop()


async def test_kubos_mfs_policy_and_sync_mfs_on_one_service_are_warned_everywhere(
    peers_installed: None, tmp_path: Path
) -> None:
    node = KuboNode(tmp_path / "repo", online=False)
    async with FakePinningService(token="delta-key-4") as delta:
        node.init()
        add_services(node, ("delta", delta.url, "delta-key-4"), mfs=("delta",))
        node.start()
        try:
            config_path = tmp_path / "config.yaml"
            env = write_config(
                config_path,
                node_api=node.api_url,
                services=[ServiceSpec("d", delta.url, "delta-key-4")],
                extra_sync="mfs: true",
            )
            code, out, err = await acli(["check-config", "-c", str(config_path)], env)
            assert code == 0, err
            assert "warning: Kubo's own MFS policy pins the MFS root to its service 'delta'" in err
            code, out, err = await acli(["sync", "--once", "-c", str(config_path)], env)
            assert code in (0, 3), err
            assert any(e["event"] == "the MFS root is pinned twice" for e in log_events(out + err))
            code, out, err = await acli(["status", "-c", str(config_path)], env)
            assert "WARNING: Kubo's own MFS policy pins the MFS root" in out

            node.cli(
                "config", "--json", "Pinning.RemoteServices.delta.Policies.MFS.Enable", "false"
            )
            code, out, err = await acli(["sync", "--once", "-c", str(config_path)], env)
            code, out, err = await acli(["status", "-c", str(config_path)], env)
            assert "WARNING" not in out, "the warning goes once it no longer holds"
        finally:
            node.stop()
