"""From a YAML file to a `Config`, with every problem of the file found in one pass: the
schema's, the checks across entries, and the tokens that cannot be read."""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from pinsyncd.config.lines import MAX_CONFIG_FILE, load_yaml
from pinsyncd.config.problems import ConfigError, Lines, Problem, line_for, render_loc
from pinsyncd.config.schema import (
    Config,
    ConfigFile,
    Serve,
    ServeAccount,
    Service,
    default_serve_state_path,
    default_state_path,
)
from pinsyncd.files import NotARegularFile, read_capped
from pinsyncd.listen import is_loopback, parse_listen
from pinsyncd.tokens import TokenError, TokenSource


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
    base_dir = source.parent if source is not None else Path.cwd()  # for relative paths
    data, lines, problems = load_yaml(text, filename)
    problems += _raw_service_problems(data, lines)
    problems += _raw_nothing_to_do(data, lines)
    problems += _raw_replicas_problems(data, lines)
    try:
        parsed = ConfigFile.model_validate(data)
    except ValidationError as exc:
        problems += problems_from(exc, lines)
        parsed = None
    if problems:  # every problem of the file at once, tokens that cannot be read included
        if tokens:
            problems += _raw_token_problems(data, lines, env, base_dir)
        raise ConfigError(filename, problems)
    assert parsed is not None

    def secret_at(
        where: tuple[str | int, ...], env_name: str | None, file: str | None
    ) -> TokenSource:
        """A secret from `<where>.*_env` or `<where>.*_file` (exactly one is set)."""
        kind = "env" if env_name is not None else "file"
        loc = (*where[:-1], f"{where[-1]}_{kind}")
        return TokenSource(
            kind,
            env_name if env_name is not None else str(file),
            env,
            key=render_loc(loc),
            line=line_for(loc, lines),
            base=base_dir,
        )

    services = [
        Service(
            svc.name,
            svc.endpoint,
            secret_at(("services", index, "token"), svc.token_env, svc.token_file),
            svc.concurrency,
            svc.timeout,
            svc.rate_limit,
            svc.priority,
        )
        for index, svc in enumerate(parsed.services)
    ]
    token_file = parsed.node.token_file
    node_token = secret_at(("node", "token"), None, token_file) if token_file else None
    alert_urls = [
        secret_at(("alerts", "targets", index, "url"), target.url_env, target.url_file)
        for index, target in enumerate(parsed.alerts.targets)
    ]
    beat = parsed.alerts.heartbeat
    heartbeat_url = (
        secret_at(("alerts", "heartbeat", "url"), beat.url_env, beat.url_file) if beat else None
    )

    def path_of(raw: str) -> Path:
        path = Path(os.path.expandvars(raw)).expanduser()
        return path if path.is_absolute() else (base_dir / path).resolve()

    state_path = path_of(parsed.state.path) if parsed.state.path else default_state_path(env)
    serve = None
    if parsed.serve is not None:
        accounts = tuple(
            ServeAccount(
                user.name,
                secret_at(("serve", "users", index, "token"), user.token_env, user.token_file),
                user.max_pins,
            )
            for index, user in enumerate(parsed.serve.users)
        )
        tls = parsed.serve.tls
        serve = Serve(
            settings=parsed.serve,
            accounts=accounts,
            state_path=(
                path_of(parsed.serve.state)
                if parsed.serve.state
                else default_serve_state_path(state_path)
            ),
            tls=(path_of(tls.cert_file), path_of(tls.key_file)) if tls else None,
        )
    warnings: list[str] = []
    if parsed.serve is not None and parsed.serve.tls is None:
        host, _ = parse_listen(parsed.serve.listen)
        if not is_loopback(host):
            warnings.append(
                f"serve.listen {parsed.serve.listen} has no serve.tls: the users' tokens "
                "would cross the network in clear text (fine inside a VPN, or behind an HTTPS "
                "proxy)"
            )
    config = Config(
        source=source or Path(filename),
        warnings=tuple(warnings),
        node=parsed.node,
        sync=parsed.sync,
        state_path=state_path,
        services=tuple(services),
        retry=parsed.retry,
        http=parsed.http,
        node_token=node_token,
        alerts=parsed.alerts,
        alert_urls=tuple(alert_urls),
        heartbeat_url=heartbeat_url,
        serve=serve,
    )
    return config.load_tokens() if tokens else config


def _raw_service_problems(data: Any, lines: Lines) -> list[Problem]:
    """Checks across keys and entries, run on the raw data so that they are reported together
    with field errors (pydantic skips a model's own checks once one of its fields failed):
    each service and each `serve.users` entry names exactly one token source and a name of
    its own."""
    if not isinstance(data, dict):
        return []
    serve = data.get("serve")
    users = serve.get("users") if isinstance(serve, dict) else None
    return _entry_problems(data.get("services"), ("services",), "service", lines) + (
        _entry_problems(users, ("serve", "users"), "user", lines)
    )


def _entry_problems(entries: Any, where: tuple[str, ...], what: str, lines: Lines) -> list[Problem]:
    if not isinstance(entries, list):
        return []
    first: dict[str, int] = {}
    problems = []
    for index, item in enumerate(entries):
        if not isinstance(item, dict):
            continue
        if ("token_env" in item) == ("token_file" in item):
            loc: tuple[str | int, ...] = (*where, index)
            message = "give exactly one of token_env or token_file"
            problems.append(Problem(render_loc(loc), message, line_for(loc, lines)))
        name = item.get("name")
        if not isinstance(name, str):
            continue
        if name in first:
            loc = (*where, index, "name")
            used_by = render_loc((*where, first[name]))
            message = f"{what} name {name!r} is already used by {used_by}"
            problems.append(Problem(render_loc(loc), message, line_for(loc, lines)))
        else:
            first[name] = index
    return problems


def _raw_nothing_to_do(data: Any, lines: Lines) -> list[Problem]:
    """No service to back up to, and no `serve:` section either."""
    if not isinstance(data, dict) or data.get("services") or data.get("serve") is not None:
        return []
    loc: tuple[str | int, ...] = ("services",)
    message = "list at least one service" if "services" in data else "required key is missing"
    return [Problem(render_loc(loc), message, line_for(loc, lines))]


def _raw_replicas_problems(data: Any, lines: Lines) -> list[Problem]:
    """`sync.replicas` above the number of services listed (on the raw data, so that it is
    reported with every other problem)."""
    sync = data.get("sync") if isinstance(data, dict) else None
    services = data.get("services") if isinstance(data, dict) else None
    replicas = sync.get("replicas") if isinstance(sync, dict) else None
    if type(replicas) is not int or not isinstance(services, list) or replicas <= len(services):
        return []
    loc: tuple[str | int, ...] = ("sync", "replicas")
    message = f"is {replicas}, but only {len(services)} service(s) are listed"
    return [Problem(render_loc(loc), message, line_for(loc, lines))]


def _raw_token_problems(
    data: Any, lines: Lines, env: Mapping[str, str], base_dir: Path
) -> list[Problem]:
    """The tokens that cannot be read, of the raw service entries that name exactly one (and
    `node.token_file`): reported with the file's other problems, not after they are fixed."""
    if not isinstance(data, dict):
        return []
    named: list[tuple[tuple[str | int, ...], str, str]] = []  # (where, kind, value)
    node = data.get("node")
    if isinstance(node, dict) and isinstance(node.get("token_file"), str):
        named.append((("node", "token_file"), "file", node["token_file"]))
    services = data.get("services")
    serve = data.get("serve")
    users = serve.get("users") if isinstance(serve, dict) else None
    entries: list[tuple[tuple[str | int, ...], Any]] = [
        (("services", index), item)
        for index, item in enumerate(services if isinstance(services, list) else [])
    ]
    entries += [
        (("serve", "users", index), item)
        for index, item in enumerate(users if isinstance(users, list) else [])
    ]
    for where, item in entries:
        if not isinstance(item, dict):
            continue
        keys = [k for k in ("token_env", "token_file") if isinstance(item.get(k), str)]
        if len(keys) != 1 or ("token_env" in item) == ("token_file" in item):
            continue
        kind = "env" if keys[0] == "token_env" else "file"
        named.append(((*where, keys[0]), kind, item[keys[0]]))
    problems = []
    for loc, kind, value in named:
        source = TokenSource(
            kind, value, env, key=render_loc(loc), line=line_for(loc, lines), base=base_dir
        )
        try:
            source.load()
        except TokenError as exc:
            problems.append(Problem(source.key, str(exc), source.line))
    return problems


_TYPE_NAMES = {
    "string_type": "a string",
    "int_type": "a whole number",
    "bool_type": "true or false",
    "list_type": "a list",
    "model_type": "a mapping of keys",
    "dict_type": "a mapping of keys",
    "float_type": "a number",
}


def problems_from(exc: ValidationError, lines: Lines) -> list[Problem]:
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
        elif kind == "too_short" and loc == ("serve", "users"):
            message = "list at least one user (a name and a token_file or token_env)"
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
        problems.append(Problem(render_loc(loc), message, line_for(loc, lines)))
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
