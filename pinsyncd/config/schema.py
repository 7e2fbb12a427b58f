"""The config's schema (its sections, with their defaults and checks) and the loaded
`Config` that the rest of pinsyncd is given."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from yarl import URL

from pinsyncd.config.problems import ConfigError, Problem
from pinsyncd.durations import parse_duration
from pinsyncd.listen import parse_listen
from pinsyncd.model import DEFAULT_MAX_ATTEMPTS
from pinsyncd.rpc_auth import RpcAuthError, authorization_header
from pinsyncd.tokens import Token, TokenError, TokenSource

DEFAULT_CONFIG_PATH = Path("/etc/pinsyncd/config.yaml")


def _duration(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("expected a duration like 30s, 10m, 2h or 1d")
    if isinstance(value, int | float):
        raise ValueError(f"{value} has no unit; write e.g. {value}s or {value}m")
    return parse_duration(value)


def _positive(seconds: float) -> float:
    if seconds <= 0:
        raise ValueError("must be longer than 0s")
    return seconds


Duration = Annotated[float, BeforeValidator(_duration), AfterValidator(_positive)]
"""Seconds, written in the config as `30s`, `10m`, `2h`, `1d` or `1h30m`."""


_SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _short_name(name: str) -> str:
    """A service's or a user's name, as logs, metrics and `status` show it."""
    if not _SERVICE_NAME.fullmatch(name):
        raise ValueError(
            "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def _env_name(name: str | None) -> str | None:
    """A `token_env`: the name of an environment variable."""
    if name is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError("must be the name of an environment variable, e.g. PINATA_TOKEN")
    return name


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def normalize_endpoint(raw: str) -> str:
    """Check a Pinning Service API base URL and return it without trailing or doubled slashes.

    Like Kubo's `pin remote service add`: http(s) only, no query string, no `/pins` suffix.
    """
    try:
        url = URL(raw.strip())
    except ValueError as exc:
        raise ValueError(f"not a URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("must be an http:// or https:// URL, e.g. https://api.pinata.cloud/psa")
    if url.query_string or raw.rstrip().endswith("?"):
        raise ValueError("must not have a query string (?...); give the service's base URL")
    if url.fragment:
        raise ValueError("must not have a #fragment")
    if url.user is not None or url.password is not None:
        raise ValueError("must not contain credentials; use token_env or token_file")
    path = re.sub(r"/{2,}", "/", url.path).rstrip("/")
    if path.endswith("/pins"):
        raise ValueError(
            f"must not end with /pins; give the base URL, e.g. {url.with_path(path[:-5])}"
        )
    return str(url.with_path(path or "/")).rstrip("/")


UNIX_PREFIX = "unix:"
"""How `node.api` names a Unix socket once checked: `unix:/run/ipfs/api.sock`."""


def node_api_url(raw: str) -> str:
    """The Kubo RPC base URL from `http://host:port`, or from a multiaddr as Kubo writes it to
    `$IPFS_PATH/api`: `/ip4/127.0.0.1/tcp/5001`, `/dns/host/tcp/5001/https`, or a Unix
    socket, `/unix/run/ipfs/api.sock` (kept as `unix:/run/ipfs/api.sock`). An address Kubo
    listens on for all interfaces (0.0.0.0, ::) is reached on loopback."""
    text = raw.strip()
    if text.startswith("/unix/") or text.startswith(UNIX_PREFIX):
        path = text[len("/unix") :] if text.startswith("/unix/") else text[len(UNIX_PREFIX) :]
        if not path.startswith("/") or path.rstrip("/") == "":
            raise ValueError("a Unix socket must be an absolute path, e.g. /unix/run/ipfs/api.sock")
        return UNIX_PREFIX + path
    if text.startswith("/"):
        match = re.fullmatch(r"/(ip4|ip6|dns|dns4|dns6)/([^/]+)/tcp/(\d+)(/https?)?", text)
        if not match:
            raise ValueError(
                "a multiaddr must look like /ip4/127.0.0.1/tcp/5001 or /unix/run/ipfs/api.sock"
            )
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(match.group(2), match.group(2))
        host = f"[{host}]" if match.group(1) == "ip6" else host
        scheme = "https" if match.group(4) == "/https" else "http"
        text = f"{scheme}://{host}:{match.group(3)}"
    try:
        url = URL(text)
    except ValueError as exc:
        raise ValueError(f"not a URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("must be an http(s) URL or a multiaddr, e.g. http://127.0.0.1:5001")
    if url.user is not None or url.password is not None:
        raise ValueError(
            "must not contain credentials: put Kubo's API secret (bearer:TOKEN or "
            "basic:USER:PASSWORD) in a file and name it in node.token_file"
        )
    if url.query_string or url.fragment:
        raise ValueError("must not have a query string or fragment")
    if url.host in ("0.0.0.0", "::"):
        url = url.with_host("127.0.0.1" if url.host == "0.0.0.0" else "::1")
    path = url.path.rstrip("/")
    if path.endswith("/api/v0"):
        path = path[: -len("/api/v0")]
    return str(url.with_path(path or "/")).rstrip("/")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def peer_id(value: str) -> str:
    """`value` stripped, when it is a peer id; a ValueError saying what one looks like."""
    if not re.fullmatch(r"(Qm|12D3Koo|k51|bafz)[1-9A-HJ-NP-Za-km-z]{20,120}", value.strip()):
        raise ValueError(f"{value!r} is not a peer id (like 12D3KooW... or Qm...; `ipfs id`)")
    return value.strip()


class NodeConfig(_Section):
    """The local IPFS node whose pins are backed up."""

    api: Annotated[str, AfterValidator(node_api_url)] = "http://127.0.0.1:5001"
    token_file: str | None = None
    """Kubo's RPC secret when its API.Authorizations is on (`bearer:TOKEN` or
    `basic:USER:PASSWORD`, as Kubo writes it); a relative path is taken from the config's
    folder."""
    timeout: Duration = 60.0
    previous_peer_ids: list[Annotated[str, AfterValidator(peer_id)]] = []
    """Peer ids this node had before (a new identity, a repo restored elsewhere): requests
    made under them are this device's own, to adopt and manage."""


PinType = Literal["recursive", "direct"]


def _selector(value: str) -> str:
    """An include/exclude entry: a CID, or a glob on the Kubo pin name."""
    from pinsyncd.selection import check_pattern

    return check_pattern(value)


class SyncConfig(_Section):
    """When and how the local pinset is compared with the services, and the policies: which
    pins, on how many services, and what happens to a pin removed locally."""

    interval: Duration = 30.0
    status_interval: Duration = 60.0
    verify_interval: Duration = 86400.0
    origins: Literal["public", "all"] = "public"
    # selection
    pin_types: list[PinType] = Field(default=["recursive"], min_length=1)
    include: list[Annotated[str, AfterValidator(_selector)]] = []
    exclude: list[Annotated[str, AfterValidator(_selector)]] = []
    mfs: bool = False
    # replication
    replicas: int | None = Field(default=None, ge=1)
    failover_after: Duration = 3600.0
    trim_extra: bool = False
    # lifecycle
    unpin: Literal["keep", "mirror"] = "keep"
    unpin_grace: Duration = 86400.0
    propagate_names: bool = False
    stuck_after: Duration = 3600.0

    @field_validator("pin_types")
    @classmethod
    def _check_pin_types(cls, types: list[str]) -> list[str]:
        if len(set(types)) != len(types):
            raise ValueError("lists a pin type twice")
        return types


class RetryConfig(_Section):
    """How failures are retried: exponential backoff with full jitter, capped."""

    base: Duration = 30.0
    cap: Duration = 3600.0
    max_attempts: int = Field(default=DEFAULT_MAX_ATTEMPTS, ge=1, le=1000)
    failed_retry: Duration = 86400.0


def _rate(value: object) -> float:
    """`3/s`, `180/min`, `1000/h` -> requests per second."""
    if not isinstance(value, str):
        raise ValueError("expected a rate like 3/s or 180/min")
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*", value)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"{value!r} is not a rate; write e.g. 3/s or 180/min")
    per = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600}
    return float(match.group(1)) / per.get(match.group(2), 3600)


Rate = Annotated[float, BeforeValidator(_rate)]
"""Requests per second, written in the config as `3/s` or `180/min`."""


def _listen(value: str | None) -> str | None:
    if value is None:
        return None
    parse_listen(value)
    return value


class HttpConfig(_Section):
    """The optional HTTP endpoint: /metrics (Prometheus), /healthz, /status, / (a page)."""

    listen: Annotated[str | None, AfterValidator(_listen)] = None


class AlertTarget(_Section):
    """Where alerts go: a URL (it usually holds a secret: a topic, a bot token, a ping id),
    so it comes from an environment variable or a file, like a token."""

    url_env: str | None = None
    url_file: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> AlertTarget:
        if (self.url_env is None) == (self.url_file is None):
            raise ValueError("give exactly one of url_env or url_file")
        return self


class AlertsConfig(_Section):
    """Alerts that reach a person: on a problem (a service paused, pins stuck or failed for
    good, a restore drill that failed) and when it is over; a heartbeat after each look."""

    targets: list[AlertTarget] = []
    heartbeat: AlertTarget | None = None
    repeat: Duration = 86400.0


class StateConfig(_Section):
    """Where pinsyncd keeps what it knows about each remote pin (SQLite)."""

    path: str | None = None


class ServiceConfig(_Section):
    """One remote service that speaks the IPFS Pinning Service API v1.0.0."""

    name: str
    endpoint: str
    token_env: str | None = None
    token_file: str | None = None
    concurrency: int = Field(default=4, ge=1, le=64)
    timeout: Duration = 30.0
    rate_limit: Rate | None = None
    allow_insecure_http: bool = False
    priority: int = Field(default=0, ge=-1000, le=1000)

    _check_name = field_validator("name")(_short_name)

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, endpoint: str) -> str:
        return normalize_endpoint(endpoint)

    _check_token_env = field_validator("token_env")(_env_name)

    @model_validator(mode="after")
    def _check_transport(self) -> ServiceConfig:
        url = URL(self.endpoint)
        if url.scheme == "http" and not is_loopback_host(url.host) and not self.allow_insecure_http:
            raise ValueError(
                "endpoint uses plain http:// to a remote host, which would send the token in "
                "clear text; use https:// or set allow_insecure_http: true"
            )
        return self


class ServeUser(_Section):
    """One account of `pinsyncd serve`: a name (in logs and metrics) and a bearer token from a
    file or an environment variable. Each account sees only its own pins."""

    name: str
    token_env: str | None = None
    token_file: str | None = None
    max_pins: int | None = Field(default=None, ge=1)
    """At most this many pin requests for the account (more: 409, as the spec's "insufficient
    funds"); none by default."""

    _check_name = field_validator("name")(_short_name)
    _check_token_env = field_validator("token_env")(_env_name)


def _delegate(value: str) -> str:
    text = value.strip()
    parts = text.rstrip("/").split("/")
    if not text.startswith("/") or len(parts) < 4 or parts[-2] != "p2p":
        raise ValueError(
            f"{value!r} is not a multiaddr ending in /p2p/<peer id> "
            "(like /dns4/home.example.org/tcp/4001/p2p/12D3KooW...)"
        )
    peer_id(parts[-1])
    return text


class ServeTls(_Section):
    """HTTPS for `pinsyncd serve`: a certificate chain and its key (PEM files)."""

    cert_file: str
    key_file: str


class ServeConfig(_Section):
    """`pinsyncd serve`: this node as a pinning service (IPFS Pinning Service API v1.0.0) for
    your other devices; Kubo at `node.api` does the pinning."""

    listen: Annotated[str, AfterValidator(_listen)] = "127.0.0.1:9098"
    tls: ServeTls | None = None
    state: str | None = None
    """The service's own SQLite file (default: serve.db beside the daemon's state)."""
    users: list[ServeUser] = Field(min_length=1)
    pin_concurrency: int = Field(default=4, ge=1, le=64)
    pin_timeout: Duration = 600.0
    """A pin fails when no new block came for this long (not a limit on its total time)."""
    origins: Literal["public", "all"] = "public"
    """Which `origins` of a request are dialled: public addresses only, or also loopback and
    private ones (a home network)."""
    delegates: list[Annotated[str, AfterValidator(_delegate)]] = Field(default=[], max_length=20)
    """What every answer gives as `delegates`; default: the node's own addresses."""


class ConfigFile(_Section):
    """The whole YAML file."""

    node: NodeConfig = NodeConfig()
    sync: SyncConfig = SyncConfig()
    state: StateConfig = StateConfig()
    retry: RetryConfig = RetryConfig()
    http: HttpConfig = HttpConfig()
    alerts: AlertsConfig = AlertsConfig()
    serve: ServeConfig | None = None
    services: list[ServiceConfig] = []

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        """A section whose keys are all commented out (`http:` alone) means its defaults."""
        if isinstance(data, dict):
            sections = ("node", "sync", "state", "retry", "http", "alerts")  # serve: alone is off
            data = {k: ({} if v is None and k in sections else v) for k, v in data.items()}
            if "services" in data and data["services"] is None:
                data["services"] = []  # every entry commented out: "list at least one service"
            return data
        return data


@dataclass(frozen=True)
class ServeAccount:
    """An account of `pinsyncd serve`, its token read when the service starts or reloads."""

    name: str
    token: Token
    max_pins: int | None = None


@dataclass(frozen=True)
class Serve:
    """The `serve:` section, resolved: its accounts' tokens and its state file's path."""

    settings: ServeConfig
    accounts: tuple[ServeAccount, ...]
    state_path: Path
    tls: tuple[Path, Path] | None = None  # (certificate chain, key)

    def token_problems(self) -> list[Problem]:
        """Read every account's token again (a file may have changed): the problems, with
        the key and line of each, including two accounts with the same token."""
        problems: list[Problem] = []
        owners: dict[str, str] = {}
        for account in self.accounts:
            token = account.token
            if not isinstance(token, TokenSource):
                continue
            try:
                secret = token.load().secret.reveal()
            except TokenError as exc:
                problems.append(Problem(token.key, str(exc), token.line))
                continue
            if secret in owners:
                message = f"is the same token as user {owners[secret]}'s; give each user its own"
                problems.append(Problem(token.key, message, token.line))
            owners.setdefault(secret, account.name)
        return problems


@dataclass(frozen=True)
class Service:
    """A service ready to be called: its config and its token."""

    name: str
    endpoint: str
    token: Token  # read when a request is about to be sent (`Config.load_tokens`)
    concurrency: int
    timeout: float
    rate_limit: float | None = None
    priority: int = 0


@dataclass(frozen=True)
class Config:
    """A validated config with tokens read and paths resolved."""

    source: Path
    node: NodeConfig
    sync: SyncConfig
    state_path: Path
    services: tuple[Service, ...]
    retry: RetryConfig = field(default_factory=RetryConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    warnings: tuple[str, ...] = field(default=())
    node_token: Token | None = None  # node.token_file: Kubo's RPC secret
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    alert_urls: tuple[Token, ...] = ()  # alerts.targets, read like tokens
    heartbeat_url: Token | None = None  # alerts.heartbeat
    serve: Serve | None = None  # the serve: section

    def load_tokens(self, services: Collection[str] | None = None) -> Config:
        """Read the tokens (of `services`, default all) now; raise ConfigError naming each
        one that cannot be read, with its line. The commands that send requests call this
        before they start; those that only read the state never do, and need no token."""
        problems: list[Problem] = []
        warnings: list[str] = []
        if isinstance(self.node_token, TokenSource) and services is None:
            try:
                loaded = self.node_token.load()
                authorization_header(loaded.secret.reveal())
            except (TokenError, RpcAuthError) as exc:
                problems.append(Problem(self.node_token.key, str(exc), self.node_token.line))
            else:
                if loaded.warning:
                    warnings.append(f"node: {loaded.warning}")
        for source in (*self.alert_urls, self.heartbeat_url):
            if isinstance(source, TokenSource) and services is None:
                try:
                    loaded = source.load()
                    check_alert_url(loaded.secret.reveal())
                except (TokenError, ValueError) as exc:
                    problems.append(Problem(source.key, str(exc), source.line))
        if self.serve is not None and services is None:
            problems += self.serve.token_problems()
        for index, service in enumerate(self.services):
            token = service.token
            if not isinstance(token, TokenSource) or (
                services is not None and service.name not in services
            ):
                continue
            try:
                loaded = token.load()
            except TokenError as exc:
                problems.append(Problem(token.key, str(exc), token.line))
                continue
            if loaded.warning:
                warnings.append(f"services[{index}] ({service.name}): {loaded.warning}")
        if problems:
            raise ConfigError(str(self.source), problems)
        return replace(self, warnings=(*self.warnings, *warnings))

    @property
    def replicas(self) -> int:
        """On how many services each CID must be pinned (default: all of them)."""
        return self.sync.replicas or len(self.services)

    @property
    def service_order(self) -> tuple[str, ...]:
        """Service names in the order they take CIDs: by `priority` (lower first), then as
        listed in the file."""
        ranked = sorted(enumerate(self.services), key=lambda p: (p[1].priority, p[0]))
        return tuple(s.name for _, s in ranked)


def check_alert_url(url: str) -> None:
    """An alert URL pinsyncd can send to: http(s) (a plain POST, or a Healthchecks-style
    ping), or any scheme Apprise knows when it is installed (`pinsyncd[alerts]`). The URL
    itself is never in the message: it may hold a secret."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme in ("http", "https"):
        return
    if not scheme:
        raise ValueError("is not a URL (e.g. https://ntfy.sh/my-topic)")
    import importlib.util

    if importlib.util.find_spec("apprise") is None:
        raise ValueError(
            f"a {scheme}:// URL needs Apprise: pip install 'pinsyncd[alerts]' "
            "(http:// and https:// URLs need nothing)"
        )


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    """`$PINSYNCD_CONFIG`; else the user's own config when there is one (what `pinsyncd
    init` writes for a user who is not root); else /etc/pinsyncd/config.yaml."""
    env = os.environ if env is None else env
    if env.get("PINSYNCD_CONFIG"):
        return Path(env["PINSYNCD_CONFIG"])
    user = user_config_path(env)
    return user if user.exists() else DEFAULT_CONFIG_PATH


def user_config_path(env: Mapping[str, str]) -> Path:
    """`$XDG_CONFIG_HOME/pinsyncd/config.yaml`, else `~/.config/pinsyncd/config.yaml`."""
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else None
    if base is None:
        base = Path(env.get("HOME") or Path.home()) / ".config"
    return base / "pinsyncd" / "config.yaml"


def default_serve_state_path(state_path: Path) -> Path:
    """`serve.db` in the folder of the daemon's state file."""
    return state_path.with_name("serve.db")


def default_state_path(env: Mapping[str, str]) -> Path:
    """`$STATE_DIRECTORY` (systemd StateDirectory=), else the XDG state directory."""
    if env.get("STATE_DIRECTORY"):
        return Path(env["STATE_DIRECTORY"].split(":")[0]) / "state.db"
    base = Path(env["XDG_STATE_HOME"]) if env.get("XDG_STATE_HOME") else None
    if base is None:
        base = Path(env.get("HOME") or Path.home()) / ".local" / "state"
    return base / "pinsyncd" / "state.db"
