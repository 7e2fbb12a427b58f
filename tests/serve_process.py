"""`pinsyncd serve` as a real subprocess, the way a user runs it: a config file and token files
on disk, `python -m pinsyncd serve -c FILE --log-format json`, the loopback guard on. Ready
once `GET /healthz` answers 200 (503 until the node answered). Stopped by signal, started
again on the same port and state file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests import loopback_guard
from tests.cluster_peer import free_port
from tests.daemon_helpers import log_events


def write_token(path: Path, token: str) -> Path:
    """A token file as serve wants it: mode 0600."""
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


def write_serve_config(
    root: Path,
    *,
    node_api: str,
    port: int,
    users: Mapping[str, str],
    pin_timeout: str = "60s",
    extra: str = "",
) -> Path:
    """`root/serve.yaml` with one account per `users` entry (name -> token, in token files)."""
    tokens = root / "serve-tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    lines = [
        "node:",
        f"  api: {node_api}",
        "serve:",
        f"  listen: 127.0.0.1:{port}",
        f"  state: {root / 'serve.db'}",
        "  origins: all  # the test nodes have loopback addresses only",
        f"  pin_timeout: {pin_timeout}",
        *([f"  {line}" for line in extra.splitlines()] if extra else []),
        "  users:",
    ]
    for name, token in users.items():
        lines += [f"    - name: {name}", f"      token_file: {write_token(tokens / name, token)}"]
    path = root / "serve.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class ServeProcess:
    """One `pinsyncd serve` on `config`, listening on 127.0.0.1:`port`, logging JSON lines
    into `log`."""

    config: Path
    port: int
    log: Path
    tokens: dict[str, str]
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        if not self.env:
            self.env = {k: v for k, v in os.environ.items() if not k.startswith("PINSYNCD_")}
            self.env["PYTHONPATH"] = loopback_guard.PYTHONPATH  # this checkout, guarded

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        """Start it and wait until `/healthz` says 200 (the node answered)."""
        assert self.process is None or self.process.poll() is not None, "already running"
        command = [sys.executable, "-m", "pinsyncd", "serve", "-c", str(self.config)]
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [*command, "--log-format", "json"], env=self.env, stdout=out, stderr=out
            )
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited with {self.process.returncode}: {self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=5) as response:
                    if response.status == 200:
                        return
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}: {exc.read()[:200]!r}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.1)
        self.stop(signal.SIGKILL)
        raise RuntimeError(f"serve not healthy after {timeout:.0f}s ({last}): {self.tail()}")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Send `signum` and wait for the exit; its code (None: it was not running)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        process.send_signal(signum)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
            raise AssertionError(f"serve did not stop on {signal.Signals(signum).name}") from None

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def events(self) -> list[dict[str, Any]]:
        return log_events(self.log.read_text(errors="replace"))

    def call(
        self, method: str, path: str, user: str | None = None, body: Any = None
    ) -> tuple[int, Any]:
        """One HTTP request as `user` (None: no token): the status and the JSON body."""
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url + path, method=method, data=data, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        return status, json.loads(raw) if raw.strip() else None


@contextmanager
def serve_process(
    root: Path,
    node_api: str,
    users: Mapping[str, str],
    *,
    port: int | None = None,
    pin_timeout: str = "60s",
    extra: str = "",
    start_timeout: float = 60.0,
) -> Iterator[ServeProcess]:
    """`pinsyncd serve` for the node at `node_api`, one account per `users` entry (name ->
    token), started and healthy; always stopped at the end."""
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    config = write_serve_config(
        root, node_api=node_api, port=port, users=users, pin_timeout=pin_timeout, extra=extra
    )
    served = ServeProcess(config, port, root / "serve.log", dict(users))
    served.start(start_timeout)
    try:
        yield served
    finally:
        served.stop()
