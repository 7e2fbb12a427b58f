"""`pinsyncd init` (a config from the user's Kubo node) and `pinsyncd import-kubo` (the
services Kubo knows, added to a config). Keys go to token files with mode 0600 next to the
config, never into the YAML, and are never printed."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from yarl import URL

from pinsyncd.config import Config, ConfigError, default_config_path, parse_config
from pinsyncd.config.schema import is_loopback_host, node_api_url, user_config_path
from pinsyncd.data import example_config
from pinsyncd.files import write_whole
from pinsyncd.kubo import LocalNode, NodeError
from pinsyncd.kubo_setup.discover import KuboFindings, KuboService, read_repo, repo_path
from pinsyncd.kubo_setup.files import SetupError, write_secret
from pinsyncd.kubo_setup.overlap import kubo_policies
from pinsyncd.kubo_setup.render import (
    NODE_TOKEN_FILE,
    NewService,
    render_config,
    same_endpoint,
    service_name,
    services_yaml,
)
from pinsyncd.tokens import Secret

EX_SETUP = 1


@dataclass
class Plan:
    """What is written: the services (with their token files) and what the user is told."""

    services: list[NewService]
    keys: dict[str, Secret]  # token file (relative) -> key, for the services that have one
    missing_keys: list[str]  # token files the user must fill in
    lines: list[str]


def default_init_path(env: Mapping[str, str]) -> Path:
    """Where `init` writes without --output: $PINSYNCD_CONFIG; /etc/pinsyncd/config.yaml
    for root; else the user's config folder (where the other commands look first)."""
    if env.get("PINSYNCD_CONFIG"):
        return Path(env["PINSYNCD_CONFIG"])
    if os.geteuid() == 0:
        return Path("/etc/pinsyncd/config.yaml")
    return user_config_path(env)


def init(
    output: Path | None, ipfs_path: Path | None, *, force: bool, env: Mapping[str, str]
) -> int:
    target = output or default_init_path(env)
    if target.exists() and not force:
        print(f"pinsyncd: {target} exists; --force replaces it", file=sys.stderr)
        return EX_SETUP
    found = _find(ipfs_path, env)
    plan = _plan(found, existing=[])
    try:
        _check_api(found.api)
        text = render_config(
            example_config(),
            api=found.api,
            node_token=found.rpc_secret is not None,
            services=plan.services,
            kubo_mfs=[s.name for s in found.services if s.mfs_policy],
            origin=f"the Kubo repo {found.repo}",
        )
        # Checked as it is read back (with a stand-in service when Kubo knows none: the user
        # adds one, as the file and the report say).
        checked = text if plan.services else text + _STAND_IN
        parse_config(checked, filename=str(target), env=env, source=target, tokens=False)
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_secrets(target.parent, found, plan, force=force)
        write_whole(target, text, mode=0o644)
    except (SetupError, ConfigError, ValueError, OSError) as exc:
        print(f"pinsyncd: {_describe(exc)}", file=sys.stderr)
        return EX_SETUP
    print(f"wrote {target}")
    _report(found, plan, target, env)
    return 0


_STAND_IN = "  - {name: stand-in, endpoint: https://example.invalid, token_env: STAND_IN}\n"


def import_kubo(
    config: Config, ipfs_path: Path | None, *, dry_run: bool, force: bool, env: Mapping[str, str]
) -> int:
    found = _find(ipfs_path, env)
    existing = [(s.name, s.endpoint) for s in config.services]
    plan = _plan(found, existing=existing)
    if not plan.services:
        for line in plan.lines:
            print(line)
        print(f"nothing to add: {config.source} has every service Kubo knows")
        return 0
    snippet = services_yaml(plan.services)
    try:
        text = config.source.read_text(encoding="utf-8")
        appended = _appended(text, snippet, config, env)
        if dry_run:
            print(f"would add to {config.source}:\n{snippet}", end="")
            _print_lines(plan.lines)
            return 0
        _write_secrets(config.source.parent, found, plan, force=force)
        if appended is not None:
            write_whole(config.source, appended, mode=config.source.stat().st_mode & 0o777)
            print(f"added {len(plan.services)} service(s) to {config.source}")
        else:
            print(f"add these under services: in {config.source} (it could not be done safely):")
            print(snippet, end="")
    except (SetupError, OSError) as exc:
        print(f"pinsyncd: {_describe(exc)}", file=sys.stderr)
        return EX_SETUP
    _report(found, plan, config.source, env, node=False)
    return 0


def _find(ipfs_path: Path | None, env: Mapping[str, str]) -> KuboFindings:
    found = read_repo(ipfs_path or repo_path(env))
    if not found.config_read:
        asyncio.run(_services_over_rpc(found))
    return found


async def _services_over_rpc(found: KuboFindings) -> None:
    """Without the repo's config file: the services' names, endpoints and MFS policies from
    the running node (their keys stay with Kubo)."""
    try:
        api = node_api_url(found.api)
    except ValueError:
        return
    try:  # no secret: without the config file, Kubo's API.Authorizations are not known
        async with LocalNode(api, timeout=10.0) as node:
            for name, endpoint, mfs in await kubo_policies(node):
                found.services.append(KuboService(name, endpoint, None, mfs))
    except NodeError as exc:
        found.notes.append(f"the node's services could not be asked over its RPC: {exc}")


def _plan(found: KuboFindings, existing: Sequence[tuple[str, str]]) -> Plan:
    taken = [name for name, _ in existing]
    plan = Plan([], {}, [], [])
    for service in found.services:
        if any(same_endpoint(service.endpoint, endpoint) for _, endpoint in existing):
            plan.lines.append(f"  skipped  {service.name}: its endpoint is in the config already")
            continue
        problem = _endpoint_problem(service.endpoint)
        if problem:
            plan.lines.append(f"  skipped  {service.name}: {problem}")
            continue
        name = service_name(service.name, taken)
        taken.append(name)
        token_file = f"tokens/{name}"
        plan.services.append(NewService(name, service.endpoint, token_file, service.name))
        if service.key is not None:
            plan.keys[token_file] = service.key
        else:
            plan.missing_keys.append(token_file)
    return plan


def _endpoint_problem(endpoint: str) -> str | None:
    try:
        url = URL(endpoint)
    except ValueError:
        return "its endpoint is not a URL"
    if url.scheme == "http" and not is_loopback_host(url.host):
        return (
            "its endpoint is plain http:// to another host, which would send the key in clear "
            "text; add it yourself with allow_insecure_http: true if you trust that network"
        )
    return None


def _check_api(api: str) -> None:
    try:
        node_api_url(api)
    except ValueError as exc:
        raise SetupError(f"the node's API address {api!r} is not usable: {exc}") from None


def _write_secrets(folder: Path, found: KuboFindings, plan: Plan, *, force: bool) -> None:
    secrets = dict(plan.keys)
    if found.rpc_secret is not None:
        secrets[NODE_TOKEN_FILE] = found.rpc_secret
    for relative, secret in secrets.items():
        write_secret(folder / relative, secret, force=force)


def _appended(text: str, snippet: str, config: Config, env: Mapping[str, str]) -> str | None:
    """The config with `snippet` added at its end, if that adds exactly these services to
    its `services:` list (so when `services:` is its last section); else None."""
    candidate = text.rstrip("\n") + "\n" + snippet
    try:
        parsed = parse_config(
            candidate, filename=str(config.source), env=env, source=config.source, tokens=False
        )
    except ConfigError:
        return None
    before = [s.name for s in config.services]
    after = [s.name for s in parsed.services]
    return candidate if after[: len(before)] == before and len(after) > len(before) else None


def _report(
    found: KuboFindings,
    plan: Plan,
    config_path: Path,
    env: Mapping[str, str],
    *,
    node: bool = True,
) -> None:
    folder = config_path.parent
    if node:
        print(f"  node     {found.api} (from {found.api_from})")
        if found.rpc_secret is not None:
            print(f"  node     its RPC secret is in {folder / NODE_TOKEN_FILE} (mode 0600)")
    for service in plan.services:
        key = "key in" if service.token_file in plan.keys else "key to put in"
        print(
            f"  service  {service.name}: {service.endpoint} ({key} {folder / service.token_file})"
        )
    _print_lines(plan.lines)
    for kubo_service in found.services:
        if kubo_service.mfs_policy:
            print(
                f"note: Kubo's own MFS policy pins the MFS root to {kubo_service.name}; keep "
                "sync.mfs off for that account, or the root is pinned twice"
            )
    for note in found.notes:
        print(f"note: {note}")
    if plan.missing_keys:
        files = ", ".join(str(folder / f) for f in plan.missing_keys)
        print(f"fill in (the key alone, then chmod 600): {files}")
    if os.geteuid() == 0 and (plan.keys or found.rpc_secret is not None):
        print(
            "note: the token files are root's alone; the systemd unit runs as its own user, so "
            "give it each one with LoadCredential=NAME:FILE and write token_file: "
            "${CREDENTIALS_DIRECTORY}/NAME (README: Run it as a systemd service)"
        )
    option = "" if config_path == default_config_path(env) else f" -c {config_path}"
    if not plan.services and node:
        print(f"next: add a service under services: in {config_path} (examples are there)")
    print(f"next: pinsyncd check-config{option}, then pinsyncd sync --once{option}")


def _print_lines(lines: Sequence[str]) -> None:
    for line in lines:
        print(line)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConfigError):
        return "; ".join(p.render(exc.filename) for p in exc.problems)
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc)
