"""`pinsyncd serve` the way a user runs it, for tests: a config file and a token file per user on
disk, the CLI as a subprocess on 127.0.0.1 (with the suite's loopback guard), up once its
`/healthz` answers 200, and always stopped."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests import loopback_guard


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_token_file(path: Path, token: str) -> None:
    """A token file as a user keeps one: readable by its owner only (0600) from the start."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(token + "\n")
    path.chmod(0o600)


def write_serve_config(
    path: Path,
    *,
    kubo_api_url: str,
    port: int,
    state: Path,
    token_files: dict[str, Path],
    **serve_options: Any,
) -> None:
    """The config of `pinsyncd serve`: the node, and a serve: section with one user per token
    file plus any other serve: keys given (e.g. `pin_timeout="30s"`, `origins="all"`)."""
    serve: dict[str, Any] = {
        "listen": f"127.0.0.1:{port}",
        "state": str(state),
        "users": [{"name": name, "token_file": str(file)} for name, file in token_files.items()],
    }
    serve.update(serve_options)
    config = {"node": {"api": kubo_api_url}, "serve": serve}
    path.write_text(yaml.safe_dump(config, sort_keys=False))


@dataclass
class ServePeer:
    """`python -m pinsyncd serve -c <config_path>` on 127.0.0.1:`port`."""

    config_path: Path
    port: int
    log: Path
    """Everything the process wrote (stderr and stdout), across restarts."""
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    startup_timeout: float = 30.0
    stops: list[int] = field(default_factory=list)
    """The exit code of each stop so far (negative: the signal that ended it)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start it, and wait (bounded) until `GET /healthz` answers 200."""
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pinsyncd",
                    "serve",
                    "-c",
                    str(self.config_path),
                    "--log-format",
                    "json",
                ],
                env=self.env,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise RuntimeError(f"pinsyncd serve exited ({code}):\n{self.log_tail()}")
            if self.healthy():
                return
            time.sleep(0.1)
        self.stop(signal.SIGKILL)
        raise RuntimeError(
            f"pinsyncd serve did not answer /healthz in {self.startup_timeout}s:\n{self.log_tail()}"
        )

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                return int(response.status) == 200
        except (OSError, http.client.HTTPException):  # refused, reset, or not HTTP yet
            return False

    def stop(self, how: signal.Signals = signal.SIGTERM, grace: float = 20.0) -> int | None:
        """Stop it with `how` (SIGTERM: then SIGKILL after `grace`); its exit code."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(how)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.stops.append(process.returncode)
        return process.returncode

    def restart(self, how: signal.Signals = signal.SIGTERM) -> int | None:
        """Stop it with `how` (e.g. SIGKILL, a crash) and start it again, on the same port,
        config and state; the exit code of the stop."""
        code = self.stop(how)
        self.start()
        return code

    def log_tail(self, size: int = 4000) -> str:
        return self.log.read_bytes()[-size:].decode(errors="replace") if self.log.exists() else ""


@contextmanager
def running_serve(
    tmp_path: Path, kubo_api_url: str, users: dict[str, str], **serve_options: Any
) -> Iterator[ServePeer]:
    """`pinsyncd serve` for `users` (name -> token) on a free loopback port, pinning into the
    Kubo at `kubo_api_url`, with state in `tmp_path/serve.db`; `serve_options` are more keys of
    its serve: section. Stopped at the end (SIGTERM, then SIGKILL)."""
    root = tmp_path / "serve"
    root.mkdir(parents=True, exist_ok=True)
    token_files: dict[str, Path] = {}
    for name, token in users.items():
        token_files[name] = root / f"{name}.token"
        write_token_file(token_files[name], token)
    config = root / "config.yaml"
    port = free_port()
    write_serve_config(
        config,
        kubo_api_url=kubo_api_url,
        port=port,
        state=tmp_path / "serve.db",
        token_files=token_files,
        **serve_options,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PINSYNCD_")}
    env["PYTHONPATH"] = loopback_guard.PYTHONPATH  # pinsyncd from this checkout, guarded
    peer = ServePeer(config_path=config, port=port, log=root / "serve.log", env=env)
    peer.start()
    try:
        yield peer
    finally:
        peer.stop()
