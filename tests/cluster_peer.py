"""A real ipfs-cluster peer (`ipfs-cluster-service`, built from source by scripts/install-peers)
with its own Kubo, serving the Pinning Service API on 127.0.0.1.

Topology: the peer's Kubo is a second `KuboNode` (own repo, own ports, loopback only, no
bootstrap, no MDNS). Nothing connects it to any other node, so it can only get blocks from the
peers it is told about: the `origins` of a pin, or a node that dials it (a `delegate`).

The cluster is a single crdt peer, every listener on 127.0.0.1 port 0 (the real ports are read
from its log), `api.pinsvcapi` on with one basic-auth user; `POST /token` turns that user into
the JWT a Pinning Service API client sends as its Bearer token.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.peers import IPFS_BIN, ROOT, KuboNode, _stop

CLUSTER_BIN = ROOT / ".peers" / "bin" / "ipfs-cluster-service"
CLUSTER_CTL = ROOT / ".peers" / "bin" / "ipfs-cluster-ctl"
_LISTEN = re.compile(rb"(PINSVCAPI|RESTAPI) \(HTTP - authenticated\): /ip4/127\.0\.0\.1/tcp/(\d+)")
_PROXY = re.compile(rb"IPFS Proxy: /ip4/127\.0\.0\.1/tcp/(\d+) ->")
_READY = b"IPFS Cluster is READY"


@dataclass
class ClusterPeer:
    """`ipfs-cluster-service daemon` in `home`, pinning into its own Kubo (`self.kubo`)."""

    home: Path
    pin_timeout: str = "2m0s"
    """The connector's no-progress timeout: a pin that receives no block for this long fails."""
    concurrent_pins: int = 10
    """How many pins the peer fetches at once; the rest wait in its queue (`queued`)."""
    user: str = "pinsyncd"
    password: str = field(default_factory=lambda: secrets.token_hex(16))
    kubo: KuboNode = field(init=False)
    process: subprocess.Popen[bytes] | None = None
    url: str = ""
    """The Pinning Service API endpoint, e.g. http://127.0.0.1:40123."""
    rest_url: str = ""
    proxy: bool = False
    """Turn on `api.ipfsproxy`, the Kubo RPC API for the cluster's whole pinset."""
    proxy_url: str = ""
    """With `proxy`: its RPC API, e.g. http://127.0.0.1:40125 (pinsyncd's `node.api`)."""
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.kubo = KuboNode(self.home / "kubo")
        self.log = self.home / "cluster.log"

    @property
    def config_dir(self) -> Path:
        return self.home / "cluster"

    def init(self) -> None:
        """`ipfs-cluster-service init`, then the service.json edits for a loopback-only peer."""
        subprocess.run(
            [str(CLUSTER_BIN), "--config", str(self.config_dir), "init", "--consensus", "crdt"],
            check=True,
            capture_output=True,
        )
        path = self.config_dir / "service.json"
        config = json.loads(path.read_text())
        self.configure(config)
        path.write_text(json.dumps(config, indent=2))

    def configure(self, config: dict[str, Any]) -> None:
        loopback = "/ip4/127.0.0.1/tcp/0"
        cluster = config["cluster"]
        cluster["listen_multiaddress"] = [loopback]  # no 0.0.0.0, no QUIC
        cluster["peer_addresses"] = []
        cluster["enable_relay_hop"] = False
        cluster["mdns_interval"] = "0s"  # 0 turns mDNS off
        config["consensus"]["crdt"]["trusted_peers"] = ["*"]
        credentials = {self.user: self.password}
        apis = config["api"]
        host, port = self.kubo.api_url.removeprefix("http://").split(":")
        if self.proxy:
            apis["ipfsproxy"]["listen_multiaddress"] = [loopback]
            apis["ipfsproxy"]["node_multiaddress"] = f"/ip4/{host}/tcp/{port}"
        else:
            apis.pop("ipfsproxy", None)  # a component is on only when its section is present
        apis["pinsvcapi"]["http_listen_multiaddress"] = loopback
        apis["pinsvcapi"]["basic_auth_credentials"] = credentials
        apis["restapi"]["http_listen_multiaddress"] = loopback  # for ipfs-cluster-ctl
        apis["restapi"]["basic_auth_credentials"] = credentials
        connector = config["ipfs_connector"]["ipfshttp"]
        connector["node_multiaddress"] = f"/ip4/{host}/tcp/{port}"
        connector["pin_timeout"] = self.pin_timeout
        config["pin_tracker"]["stateless"]["concurrent_pins"] = self.concurrent_pins
        # Delegates come from the peers' "ping" metric, sent every monitor_ping_interval; the
        # first one may go out before Kubo answers, so send them often.
        cluster["monitor_ping_interval"] = "1s"
        # The defaults size pebble for a server (a 1 GiB block cache); a test needs little.
        pebble = config["datastore"]["pebble"]["pebble_options"]
        pebble["cache_size_bytes"] = 16 << 20
        pebble["mem_table_size"] = 8 << 20

    def init_kubo(self) -> None:
        """The peer's Kubo: loopback only (`--profile test`), on a swarm port chosen here so
        that it can also announce `/dns4/localhost/tcp/<port>`. ipfs-cluster drops loopback
        and link-local addresses from the `delegates` it returns (only DNS and global-unicast
        IPs pass its filter), so the DNS name is what makes delegates appear on loopback."""
        self.kubo.init()
        port = free_port()
        for key, value in (
            ("Addresses.Swarm", [f"/ip4/127.0.0.1/tcp/{port}"]),
            ("Addresses.AppendAnnounce", [f"/dns4/localhost/tcp/{port}"]),
        ):
            subprocess.run(
                [str(IPFS_BIN), "config", "--json", key, json.dumps(value)],
                env=self.kubo.env,
                check=True,
                capture_output=True,
            )

    def start(self, timeout: float = 60.0) -> None:
        if not (self.kubo.repo / "config").exists():
            self.init_kubo()
        self.kubo.start()
        if not (self.config_dir / "service.json").exists():
            self.init()
        else:  # a restart: the Kubo API port changed
            path = self.config_dir / "service.json"
            config = json.loads(path.read_text())
            self.configure(config)
            path.write_text(json.dumps(config, indent=2))
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [str(CLUSTER_BIN), "--config", str(self.config_dir), "daemon"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            text = self.log.read_bytes()[offset:]
            ports = {m.group(1): int(m.group(2)) for m in _LISTEN.finditer(text)}
            proxy = _PROXY.search(text)
            if _READY in text and len(ports) == 2 and (proxy or not self.proxy):
                self.url = f"http://127.0.0.1:{ports[b'PINSVCAPI']}"
                self.rest_url = f"http://127.0.0.1:{ports[b'RESTAPI']}"
                if proxy:
                    self.proxy_url = f"http://127.0.0.1:{int(proxy.group(1))}"
                if self.delegates():
                    return
            time.sleep(0.1)
        tail = self.log.read_bytes()[offset:][-3000:].decode(errors="replace")
        self.stop()
        raise RuntimeError(f"ipfs-cluster-service did not come up:\n{tail}")

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process, grace=20)
            self.process = None
        self.kubo.stop()

    # --- talking to it ----------------------------------------------------------------------

    def token(self) -> str:
        """A JWT from the Pinning Service API's `POST /token`, with the basic-auth user."""
        return self.request("POST", "/token", basic=True)["token"]

    def request(
        self,
        method: str,
        path: str,
        *,
        bearer: str | None = None,
        basic: bool = False,
        body: dict[str, Any] | None = None,
    ) -> Any:
        """One blocking call to the Pinning Service API (for set-up and raw evidence); an
        HTTP error is raised as `urllib.error.HTTPError`."""
        headers = {"Content-Type": "application/json"}
        if basic:
            pair = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            headers["Authorization"] = f"Basic {pair}"
        elif bearer is not None:
            headers["Authorization"] = f"Bearer {bearer}"
        data = json.dumps(body).encode() if body is not None else None
        if data is None and method == "POST":
            data = b""
        request = urllib.request.Request(
            f"{self.url}{path}", method=method, data=data, headers=headers
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = response.read()
        return json.loads(payload) if payload.strip() else None

    def delegates(self) -> list[str]:
        """The Kubo addresses this peer hands out as `delegates` (from its ping metric)."""
        request = urllib.request.Request(f"{self.rest_url}/monitor/metrics/ping")
        pair = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        request.add_header("Authorization", f"Basic {pair}")
        with urllib.request.urlopen(request, timeout=10) as response:
            metrics = json.loads(response.read())
        addresses: list[str] = []
        for metric in metrics:
            addresses += json.loads(metric["value"]).get("ipfs_addresses") or []
        return addresses

    def ctl(self, *args: str) -> str:
        """`ipfs-cluster-ctl` against this peer's REST API."""
        port = self.rest_url.rsplit(":", 1)[1]
        result = subprocess.run(
            [
                str(CLUSTER_CTL),
                "--host",
                f"/ip4/127.0.0.1/tcp/{port}",
                "--basic-auth",
                f"{self.user}:{self.password}",
                "--force-http",
                *args,
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return result.stdout.decode()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
