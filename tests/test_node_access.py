"""How the config names the node and its secret, and where relative token files are read
from; the pieces `init` writes a config with. Real files, no peers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from pinsyncd.config import ConfigError, default_config_path, load_config, node_api_url
from pinsyncd.config.schema import user_config_path
from pinsyncd.data import example_config
from pinsyncd.kubo_setup.command import default_init_path
from pinsyncd.kubo_setup.render import NewService, render_config, service_name
from pinsyncd.rpc_auth import RpcAuthError, authorization_header


@pytest.mark.parametrize(
    ("written", "api"),
    [
        ("/ip4/127.0.0.1/tcp/5001", "http://127.0.0.1:5001"),
        ("/ip4/0.0.0.0/tcp/5001", "http://127.0.0.1:5001"),
        ("/ip6/::/tcp/5001", "http://[::1]:5001"),
        ("/dns/node.lan/tcp/443/https", "https://node.lan"),
        ("/unix/run/ipfs/api.sock", "unix:/run/ipfs/api.sock"),
        ("unix:/run/ipfs/api.sock", "unix:/run/ipfs/api.sock"),
        ("http://0.0.0.0:5001/api/v0/", "http://127.0.0.1:5001"),
    ],
)
def test_node_addresses_as_kubo_writes_them(written: str, api: str) -> None:
    assert node_api_url(written) == api


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("http://alice:pw@127.0.0.1:5001", "must not contain credentials"),
        ("/unix/", "absolute path"),
        ("/ip4/127.0.0.1/udp/5001", "/unix/run/ipfs/api.sock"),
    ],
)
def test_node_addresses_refused(written: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        node_api_url(written)


def test_credentials_in_node_api_are_refused_and_never_printed(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "node:\n  api: http://alice:hunter22@127.0.0.1:5001\n"
        "services:\n  - {name: a, endpoint: http://127.0.0.1:1, token_env: T}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(config, env={"T": "token"})
    rendered = [p.render(caught.value.filename) for p in caught.value.problems]
    assert any("node.api" in r and "node.token_file" in r for r in rendered)
    assert not any("hunter22" in r for r in rendered)


def test_relative_token_files_are_read_from_the_configs_folder(tmp_path: Path) -> None:
    folder = tmp_path / "etc"
    (folder / "tokens").mkdir(parents=True)
    (folder / "tokens" / "svc").write_text("service-token\n")
    (folder / "tokens" / "rpc").write_text("basic:alice:pw\n")
    for name in ("svc", "rpc"):
        (folder / "tokens" / name).chmod(0o600)
    config_path = folder / "config.yaml"
    config_path.write_text(
        "node:\n  token_file: tokens/rpc\n"
        "services:\n  - {name: a, endpoint: http://127.0.0.1:1, token_file: tokens/svc}\n"
    )
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    cwd = os.getcwd()
    os.chdir(elsewhere)  # not where the files are
    try:
        config = load_config(config_path, env={})
    finally:
        os.chdir(cwd)
    assert config.services[0].token.reveal() == "service-token"
    assert config.node_token is not None and config.node_token.reveal() == "basic:alice:pw"
    assert config.warnings == ()


def test_a_node_secret_that_is_missing_or_of_an_unknown_type_is_named_with_its_line(
    tmp_path: Path,
) -> None:
    config_path = tmp_path / "config.yaml"
    config_path.write_text(
        "node:\n  api: http://127.0.0.1:5001\n  token_file: rpc\n"
        "services:\n  - {name: a, endpoint: http://127.0.0.1:1, token_env: T}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(config_path, env={"T": "t"})
    assert [(p.path, p.line) for p in caught.value.problems] == [("node.token_file", 3)]
    assert "does not exist" in caught.value.problems[0].message
    (tmp_path / "rpc").write_text("digest:top-secret-value\n")
    (tmp_path / "rpc").chmod(0o600)
    with pytest.raises(ConfigError) as caught:
        load_config(config_path, env={"T": "t"})
    assert "bearer:TOKEN or basic:USER:PASSWORD" in caught.value.problems[0].message
    assert "digest" not in caught.value.problems[0].message, "part of a secret is not shown"


@pytest.mark.parametrize(
    ("secret", "header"),
    [
        ("bearer:abc", "Bearer abc"),
        ("abc", "Bearer abc"),
        ("basic:alice:pw", "Basic YWxpY2U6cHc="),
        ("basic:YWxpY2U6cHc=", "Basic YWxpY2U6cHc="),
    ],
)
def test_rpc_secrets_become_the_header_kubo_compares(secret: str, header: str) -> None:
    assert authorization_header(secret) == header


def test_an_rpc_secret_of_an_unknown_type_is_refused() -> None:
    with pytest.raises(RpcAuthError):
        authorization_header("digest:abc")


def test_service_names_from_kubos_nicknames() -> None:
    assert service_name("pinata", []) == "pinata"
    assert service_name("My Pinata!", []) == "My-Pinata"
    assert service_name("pinata", ["pinata", "pinata-2"]) == "pinata-3"
    assert service_name("äöü", []) == "service"


def test_the_rendered_config_is_the_commented_example_filled_in() -> None:
    services = [
        NewService("on", "https://on.example/psa", "tokens/on", "on"),
        NewService("x-2", "https://x.example", "tokens/x-2", "x"),
    ]
    text = render_config(
        example_config(),
        api="/unix/run/ipfs/api.sock",
        node_token=True,
        services=services,
        kubo_mfs=["on"],
        origin="the Kubo repo /home/a/.ipfs",
    )
    data = yaml.safe_load(text)
    assert data["node"] == {
        "api": "/unix/run/ipfs/api.sock",
        "token_file": "tokens/kubo-rpc",
        "timeout": "60s",
    }
    assert [s["name"] for s in data["services"]] == ["on", "x-2"], "'on' stays a string"
    assert "state" not in data or not data["state"] or "path" not in data["state"]
    assert "# Kubo calls it 'x'." in text
    assert "#     concurrency: 4" in text, "the example's explanations stay, commented"
    assert text.count("# pinsyncd configuration.") == 1


def test_where_init_writes_and_the_other_commands_look(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"HOME": str(tmp_path)}
    user = tmp_path / ".config" / "pinsyncd" / "config.yaml"
    assert user_config_path(env) == user
    assert user_config_path({**env, "XDG_CONFIG_HOME": "/x"}) == Path("/x/pinsyncd/config.yaml")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert default_init_path(env) == user
    assert default_init_path({**env, "PINSYNCD_CONFIG": "/c.yaml"}) == Path("/c.yaml")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert default_init_path(env) == Path("/etc/pinsyncd/config.yaml")
    assert default_config_path(env) == Path("/etc/pinsyncd/config.yaml")
    user.parent.mkdir(parents=True)
    user.write_text("")
    assert default_config_path(env) == user, "the user's own config, once there is one"


def test_init_without_any_kubo_still_writes_a_config_to_complete(tmp_path: Path) -> None:
    """No repo, no node: the config is written with the default address and the example
    services commented out, and the user is told what to add."""
    import subprocess
    import sys

    from tests import loopback_guard

    target = tmp_path / "c.yaml"
    env = {
        "HOME": str(tmp_path),
        "IPFS_PATH": str(tmp_path / "no-repo"),
        "PINSYNCD_CONFIG": str(target),
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": loopback_guard.PYTHONPATH,
    }
    run = subprocess.run(
        [sys.executable, "-m", "pinsyncd", "init", "--log-format", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert f"note: no Kubo repo at {tmp_path / 'no-repo'}" in run.stdout
    assert "next: add a service under services:" in run.stdout
    data = yaml.safe_load(target.read_text())
    assert data["node"]["api"] == "/ip4/127.0.0.1/tcp/5001"
    assert data["services"] is None


def test_services_with_every_entry_commented_out_says_to_list_one(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("services:\n  # - name: pinata\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config, env={})
    assert [p.render("c.yaml") for p in caught.value.problems] == [
        "c.yaml:1: services: list at least one service"
    ]
