"""The config contract: every error names the key path and the line, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pinsyncd.cli import main
from pinsyncd.config import EX_CONFIG, ConfigError, load_config, parse_config
from pinsyncd.durations import format_duration, parse_duration

ROOT = Path(__file__).resolve().parent.parent
ENV = {"TOKEN": "t0ken-value", "HOME": "/home/someone"}

MINIMAL = """\
services:
  - name: a
    endpoint: https://a.example/psa
    token_env: TOKEN
"""


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, filename="c.yaml", env=ENV if env is None else env)
    return [p.render("c.yaml") for p in caught.value.problems]


def test_minimal_config_gets_defaults() -> None:
    config = parse_config(MINIMAL, env=ENV)
    assert config.node.api == "http://127.0.0.1:5001"
    assert config.sync.interval == 30
    assert config.state_path == Path("/home/someone/.local/state/pinsyncd/state.db")
    (service,) = config.services
    assert (service.name, service.endpoint, service.concurrency) == (
        "a",
        "https://a.example/psa",
        4,
    )
    assert service.token.reveal() == "t0ken-value"


def test_example_config_parses(tmp_path: Path) -> None:
    token_file = tmp_path / "filebase"
    token_file.write_text("filebase-secret\n")
    token_file.chmod(0o600)
    env = {"PINATA_TOKEN": "p", "CREDENTIALS_DIRECTORY": str(tmp_path)}
    config = load_config(ROOT / "config.example.yaml", env=env)
    assert [s.name for s in config.services] == ["pinata", "filebase"]
    assert config.services[1].token.reveal() == "filebase-secret"
    assert config.services[1].token.source == str(token_file)
    assert config.warnings == ()
    assert config.state_path == Path("/var/lib/pinsyncd/state.db")


def test_unknown_key_is_named_with_line() -> None:
    text = MINIMAL + "sync:\n  intervall: 5m\n"
    assert problems(text) == ["c.yaml:6: sync.intervall: unknown key (did you mean interval?)"]
    text = MINIMAL + "node:\n  zzz: 5m\n"
    assert problems(text) == [
        "c.yaml:6: node.zzz: unknown key "
        "(allowed here: api, token_file, timeout, previous_peer_ids)"
    ]


def test_wrong_types() -> None:
    text = """\
sync:
  interval: [1]
services:
  - name: a
    endpoint: https://a.example
    token_env: TOKEN
    concurrency: "4"
    allow_insecure_http: "yes"
"""
    assert problems(text) == [
        "c.yaml:2: sync.interval: expected a duration like 30s, 10m, 2h or 1d",
        "c.yaml:7: services[0].concurrency: must be a whole number",
        "c.yaml:8: services[0].allow_insecure_http: must be true or false",
    ]


def test_duplicate_service_names_reported_with_other_errors() -> None:
    text = MINIMAL + "  - name: a\n    endpoint: https://b.example/pins\n    token_env: TOKEN\n"
    found = problems(text)
    assert "c.yaml:5: services[1].name: service name 'a' is already used by services[0]" in found
    assert any(
        p.startswith("c.yaml:6: services[1].endpoint: must not end with /pins") for p in found
    )


def test_missing_token_env_and_file(tmp_path: Path) -> None:
    text = f"""\
services:
  - name: a
    endpoint: https://a.example
    token_env: NOT_SET_ANYWHERE
  - name: b
    endpoint: https://b.example
    token_file: {tmp_path}/missing
"""
    assert problems(text) == [
        "c.yaml:4: services[0].token_env: environment variable NOT_SET_ANYWHERE is not set",
        f"c.yaml:7: services[1].token_file: token file {tmp_path}/missing does not exist",
    ]


def test_no_token_or_two_tokens_or_inline_token() -> None:
    text = """\
services:
  - name: a
    endpoint: https://a.example
  - name: b
    endpoint: https://b.example
    token_env: TOKEN
    token_file: /x
  - name: c
    endpoint: https://c.example
    token: plain-text-secret
"""
    found = problems(text)
    assert "c.yaml:2: services[0]: give exactly one of token_env or token_file" in found
    assert "c.yaml:4: services[1]: give exactly one of token_env or token_file" in found
    assert (
        "c.yaml:10: services[2].token: tokens are not written in the config; "
        "use token_env or token_file" in found
    )
    assert not any("plain-text-secret" in p for p in found)


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        ("https://a.example/psa/pins", "must not end with /pins"),
        ("https://a.example/psa/pins/", "must not end with /pins"),
        ("https://a.example/psa?key=1", "must not have a query string"),
        ("ftp://a.example/psa", "must be an http:// or https:// URL"),
        ("https://user:pw@a.example/psa", "must not contain credentials"),
        ("not a url", "must be an http:// or https:// URL"),
    ],
)
def test_bad_endpoints(endpoint: str, message: str) -> None:
    text = f"services:\n  - name: a\n    endpoint: '{endpoint}'\n    token_env: TOKEN\n"
    (found,) = problems(text)
    assert found.startswith("c.yaml:3: services[0].endpoint: ")
    assert message in found


def test_endpoint_is_normalized() -> None:
    text = MINIMAL.replace("https://a.example/psa", "https://a.example//psa//")
    assert parse_config(text, env=ENV).services[0].endpoint == "https://a.example/psa"


def test_plain_http_only_for_loopback_unless_allowed() -> None:
    remote = MINIMAL.replace("https://a.example/psa", "http://a.example/psa")
    (found,) = problems(remote)
    assert "plain http://" in found
    allowed = remote + "    allow_insecure_http: true\n"
    assert parse_config(allowed, env=ENV).services[0].endpoint == "http://a.example/psa"
    for host in ("127.0.0.1:3000", "localhost:3000", "[::1]:3000"):
        loopback = MINIMAL.replace("https://a.example/psa", f"http://{host}")
        assert parse_config(loopback, env=ENV).services[0].endpoint == f"http://{host}"


def test_node_api_accepts_multiaddr() -> None:
    text = "node:\n  api: /ip4/127.0.0.1/tcp/45001\n" + MINIMAL
    assert parse_config(text, env=ENV).node.api == "http://127.0.0.1:45001"
    (found,) = problems("node:\n  api: /ip4/127.0.0.1/udp/1\n" + MINIMAL)
    assert found.startswith("c.yaml:2: node.api: a multiaddr must look like")


def test_yaml_syntax_error_names_line() -> None:
    (found,) = problems("services:\n  - name: a\n    endpoint: [unclosed\n")
    assert found.startswith("c.yaml:4: invalid YAML")


def test_duplicate_yaml_key() -> None:
    (found,) = problems(MINIMAL + "sync:\n  interval: 1m\nsync:\n  interval: 2m\n")
    assert found == "c.yaml:7: sync: key appears twice"


def test_every_problem_of_a_file_is_reported_at_once() -> None:
    """A key that appears twice, a cross-entry check, `sync.replicas` and a token that cannot
    be read no longer wait for the other problems to be fixed first: one run, one list."""
    text = (
        "services:\n"
        "  - name: a\n"
        "    endpoint: https://a.example/psa\n"
        "    token_env: MISSING_TOKEN\n"
        "  - name: a\n"
        "    endpoint: ftp://b.example\n"
        "    token_env: TOKEN\n"
        "    concurrency: 0\n"
        "sync:\n"
        "  interval: soon\n"
        "  replicas: 3\n"
        "  interval: 1m\n"
        "retry:\n"
        "  base: -1s\n"
    )
    found = problems(text)
    assert [p.split(": ")[0:2] for p in found] == [
        ["c.yaml:4", "services[0].token_env"],
        ["c.yaml:5", "services[1].name"],
        ["c.yaml:6", "services[1].endpoint"],
        ["c.yaml:8", "services[1].concurrency"],
        ["c.yaml:11", "sync.replicas"],
        ["c.yaml:12", "sync.interval"],
        ["c.yaml:14", "retry.base"],
    ], found
    assert "MISSING_TOKEN" in found[0] and "already used by services[0]" in found[1]
    assert "key appears twice" in found[5]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "c.yaml: the file is empty; see config.example.yaml"),
        ("- a\n", "c.yaml:1: the top level must be a mapping of keys"),
        ("node: {}\n", "c.yaml:1: services: required key is missing"),
        ("services: []\n", "c.yaml:1: services: list at least one service"),
    ],
)
def test_shape_errors(text: str, expected: str) -> None:
    assert problems(text) == [expected]


def test_bad_service_name_and_concurrency_range() -> None:
    text = MINIMAL.replace("name: a", "name: 'has space'") + "    concurrency: 0\n"
    found = problems(text)
    assert any(p.startswith("c.yaml:2: services[0].name: must be 1-64") for p in found)
    assert any(p.startswith("c.yaml:5: services[0].concurrency:") for p in found)


def test_state_path_defaults_and_relative(tmp_path: Path) -> None:
    systemd = parse_config(MINIMAL, env={**ENV, "STATE_DIRECTORY": "/var/lib/pinsyncd"})
    assert systemd.state_path == Path("/var/lib/pinsyncd/state.db")
    xdg = parse_config(MINIMAL, env={**ENV, "XDG_STATE_HOME": "/x/state"})
    assert xdg.state_path == Path("/x/state/pinsyncd/state.db")
    config_file = tmp_path / "config.yaml"
    config_file.write_text(MINIMAL + "state:\n  path: data/state.db\n")
    assert load_config(config_file, env=ENV).state_path == tmp_path / "data" / "state.db"


def test_token_file_from_credentials_directory_and_permission_warning(tmp_path: Path) -> None:
    token = tmp_path / "svc"
    token.write_text("abc\n")
    token.chmod(0o644)
    text = MINIMAL.replace("token_env: TOKEN", "token_file: ${CREDENTIALS_DIRECTORY}/svc")
    config = parse_config(text, env={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert config.services[0].token.reveal() == "abc"
    assert config.warnings == (
        f"services[0] (a): token file {token} is readable by other users; chmod 600 it",
    )
    (found,) = problems(text, env={})
    assert "refers to ${CREDENTIALS_DIRECTORY}, which is not set" in found


def test_secret_never_shows_in_repr() -> None:
    config = parse_config(MINIMAL, env=ENV)
    assert "t0ken-value" not in repr(config)
    assert "t0ken-value" not in str(config.services[0])


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("10m", 600), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), ("500ms", 0.5)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["10", "ten minutes", "5x", "", "1h 2"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0.25, 45, 600, 5400, 90000)] == [
        "250ms",
        "45s",
        "10m",
        "1h30m",
        "1d1h",
    ]


def test_check_config_cli_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(MINIMAL)
    os.environ["TOKEN"] = "cli-token-value"
    try:
        assert main(["check-config", "-c", str(path)]) == 0
    finally:
        del os.environ["TOKEN"]
    out = capsys.readouterr().out
    assert f"{path}: OK" in out
    assert "token from $TOKEN" in out
    assert "cli-token-value" not in out


def test_check_config_cli_errors_exit_78(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("services:\n  - name: a\n    endpoint: https://a.example/pins\n")
    result = subprocess.run(
        [sys.executable, "-m", "pinsyncd", "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PINSYNCD_CONFIG"},
    )
    assert result.returncode == EX_CONFIG
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert f"{path}:2: services[0]: give exactly one of token_env or token_file" in lines
    assert lines[-1] == f"pinsyncd: {path}: 2 problems, nothing was started"


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "from-env.yaml"
    path.write_text(MINIMAL)
    result = subprocess.run(
        [sys.executable, "-m", "pinsyncd", "check-config"],
        capture_output=True,
        text=True,
        env={**os.environ, "PINSYNCD_CONFIG": str(path), "TOKEN": "x"},
    )
    assert result.returncode == 0, result.stderr
    assert f"{path}: OK" in result.stdout


# --- policies ---------------------------------------------------------------------------------


def test_policy_defaults_back_up_every_recursive_pin_everywhere_and_never_delete() -> None:
    config = parse_config(MINIMAL, env=ENV)
    sync = config.sync
    assert (sync.pin_types, sync.include, sync.exclude, sync.mfs) == (["recursive"], [], [], False)
    assert (sync.replicas, config.replicas, sync.trim_extra) == (None, 1, False)
    assert (sync.unpin, sync.unpin_grace, sync.propagate_names) == ("keep", 86400.0, False)
    assert sync.failover_after == 3600.0


def test_policy_keys_are_read_and_services_ordered_by_priority() -> None:
    text = """\
sync:
  replicas: 2
  failover_after: 30m
  trim_extra: true
  unpin: mirror
  unpin_grace: 2h
  pin_types: [recursive, direct]
  include: ['photos/*', QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG]
  exclude: ['*.tmp']
  mfs: true
  propagate_names: true
services:
  - {name: a, endpoint: https://a.example, token_env: TOKEN}
  - {name: b, endpoint: https://b.example, token_env: TOKEN, priority: -5}
  - {name: c, endpoint: https://c.example, token_env: TOKEN}
"""
    config = parse_config(text, env=ENV)
    assert config.replicas == 2 and config.service_order == ("b", "a", "c")
    assert (config.sync.unpin, config.sync.unpin_grace) == ("mirror", 7200.0)
    assert config.sync.failover_after == 1800.0


def test_policy_mistakes_are_named_with_their_line() -> None:
    text = MINIMAL + (
        "sync:\n"
        "  unpin: delete\n"
        "  pin_types: [recursive, indirect]\n"
        "  include: ['', QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnP]\n"
        "  replicas: 0\n"
    )
    found = problems(text)
    assert found[0].startswith("c.yaml:6: sync.unpin: ") and "'keep' or 'mirror'" in found[0]
    assert found[1].startswith("c.yaml:7: sync.pin_types[1]: ")
    assert found[2] == "c.yaml:8: sync.include[0]: an empty entry matches nothing; remove it"
    assert found[3].startswith("c.yaml:8: sync.include[1]: looks like a CID but is not one")
    assert found[4].startswith("c.yaml:9: sync.replicas: ")
    assert len(found) == 5


def test_more_replicas_than_services_is_an_error() -> None:
    assert problems(MINIMAL + "sync:\n  replicas: 2\n") == [
        "c.yaml:6: sync.replicas: is 2, but only 1 service(s) are listed"
    ]
