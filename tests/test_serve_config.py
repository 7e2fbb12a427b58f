"""The `serve:` section of the config: what `pinsyncd serve` needs, its defaults, every
mistake said with its key and line, and the commands that refuse a config they cannot use."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pinsyncd.config import EX_CONFIG, ConfigError, load_config

SERVE_ONLY = """\
node:
  api: http://127.0.0.1:5001
serve:
  users:
    - name: laptop
      token_file: laptop.token
    - name: phone
      token_env: PHONE_TOKEN
      max_pins: 10
"""


def write(tmp_path: Path, text: str, tokens: dict[str, str] | None = None) -> Path:
    for name, value in (tokens if tokens is not None else {"laptop.token": "t-laptop"}).items():
        (tmp_path / name).write_text(value)
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def problems(path: Path, env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env)
    return [p.render("c.yaml") for p in caught.value.problems]


def test_a_config_with_only_a_serve_section_loads_with_its_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, SERVE_ONLY), env={"PHONE_TOKEN": "t-phone", "HOME": "/h"})
    assert config.services == ()
    assert config.serve is not None
    settings = config.serve.settings
    assert (settings.listen, settings.pin_concurrency, settings.pin_timeout) == (
        "127.0.0.1:9098",
        4,
        600.0,
    )
    assert settings.origins == "public" and settings.delegates == []
    assert config.serve.state_path == Path("/h/.local/state/pinsyncd/serve.db")
    assert [(a.name, a.max_pins) for a in config.serve.accounts] == [
        ("laptop", None),
        ("phone", 10),
    ]
    assert [a.token.reveal() for a in config.serve.accounts] == ["t-laptop", "t-phone"]


def test_serve_paths_are_taken_from_the_configs_folder(tmp_path: Path) -> None:
    text = SERVE_ONLY.replace(
        "serve:\n",
        "serve:\n  state: s/serve.db\n  tls:\n    cert_file: c.pem\n    key_file: k.pem\n",
    )
    config = load_config(write(tmp_path, text), env={"PHONE_TOKEN": "x"})
    assert config.serve is not None
    assert config.serve.state_path == tmp_path / "s" / "serve.db"
    assert config.serve.tls == (tmp_path / "c.pem", tmp_path / "k.pem")


def test_every_mistake_of_the_serve_section_is_said_with_its_line(tmp_path: Path) -> None:
    text = """\
serve:
  listen: everywhere
  pin_timeout: 10
  origins: some
  delegates: [/ip4/1.2.3.4/tcp/4001]
  users:
    - name: laptop
    - name: laptop
      token_file: missing.token
      token_env: X
    - name: bad name
      token_env: 1X
      max_pins: 0
"""
    found = problems(write(tmp_path, text, {}), env={})
    for expected in (
        "c.yaml:2: serve.listen: 'everywhere' is not HOST:PORT (as 127.0.0.1:9123)",
        "c.yaml:3: serve.pin_timeout: 10 has no unit; write e.g. 10s or 10m",
        "c.yaml:7: serve.users[0]: give exactly one of token_env or token_file",
        "c.yaml:8: serve.users[1]: give exactly one of token_env or token_file",
        "c.yaml:8: serve.users[1].name: user name 'laptop' is already used by serve.users[0]",
    ):
        assert expected in found
    assert any(p.startswith("c.yaml:4: serve.origins:") for p in found)
    assert any(p.startswith("c.yaml:5: serve.delegates[0]:") and "/p2p/" in p for p in found)
    assert any(p.startswith("c.yaml:11: serve.users[2].name: must be 1-64") for p in found)
    assert any(p.startswith("c.yaml:13: serve.users[2].max_pins:") for p in found)


def test_a_serve_section_without_users_or_with_unreadable_tokens(tmp_path: Path) -> None:
    assert problems(write(tmp_path, "serve:\n  users: []\n", {}), env={}) == [
        "c.yaml:2: serve.users: list at least one user (a name and a token_file or token_env)"
    ]
    found = problems(write(tmp_path, SERVE_ONLY, {}), env={})
    assert any("serve.users[0].token_file" in p and "laptop.token" in p for p in found)
    assert any("serve.users[1].token_env" in p and "PHONE_TOKEN" in p for p in found)


def test_two_users_with_the_same_token_are_refused(tmp_path: Path) -> None:
    found = problems(write(tmp_path, SERVE_ONLY), env={"PHONE_TOKEN": "t-laptop"})
    assert found == [
        "c.yaml:8: serve.users[1].token_env: is the same token as user laptop's; "
        "give each user its own"
    ]


def test_serve_alone_with_every_key_commented_out_is_off(tmp_path: Path) -> None:
    assert problems(write(tmp_path, "serve:\n  # users:\n", {}), env={}) == [
        "c.yaml:1: services: required key is missing"
    ]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "PINSYNCD_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "pinsyncd", *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=60,
    )


def test_check_config_shows_the_serve_section_and_never_a_token(tmp_path: Path) -> None:
    path = write(tmp_path, SERVE_ONLY)
    result = cli("check-config", "-c", str(path), env={"PHONE_TOKEN": "t-phone"})
    assert result.returncode == 0, result.stderr
    assert "  serve    http://127.0.0.1:9098 (state " in result.stdout
    assert "  user     laptop (token from " in result.stdout
    assert "  user     phone (token from $PHONE_TOKEN, at most 10 pins)" in result.stdout
    assert "t-laptop" not in result.stdout + result.stderr
    assert "t-phone" not in result.stdout + result.stderr


def test_commands_that_back_up_refuse_a_config_that_only_serves(tmp_path: Path) -> None:
    path = write(tmp_path, SERVE_ONLY)
    for command in ("run", "sync", "ls"):
        result = cli(command, "-c", str(path), env={"PHONE_TOKEN": "t-phone"})
        assert result.returncode == EX_CONFIG
        assert "lists no services, only a serve: section" in result.stderr
        assert "Traceback" not in result.stderr


def test_serve_refuses_a_config_without_a_serve_section(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("services:\n  - name: a\n    endpoint: https://a.example\n    token_env: T\n")
    result = cli("serve", "-c", str(path), env={"T": "x"})
    assert result.returncode == EX_CONFIG
    assert "has no serve: section" in result.stderr


def test_serve_refuses_unreadable_tokens_with_their_line(tmp_path: Path) -> None:
    path = write(tmp_path, SERVE_ONLY, {})
    result = cli("serve", "-c", str(path), env={"PHONE_TOKEN": "t-phone"})
    assert result.returncode == EX_CONFIG
    assert f"{path}:6: serve.users[0].token_file:" in result.stderr
    assert "Traceback" not in result.stderr


def test_listening_beyond_loopback_without_tls_is_warned_about(tmp_path: Path) -> None:
    text = SERVE_ONLY.replace("serve:\n", "serve:\n  listen: 0.0.0.0:9098\n")
    result = cli("check-config", "-c", str(write(tmp_path, text)), env={"PHONE_TOKEN": "x"})
    assert result.returncode == 0
    assert "warning: serve.listen 0.0.0.0:9098 has no serve.tls" in result.stderr
    config = load_config(write(tmp_path, SERVE_ONLY), env={"PHONE_TOKEN": "x"})
    assert config.warnings == ()
