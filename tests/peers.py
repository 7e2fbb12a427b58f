"""Real third-party peers for the tests, as subprocesses on 127.0.0.1: Kubo (built from source
by scripts/install-peers) and the npm mock-ipfs-pinning-service. Started and always stopped by
the fixtures in conftest.py."""

from __future__ import annotations

import http.client
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pinsyncd.rpc_auth import authorization_header
from tests.loopback_guard import ADDR_FILTERS

ROOT = Path(__file__).resolve().parent.parent
IPFS_BIN = ROOT / ".peers" / "bin" / "ipfs"
NPM_DIR = ROOT / "peers" / "npm"


def install_peers() -> None:
    """Run the project's own installer (quick when everything is already there)."""
    subprocess.run([str(ROOT / "scripts" / "install-peers")], check=True)


def _stop(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def stop_piped(process: subprocess.Popen[bytes]) -> None:
    """Stop a test server whose stdout is a pipe, and close the pipe."""
    _stop(process)
    if process.stdout is not None:
        process.stdout.close()


def read_json_line(process: subprocess.Popen[bytes], timeout: float, what: str) -> dict[str, Any]:
    """Wait for the first line a test server prints once it listens (a JSON object, with at
    least its `port`); the server is stopped if none comes."""
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    buffer = b""
    try:
        while time.monotonic() < deadline:
            if not selector.select(max(0.0, deadline - time.monotonic())):
                break
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                break
            buffer += chunk
            if b"\n" in buffer:
                line: dict[str, Any] = json.loads(buffer.split(b"\n", 1)[0])
                return line
    finally:
        selector.close()
    _stop(process)
    raise RuntimeError(f"{what} did not start: {buffer.decode(errors='replace')[-500:]}")


def read_port_line(process: subprocess.Popen[bytes], timeout: float, what: str) -> int:
    """Wait for the `{"port": N}` line a test server prints once it listens."""
    return int(read_json_line(process, timeout, what)["port"])


@dataclass
class KuboNode:
    """A real Kubo daemon with its own repo, API and swarm on 127.0.0.1 (`--profile test`:
    random ports, no bootstrap, no MDNS)."""

    repo: Path
    online: bool = True
    auth: str | None = None  # the RPC secret when API.Authorizations is on (bearer:...)
    process: subprocess.Popen[bytes] | None = None
    api_url: str = ""
    seeded: dict[str, str] = field(default_factory=dict)
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.repo.with_suffix(".log")

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "IPFS_PATH": str(self.repo)}

    def init(self) -> None:
        """A new repo: loopback only (`--profile test`), and unable to dial anything else
        (`Swarm.AddrFilters`), whatever address a peer hands it."""
        subprocess.run(
            [str(IPFS_BIN), "init", "--profile", "test", "--empty-repo"],
            env=self.env,
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [str(IPFS_BIN), "config", "--json", "Swarm.AddrFilters", json.dumps(ADDR_FILTERS)],
            env=self.env,
            check=True,
            capture_output=True,
        )

    def start(self, timeout: float = 60.0) -> None:
        if not (self.repo / "config").exists():
            self.init()
        (self.repo / "api").unlink(missing_ok=True)
        args = [str(IPFS_BIN), "daemon"] + ([] if self.online else ["--offline"])
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                args, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Kubo exited: {self.log.read_text()[-2000:]}")
            api_file = self.repo / "api"
            if api_file.exists():
                text = api_file.read_text().strip()
                match = re.fullmatch(r"/ip4/([\d.]+)/tcp/(\d+)", text)
                if match:
                    self.api_url = f"http://{match.group(1)}:{match.group(2)}"
                elif text.startswith("/unix/"):
                    self.api_url = "unix:" + text[len("/unix") :]
                if self.api_url and self._answers():
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Kubo did not come up: {self.log.read_text()[-2000:]}")

    def _answers(self) -> bool:
        try:
            self.rpc("version")
        except OSError:
            return False
        return True

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process)
            self.process = None

    def rpc(self, command: str, **params: str) -> dict:
        """A blocking RPC call, for test set-up (over TCP or the Unix socket, with the
        secret when there is one)."""
        query = "&".join(f"{k}={urllib.request.quote(v)}" for k, v in params.items())
        headers = {"Authorization": authorization_header(self.auth)} if self.auth else {}
        if self.api_url.startswith("unix:"):
            connection = _UnixHTTPConnection(self.api_url[len("unix:") :])
            connection.request("POST", f"/api/v0/{command}?{query}", body=b"", headers=headers)
            response = connection.getresponse()
            body = response.read()
            connection.close()
            if response.status != 200:
                raise OSError(f"HTTP {response.status}: {body[:200]!r}")
            return json.loads(body.splitlines()[-1] or b"{}")
        request = urllib.request.Request(
            f"{self.api_url}/api/v0/{command}?{query}", method="POST", data=b"", headers=headers
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read().splitlines()[-1] or b"{}")

    def cli(self, *args: str, stdin: bytes | None = None) -> str:
        """Run the `ipfs` CLI against this node (it talks to the running daemon)."""
        auth = ["--api-auth", self.auth] if self.auth else []
        result = subprocess.run(
            [str(IPFS_BIN), *auth, *args],
            env=self.env,
            input=stdin,
            check=True,
            capture_output=True,
        )
        return result.stdout.decode().strip()


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(30)
        sock.connect(self._path)
        self.sock = sock


@dataclass
class MockPinningService:
    """The npm `mock-ipfs-pinning-service`, started on 127.0.0.1 through its `setup()`. Its
    delegates are on loopback (peers/npm/mock-psa.js refuses any other)."""

    token: str
    delegates: str | None = None
    process: subprocess.Popen[bytes] | None = None
    url: str = ""

    def start(self) -> None:
        args = ["node", str(NPM_DIR / "mock-psa.js"), "--port", "0", "--token", self.token]
        if self.delegates:
            args += ["--delegates", self.delegates]
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE)
        try:
            port = read_port_line(self.process, 30, "mock-ipfs-pinning-service")
        except RuntimeError:
            self.stop()
            raise
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        if self.process is not None:
            stop_piped(self.process)
            self.process = None

    def set_status(self, cids: str | list[str], status: str) -> None:
        """Move stored pins to `status` (the mock never does it by itself)."""
        body = {"cids": [cids] if isinstance(cids, str) else cids, "status": status}
        request = urllib.request.Request(
            f"{self.url}/__admin/status",
            method="POST",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
