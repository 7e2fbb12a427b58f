"""The demo behind scripts/demo: real peers on 127.0.0.1, the real daemon, a few real files,
backed up to two services and to a second Kubo node through `pinsyncd serve`."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.peers import ROOT, KuboNode, MockPinningService, read_port_line
from tests.serve_process import serve_process

FILES = {
    "holiday-photo.jpg": b"\xff\xd8 pretend this is a photo from the beach",
    "thesis-final-v3.pdf": b"%PDF pretend this is the thesis",
    "notes/ipfs.md": b"# IPFS\ncontent addressing is neat\n",
    "music/song.ogg": b"OggS pretend this is a song",
    "backup.tar": b"pretend this is a tarball",
}


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description="pinsyncd demo on loopback peers")
    parser.add_argument("--keep", action="store_true", help="keep the demo folder afterwards")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="pinsyncd-demo-"))
    processes: list[subprocess.Popen[bytes]] = []
    node = KuboNode(workdir / "ipfs")
    home = KuboNode(workdir / "home-ipfs")
    mock = MockPinningService(token="demo-token-beta")
    stack = contextlib.ExitStack()
    try:
        say("starting a local IPFS node (Kubo, loopback only)")
        node.start()
        print(f"Kubo {node.rpc('version')['Version']} RPC API at {node.api_url}")

        say("adding a few files to it, each pinned with a name")
        for name, content in FILES.items():
            cid = node.cli("add", "-q", "--pin-name", name, stdin=content)
            print(f"  {cid}  {name}")

        say("starting two remote pinning services (IPFS Pinning Service API v1.0.0)")
        spec = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.fake_psa",
                "--port",
                "0",
                "--token",
                "demo-token-alpha",
                "--transition-after",
                "1.5",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
        )
        processes.append(spec)
        alpha = f"http://127.0.0.1:{read_port_line(spec, 30, 'spec service')}"
        print(f"  alpha: pinsyncd's spec-faithful test service at {alpha} (pins move")
        print("         queued -> pinning -> pinned by themselves, like a real service)")
        mock.start()
        print(f"  beta:  the npm mock-ipfs-pinning-service at {mock.url}")
        home.start()
        home_service = stack.enter_context(
            serve_process(workdir / "home", home.api_url, {"laptop": "demo-token-home"})
        )
        print(f"  home:  `pinsyncd serve` at {home_service.url}, pinning into a second Kubo")
        print("         node (your always-on box at home), which fetches the data for real")

        config = workdir / "config.yaml"
        config.write_text(
            f"node:\n  api: {node.api_url}\n"
            "sync:\n  interval: 30s\n  status_interval: 1s\n  origins: all\n"
            f"state:\n  path: {workdir / 'state.db'}\n"
            "services:\n"
            f"  - name: alpha\n    endpoint: {alpha}\n    token_env: ALPHA_TOKEN\n"
            f"  - name: beta\n    endpoint: {mock.url}\n    token_env: BETA_TOKEN\n"
            f"  - name: home\n    endpoint: {home_service.url}\n    token_env: HOME_TOKEN\n"
        )
        env = {
            **os.environ,
            "ALPHA_TOKEN": "demo-token-alpha",
            "BETA_TOKEN": mock.token,
            "HOME_TOKEN": "demo-token-home",
            "PYTHONPATH": str(ROOT),
        }
        say(f"the config ({config})")
        print(config.read_text().replace("\n", "\n  ").rstrip().join(["  ", ""]))

        say("running the daemon: pinsyncd run -c config.yaml")
        daemon = subprocess.Popen(
            [sys.executable, "-m", "pinsyncd", "run", "-c", str(config), "--log-format", "console"],
            env=env,
        )
        processes.append(daemon)
        local = len(FILES) + 1  # Kubo also pins the empty directory
        deadline = time.monotonic() + 60
        marked = False
        while time.monotonic() < deadline:
            time.sleep(1)
            status = json.loads(
                subprocess.run(
                    [sys.executable, "-m", "pinsyncd", "status", "--json", "-c", str(config)],
                    env=env,
                    capture_output=True,
                    check=True,
                ).stdout
            )
            beta = status["services"]["beta"]
            if not marked and beta["queued"] == local:
                print("\n  (the npm mock never finishes a pin by itself; the demo now marks its")
                print("   pins pinned, as a real service does once it has fetched the data)\n")
                with_cids = subprocess.run(
                    [str(ROOT / ".peers/bin/ipfs"), "pin", "ls", "--type=recursive", "-q"],
                    env=node.env,
                    capture_output=True,
                    check=True,
                    text=True,
                ).stdout.split()
                mock.set_status(with_cids, "pinned")
                marked = True
            if all(s["pinned"] == local for s in status["services"].values()):
                break
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(20)

        say("pinsyncd status -c config.yaml")
        subprocess.run(
            [sys.executable, "-m", "pinsyncd", "status", "-c", str(config)], env=env, check=True
        )
        done = all(s["pinned"] == local for s in status["services"].values())
        if done:
            say("the home node really has the data: ipfs dag stat --offline there")
            for name, content in FILES.items():
                cid = node.cli("add", "-q", "--only-hash", stdin=content)
                stat = json.loads(
                    home.cli("dag", "stat", "--offline", "--progress=false", "--enc=json", cid)
                )
                blocks = sum(dag.get("NumBlocks", 0) for dag in stat.get("DagStats", []))
                print(f"  {name}: {blocks} block(s), {stat.get('TotalSize')} bytes, offline")
        say(
            "done: every local pin is pinned on all three services"
            if done
            else "not everything was pinned within 60 s; see the log above"
        )
        return 0 if done else 1
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait(10)
        stack.close()
        mock.stop()
        node.stop()
        home.stop()
        if args.keep:
            print(f"(kept {workdir})")
        else:
            subprocess.run(["rm", "-rf", str(workdir)], check=False)


if __name__ == "__main__":
    sys.exit(main())
