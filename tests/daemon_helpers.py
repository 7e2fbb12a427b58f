"""Running pinsyncd the way a user does: a config file on disk and the CLI as a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests import loopback_guard

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    url: str
    token: str
    concurrency: int = 4
    timeout: str = "5s"

    @property
    def env_var(self) -> str:
        return f"PINSYNCD_TEST_TOKEN_{self.name.upper().replace('-', '_')}"


def write_config(
    path: Path,
    *,
    node_api: str,
    services: Sequence[ServiceSpec],
    interval: str = "1h",
    status_interval: str = "500ms",
    extra_sync: str = "",
    retry: str = "",
    http_listen: str | None = None,
) -> dict[str, str]:
    """Write a config; returns the environment (with the tokens) to run pinsyncd with."""
    lines = [
        "node:",
        f"  api: {node_api}",
        "  timeout: 10s",
        "sync:",
        f"  interval: {interval}",
        f"  status_interval: {status_interval}",
        *([f"  {extra_sync}"] if extra_sync else []),
        "state:",
        f"  path: {path.parent / 'state.db'}",
        *(["retry:", *(f"  {line}" for line in retry.splitlines())] if retry else []),
        *(["http:", f"  listen: {http_listen}"] if http_listen else []),
        "services:",
    ]
    for s in services:
        lines += [
            f"  - name: {s.name}",
            f"    endpoint: {s.url}",
            f"    token_env: {s.env_var}",
            f"    concurrency: {s.concurrency}",
            f"    timeout: {s.timeout}",
        ]
    path.write_text("\n".join(lines) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PINSYNCD_")}
    env.update({s.env_var: s.token for s in services})
    env["PYTHONPATH"] = loopback_guard.PYTHONPATH  # pinsyncd from this checkout, guarded
    return env


def cli(
    args: Sequence[str], env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pinsyncd", *args, "--log-format", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


async def acli(
    args: Sequence[str], env: dict[str, str], limit: float = 120
) -> tuple[int, str, str]:
    """The CLI as a subprocess, without blocking the event loop (in-process test servers
    keep answering while it runs)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pinsyncd",
        *args,
        "--log-format",
        "json",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), limit)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def start_daemon(
    config: Path, env: dict[str, str], log: Path | None, *, log_level: str | None = None
) -> asyncio.subprocess.Process:
    """`pinsyncd run` logging JSON lines into `log`, or with `log=None` into a pipe (its
    stdout, stderr folded in)."""
    level = ["--log-level", log_level] if log_level else []
    command = [sys.executable, "-m", "pinsyncd", "run", "-c", str(config), "--log-format", "json"]
    if log is None:
        return await asyncio.create_subprocess_exec(
            *command,
            *level,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    with open(log, "ab") as out:  # noqa: ASYNC230 - opening a local log file
        return await asyncio.create_subprocess_exec(
            *command, *level, env=env, stdout=out, stderr=out
        )


@dataclass
class Daemon:
    """`pinsyncd run` on a config written for a test: its files and its process."""

    config: Path
    env: dict[str, str]
    log: Path
    process: asyncio.subprocess.Process

    def events(self) -> list[dict[str, Any]]:
        return log_events(self.log.read_text())


async def daemon_for(
    root: Path, node_api: str, services: Sequence[ServiceSpec], **options: Any
) -> Daemon:
    """Write `root/config.yaml` (`write_config` options) and start `pinsyncd run` on it,
    logging into `root/daemon.log`."""
    config = root / "config.yaml"
    env = write_config(config, node_api=node_api, services=services, **options)
    log = root / "daemon.log"
    return Daemon(config, env, log, await start_daemon(config, env, log))


def log_events(text: str) -> list[dict[str, Any]]:
    events = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    return events


def status_json(config: Path, env: dict[str, str]) -> dict[str, Any]:
    result = cli(["status", "--json", "-c", str(config)], env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
