"""The YAML config: its schema, its defaults, and errors that name the key path and line."""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from yarl import URL

from pinsyncd.durations import parse_duration
from pinsyncd.files import NotARegularFile, read_capped
from pinsyncd.listen import parse_listen
from pinsyncd.model import DEFAULT_MAX_ATTEMPTS
from pinsyncd.tokens import Token, TokenError, TokenSource

DEFAULT_CONFIG_PATH = Path("/etc/pinsyncd/config.yaml")
EX_CONFIG = 78  # sysexits.h: configuration error; the unit sets RestartPreventExitStatus=78


# --- errors -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config: where (key path, line) and what."""

    path: str
    message: str
    line: int | None = None

    def render(self, filename: str) -> str:
        where = f"{filename}:{self.line}" if self.line else filename
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """The config cannot be used; `problems` lists every reason at once."""

    def __init__(self, filename: str, problems: list[Problem]) -> None:
        self.filename = filename
        self.problems = sorted(problems, key=lambda p: (p.line is None, p.line or 0))
        super().__init__("\n".join(p.render(filename) for p in self.problems))


# --- field types ------------------------------------------------------------------------------


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


def node_api_url(raw: str) -> str:
    """The Kubo RPC base URL from `http://host:port` or a multiaddr like `/ip4/127.0.0.1/tcp/5001`
    (the form Kubo writes to `$IPFS_PATH/api`)."""
    text = raw.strip()
    if text.startswith("/"):
        match = re.fullmatch(r"/(ip4|ip6|dns|dns4|dns6)/([^/]+)/tcp/(\d+)(/http)?", text)
        if not match:
            raise ValueError("a multiaddr must look like /ip4/127.0.0.1/tcp/5001")
        host = f"[{match.group(2)}]" if match.group(1) == "ip6" else match.group(2)
        text = f"http://{host}:{match.group(3)}"
    try:
        url = URL(text)
    except ValueError as exc:
        raise ValueError(f"not a URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("must be an http(s) URL or a multiaddr, e.g. http://127.0.0.1:5001")
    if url.query_string or url.fragment:
        raise ValueError("must not have a query string or fragment")
    path = url.path.rstrip("/")
    if path.endswith("/api/v0"):
        path = path[: -len("/api/v0")]
    return str(url.with_path(path or "/")).rstrip("/")


# --- schema -----------------------------------------------------------------------------------


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _peer_id(value: str) -> str:
    if not re.fullmatch(r"(Qm|12D3Koo|k51|bafz)[1-9A-HJ-NP-Za-km-z]{20,120}", value.strip()):
        raise ValueError(f"{value!r} is not a peer id (like 12D3KooW... or Qm...; `ipfs id`)")
    return value.strip()


class NodeConfig(_Section):
    """The local IPFS node whose pins are backed up."""

    api: Annotated[str, AfterValidator(node_api_url)] = "http://127.0.0.1:5001"
    timeout: Duration = 60.0
    previous_peer_ids: list[Annotated[str, AfterValidator(_peer_id)]] = []
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

    interval: Duration = 600.0
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
    """The optional HTTP endpoint: /metrics (Prometheus), /healthz, /status."""

    listen: Annotated[str | None, AfterValidator(_listen)] = None


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

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        if not _SERVICE_NAME.fullmatch(name):
            raise ValueError(
                "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        return name

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, endpoint: str) -> str:
        return normalize_endpoint(endpoint)

    @field_validator("token_env")
    @classmethod
    def _check_token_env(cls, name: str | None) -> str | None:
        if name is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError("must be the name of an environment variable, e.g. PINATA_TOKEN")
        return name

    @model_validator(mode="after")
    def _check_transport(self) -> ServiceConfig:
        url = URL(self.endpoint)
        if url.scheme == "http" and not is_loopback_host(url.host) and not self.allow_insecure_http:
            raise ValueError(
                "endpoint uses plain http:// to a remote host, which would send the token in "
                "clear text; use https:// or set allow_insecure_http: true"
            )
        return self


class ConfigFile(_Section):
    """The whole YAML file."""

    node: NodeConfig = NodeConfig()
    sync: SyncConfig = SyncConfig()
    state: StateConfig = StateConfig()
    retry: RetryConfig = RetryConfig()
    http: HttpConfig = HttpConfig()
    services: list[ServiceConfig] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        """A section whose keys are all commented out (`http:` alone) means its defaults."""
        if isinstance(data, dict):
            sections = ("node", "sync", "state", "retry", "http")
            return {k: ({} if v is None and k in sections else v) for k, v in data.items()}
        return data


# --- the loaded config ------------------------------------------------------------------------


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

    def load_tokens(self, services: Collection[str] | None = None) -> Config:
        """Read the tokens (of `services`, default all) now; raise ConfigError naming each
        one that cannot be read, with its line. The commands that send requests call this
        before they start; those that only read the state never do, and need no token."""
        problems: list[Problem] = []
        warnings: list[str] = []
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


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env["PINSYNCD_CONFIG"]) if env.get("PINSYNCD_CONFIG") else DEFAULT_CONFIG_PATH


def default_state_path(env: Mapping[str, str]) -> Path:
    """`$STATE_DIRECTORY` (systemd StateDirectory=), else the XDG state directory."""
    if env.get("STATE_DIRECTORY"):
        return Path(env["STATE_DIRECTORY"].split(":")[0]) / "state.db"
    base = Path(env["XDG_STATE_HOME"]) if env.get("XDG_STATE_HOME") else None
    if base is None:
        base = Path(env.get("HOME") or Path.home()) / ".local" / "state"
    return base / "pinsyncd" / "state.db"


def load_config(
    path: Path | str, env: Mapping[str, str] | None = None, *, tokens: bool = True
) -> Config:
    """Read, validate and resolve the config at `path`; raise ConfigError listing every problem.
    With `tokens=False` the tokens are not read yet (see `Config.load_tokens`)."""
    env = os.environ if env is None else env
    path = Path(path)
    filename = str(path)
    try:
        text = read_capped(path, MAX_CONFIG_FILE).decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(filename, [Problem("", "no such file")]) from None
    except NotARegularFile as exc:
        raise ConfigError(filename, [Problem("", f"cannot read: it {exc.strerror}")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(filename, [Problem("", f"cannot read: {reason}")]) from None
    return parse_config(text, filename=filename, env=env, source=path, tokens=tokens)


def parse_config(
    text: str,
    *,
    filename: str = "<config>",
    env: Mapping[str, str] | None = None,
    source: Path | None = None,
    tokens: bool = True,
) -> Config:
    env = os.environ if env is None else env
    data, lines, problems = _load_yaml(text, filename)
    problems += _raw_service_problems(data, lines)
    problems += _raw_replicas_problems(data, lines)
    try:
        parsed = ConfigFile.model_validate(data)
    except ValidationError as exc:
        problems += _problems_from(exc, lines)
        parsed = None
    if problems:  # every problem of the file at once, tokens that cannot be read included
        if tokens:
            problems += _raw_token_problems(data, lines, env)
        raise ConfigError(filename, problems)
    assert parsed is not None

    services = []
    for index, svc in enumerate(parsed.services):
        key = "token_env" if svc.token_env is not None else "token_file"
        loc = ("services", index, key)
        token = TokenSource(
            "env" if svc.token_env is not None else "file",
            svc.token_env if svc.token_env is not None else str(svc.token_file),
            env,
            key=_render_loc(loc),
            line=_line_for(loc, lines),
        )
        services.append(
            Service(
                svc.name,
                svc.endpoint,
                token,
                svc.concurrency,
                svc.timeout,
                svc.rate_limit,
                svc.priority,
            )
        )

    base_dir = source.parent if source is not None else Path.cwd()
    if parsed.state.path is not None:
        state_path = Path(os.path.expandvars(parsed.state.path)).expanduser()
        if not state_path.is_absolute():
            state_path = (base_dir / state_path).resolve()
    else:
        state_path = default_state_path(env)
    config = Config(
        source=source or Path(filename),
        node=parsed.node,
        sync=parsed.sync,
        state_path=state_path,
        services=tuple(services),
        retry=parsed.retry,
        http=parsed.http,
    )
    return config.load_tokens() if tokens else config


def _raw_service_problems(data: Any, lines: _Lines) -> list[Problem]:
    """Checks across keys and entries, run on the raw data so that they are reported together
    with field errors (pydantic skips a model's own checks once one of its fields failed)."""
    services = data.get("services") if isinstance(data, dict) else None
    if not isinstance(services, list):
        return []
    first: dict[str, int] = {}
    problems = []
    for index, item in enumerate(services):
        if not isinstance(item, dict):
            continue
        if ("token_env" in item) == ("token_file" in item):
            loc: tuple[str | int, ...] = ("services", index)
            message = "give exactly one of token_env or token_file"
            problems.append(Problem(_render_loc(loc), message, _line_for(loc, lines)))
        name = item.get("name")
        if not isinstance(name, str):
            continue
        if name in first:
            loc = ("services", index, "name")
            message = f"service name {name!r} is already used by services[{first[name]}]"
            problems.append(Problem(_render_loc(loc), message, _line_for(loc, lines)))
        else:
            first[name] = index
    return problems


def _raw_replicas_problems(data: Any, lines: _Lines) -> list[Problem]:
    """`sync.replicas` above the number of services listed (on the raw data, so that it is
    reported with every other problem)."""
    sync = data.get("sync") if isinstance(data, dict) else None
    services = data.get("services") if isinstance(data, dict) else None
    replicas = sync.get("replicas") if isinstance(sync, dict) else None
    if type(replicas) is not int or not isinstance(services, list) or replicas <= len(services):
        return []
    loc: tuple[str | int, ...] = ("sync", "replicas")
    message = f"is {replicas}, but only {len(services)} service(s) are listed"
    return [Problem(_render_loc(loc), message, _line_for(loc, lines))]


def _raw_token_problems(data: Any, lines: _Lines, env: Mapping[str, str]) -> list[Problem]:
    """The tokens that cannot be read, of the raw service entries that name exactly one:
    reported with the file's other problems, not after they are fixed."""
    services = data.get("services") if isinstance(data, dict) else None
    if not isinstance(services, list):
        return []
    problems = []
    for index, item in enumerate(services):
        if not isinstance(item, dict):
            continue
        keys = [k for k in ("token_env", "token_file") if isinstance(item.get(k), str)]
        if len(keys) != 1 or ("token_env" in item) == ("token_file" in item):
            continue
        key = keys[0]
        loc: tuple[str | int, ...] = ("services", index, key)
        source = TokenSource(
            "env" if key == "token_env" else "file",
            item[key],
            env,
            key=_render_loc(loc),
            line=_line_for(loc, lines),
        )
        try:
            source.load()
        except TokenError as exc:
            problems.append(Problem(source.key, str(exc), source.line))
    return problems


# --- YAML with line numbers -------------------------------------------------------------------

_Lines = dict[tuple[str | int, ...], int]

MAX_CONFIG_FILE = 2**20
"""A config is a few KiB; a larger file is refused before it is parsed."""
MAX_DEPTH = 64
"""Nesting deeper than this is refused (a config needs 4 levels)."""
MAX_VALUES = 100_000
"""Values the file may hold once its aliases are expanded (an alias bomb expands to
billions from a few lines)."""


class _TooComplex(Exception):
    """The YAML is shaped to exhaust the reader: the message says how."""


def _load_yaml(text: str, filename: str) -> tuple[Any, _Lines, list[Problem]]:
    """The data, the line of each key, and the keys that appear twice (reported with the
    other problems: the data holds the last value of such a key)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        problem = Problem("", f"the YAML nests deeper than pinsyncd reads ({MAX_DEPTH} levels)")
        raise ConfigError(filename, [problem]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        reason = exc.problem or exc.context or "invalid YAML"
        column = f", column {mark.column + 1}" if mark else ""
        problem = Problem("", f"invalid YAML{column}: {reason}", line)
        raise ConfigError(filename, [problem]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(filename, [Problem("", f"invalid YAML: {exc}")]) from None
    if root is None:
        raise ConfigError(filename, [Problem("", "the file is empty; see config.example.yaml")])
    lines: _Lines = {}
    duplicates: list[Problem] = []
    try:
        _index_nodes(root, (), lines, duplicates, _Budget())
    except _TooComplex as exc:
        raise ConfigError(filename, [Problem("", str(exc))]) from None
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(filename, [Problem("", "the top level must be a mapping of keys", 1)])
    try:
        data = yaml.SafeLoader(text).get_single_data()
    except yaml.YAMLError as exc:  # e.g. a bad tag that composes but does not construct
        raise ConfigError(filename, [Problem("", f"invalid YAML: {exc}")]) from None
    return data, lines, duplicates


class _Budget:
    """What walking the YAML may cost: `MAX_VALUES` values, `MAX_DEPTH` levels, no cycle."""

    def __init__(self) -> None:
        self.values = 0
        self.path: list[int] = []  # ids of the collections being walked

    def enter(self, node: yaml.Node) -> None:
        self.values += 1
        if self.values > MAX_VALUES:
            raise _TooComplex(
                f"the YAML holds more than {MAX_VALUES:,} values once its aliases are "
                "expanded (an alias bomb?)"
            )
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            if id(node) in self.path:
                raise _TooComplex(
                    f"an alias refers to a value that contains it (line {node.start_mark.line + 1})"
                )
            if len(self.path) >= MAX_DEPTH:
                raise _TooComplex(f"the YAML nests deeper than {MAX_DEPTH} levels")


def _index_nodes(
    node: yaml.Node,
    loc: tuple[str | int, ...],
    lines: _Lines,
    duplicates: list[Problem],
    budget: _Budget,
) -> None:
    budget.enter(node)
    lines.setdefault(loc, node.start_mark.line + 1)
    if not isinstance(node, yaml.MappingNode | yaml.SequenceNode):
        return
    budget.path.append(id(node))
    try:
        _index_children(node, loc, lines, duplicates, budget)
    finally:
        budget.path.pop()


def _index_children(
    node: yaml.MappingNode | yaml.SequenceNode,
    loc: tuple[str | int, ...],
    lines: _Lines,
    duplicates: list[Problem],
    budget: _Budget,
) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "<a collection>"
            child = (*loc, key)
            if key in seen:
                duplicates.append(
                    Problem(_render_loc(child), "key appears twice", key_node.start_mark.line + 1)
                )
            seen.add(key)
            budget.enter(key_node)
            _index_nodes(value_node, child, lines, duplicates, budget)
            lines[child] = key_node.start_mark.line + 1  # the key's line, not the value's
    else:
        for index, item in enumerate(node.value):
            _index_nodes(item, (*loc, index), lines, duplicates, budget)


def _line_for(loc: tuple[str | int, ...], lines: _Lines) -> int | None:
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return lines.get(())


def _render_loc(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_TYPE_NAMES = {
    "string_type": "a string",
    "int_type": "a whole number",
    "bool_type": "true or false",
    "list_type": "a list",
    "model_type": "a mapping of keys",
    "dict_type": "a mapping of keys",
    "float_type": "a number",
}


def _problems_from(exc: ValidationError, lines: _Lines) -> list[Problem]:
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = tuple(part for part in error["loc"] if isinstance(part, str | int))
        kind = error["type"]
        if kind == "extra_forbidden":
            parent = _model_at(loc[:-1])
            fields = list(parent.model_fields) if parent else []
            close = difflib.get_close_matches(str(loc[-1]) if loc else "", fields, n=1)
            if close:
                message = f"unknown key (did you mean {close[0]}?)"
            elif fields:
                message = f"unknown key (allowed here: {', '.join(fields)})"
            else:
                message = "unknown key"
            if loc and loc[-1] == "token":
                message = "tokens are not written in the config; use token_env or token_file"
        elif kind == "missing":
            message = "required key is missing"
        elif kind in _TYPE_NAMES:
            message = f"must be {_TYPE_NAMES[kind]}"
        elif kind == "too_short" and loc == ("services",):
            message = "list at least one service"
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
        problems.append(Problem(_render_loc(loc), message, _line_for(loc, lines)))
    return problems


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = ConfigFile
    for part in loc:
        if isinstance(part, int):
            continue
        info = model.model_fields.get(part)
        if info is None:
            return None
        annotation = info.annotation
        inner = getattr(annotation, "__args__", (annotation,))[0]
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            model = inner
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            return None
    return model
