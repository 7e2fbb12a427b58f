"""Operations, as systemd and an admin see them: sd_notify over a real NOTIFY_SOCKET, config
hot reload (file watch and SIGHUP), a rejected config that leaves the old one running, and
tokens that never reach any output. The daemon runs as a subprocess."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from pinsyncd.notify import Notifier
from tests.daemon_helpers import ServiceSpec, cli, log_events, start_daemon, write_config
from tests.fake_kubo import FakeKubo, generated_cid
from tests.fake_psa import FakePinningService

ALPHA, BETA = "alpha-secret-token-1234", "beta-secret-token-5678"


class NotifySocket:
    """A real AF_UNIX datagram socket standing in for systemd's."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[dict[str, str]] = []

    async def collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.sock, 4096)
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append(fields)

    def seen(self, key: str, value: str | None = None) -> list[dict[str, str]]:
        return [m for m in self.messages if key in m and (value is None or m[key] == value)]


@pytest.fixture
async def notify(tmp_path: Path) -> AsyncIterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify.sock")
    task = asyncio.create_task(sock.collect())
    yield sock
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    sock.sock.close()


async def wait_for(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {what}")


def synced(svc: FakePinningService, node: FakeKubo) -> bool:
    return all(len(svc.pins_for_cid(cid)) == 1 for cid in node.pinset())


def test_notifier_without_systemd_does_nothing() -> None:
    notifier = Notifier(env={})
    assert not notifier.enabled and notifier.watchdog_interval is None
    assert notifier.send("READY=1") is False


def test_notifier_sends_datagrams_to_an_abstract_or_path_socket(tmp_path: Path) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(tmp_path / "n.sock"))
    try:
        notifier = Notifier(
            env={"NOTIFY_SOCKET": str(tmp_path / "n.sock"), "WATCHDOG_USEC": "4000000"}
        )
        assert notifier.watchdog_interval == 2.0
        notifier.ready("syncing\nthings")
        assert server.recv(4096).decode().splitlines()[:2] == ["READY=1", "STATUS=syncing things"]
    finally:
        server.close()
    assert Notifier(env={"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}).watchdog_interval is None


@pytest.mark.slow
async def test_notify_reload_reject_and_stop(tmp_path: Path, notify: NotifySocket) -> None:
    async with (
        FakeKubo(pins=30) as node,
        FakePinningService(token=ALPHA) as alpha,
        FakePinningService(token=BETA) as beta,
    ):
        config = tmp_path / "config.yaml"
        a, b = ServiceSpec("alpha", alpha.url, ALPHA), ServiceSpec("beta", beta.url, BETA)
        env = write_config(config, node_api=node.url, services=[a, b], interval="1s")
        write_config(config, node_api=node.url, services=[a], interval="1s")  # alpha only
        env.update(NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="600000")
        log = tmp_path / "daemon.log"
        daemon = await start_daemon(config, env, log)
        try:
            await wait_for(lambda: bool(notify.seen("READY", "1")), 15, "READY=1")
            await wait_for(lambda: synced(alpha, node), 15, "alpha synced")
            assert beta.count() == 0
            await wait_for(lambda: len(notify.seen("WATCHDOG", "1")) >= 2, 5, "watchdog pings")

            # Add a service by editing the file: it starts syncing without a restart.
            write_config(config, node_api=node.url, services=[a, b], interval="1s")
            await wait_for(lambda: synced(beta, node), 15, "beta synced after the reload")
            assert notify.seen("RELOADING", "1")

            # A broken config is rejected; the running one goes on (new pins reach both).
            config.write_text("services:\n  - name: beta\n    endpoint: [oops\n")
            await wait_for(
                lambda: "config rejected" in log.read_text(), 10, "the rejection is logged"
            )
            node.extra[generated_cid(1, "late")] = "late"
            await wait_for(lambda: synced(alpha, node) and synced(beta, node), 15, "still running")

            # Remove alpha, this time with SIGHUP: alpha is not called any more.
            write_config(config, node_api=node.url, services=[b], interval="1s")
            daemon.send_signal(1)  # SIGHUP
            await wait_for(lambda: log.read_text().count("config reloaded") >= 2, 10, "reload")
            await asyncio.sleep(0.5)
            calls = alpha.count()
            node.extra[generated_cid(2, "late")] = "late-2"
            await wait_for(lambda: synced(beta, node), 15, "beta gets the new pin")
            await asyncio.sleep(1.5)
            assert alpha.count() == calls, "a removed service is no longer called"
        finally:
            daemon.terminate()
            code = await asyncio.wait_for(daemon.wait(), 20)
    assert code == 0
    await asyncio.sleep(0.1)
    assert notify.seen("STOPPING", "1")
    assert any("local pins" in m.get("STATUS", "") for m in notify.messages)
    events = log_events(log.read_text())
    rejected = [e["problem"] for e in events if e["event"] == "config rejected"]
    assert any("invalid YAML" in problem for problem in rejected), rejected
    reloads = [e for e in events if e["event"] == "config reloaded"]
    assert reloads[0]["added"] == ["beta"] and reloads[1]["removed"] == ["alpha"]
    assert events[-1]["event"] == "pinsyncd stopped"

    # The state of the removed service is kept (a later config can bring it back).
    db = sqlite3.connect(tmp_path / "state.db")
    try:
        kept = db.execute("SELECT COUNT(*) FROM remote_pins WHERE service='alpha'").fetchone()[0]
    finally:
        db.close()
    assert kept == 31, "alpha's 30 pins + the first late one, from before it was removed"
    env.pop("NOTIFY_SOCKET", None)
    result = cli(["status", "--json", "-c", str(config)], env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["services"]["beta"]["unsent"] == 0

    # No token anywhere: logs, status output.
    everything = log.read_text() + result.stdout + result.stderr
    assert ALPHA not in everything and BETA not in everything


@pytest.mark.slow
async def test_retry_clears_backoff_for_the_next_cycle(tmp_path: Path) -> None:
    from pinsyncd.model import RemotePin, RemoteStatus, ServiceState
    from pinsyncd.store import StateStore

    async with FakeKubo(pins=0) as node, FakePinningService(token=ALPHA) as alpha:
        config = tmp_path / "config.yaml"
        env = write_config(
            config, node_api=node.url, services=[ServiceSpec("alpha", alpha.url, ALPHA)]
        )
    later = time.time() + 86400
    failed, errored, fine = generated_cid(1), generated_cid(2), generated_cid(3)
    store = await StateStore.open(tmp_path / "state.db")
    try:
        await store.save(
            [
                RemotePin("alpha", failed, RemoteStatus.FAILED, "r1", next_attempt=later),
                RemotePin("alpha", errored, RemoteStatus.ERROR, None, next_attempt=later),
                RemotePin("alpha", fine, RemoteStatus.PINNED, "r3"),
            ]
        )
        await store.save_service_state(
            ServiceState("alpha", paused_until=later, pause_reason="paused: token refused")
        )
    finally:
        await store.close()

    one = cli(["retry", "--service", "alpha", failed, "-c", str(config)], env)
    assert one.returncode == 0, one.stderr
    assert one.stdout.strip() == "1 pin and 1 paused service will be tried again at the next cycle"
    rest = cli(["retry", "-c", str(config)], env)
    assert (
        rest.stdout.strip() == "1 pin and 0 paused services will be tried again at the next cycle"
    )
    unknown = cli(["retry", "--service", "nope", "-c", str(config)], env)
    assert unknown.returncode == 1
    assert "no service named 'nope'" in unknown.stderr.strip().splitlines()[-1]
    bad = cli(["retry", "not-a-cid", "-c", str(config)], env)
    assert bad.returncode == 1 and "invalid CID 'not-a-cid'" in bad.stderr
    assert "Traceback" not in unknown.stderr + bad.stderr

    store = await StateStore.open(tmp_path / "state.db")
    try:
        rows = await store.remote_pins("alpha")
        state = await store.service_state("alpha")
    finally:
        await store.close()
    assert rows[failed].next_attempt == 0 and rows[errored].next_attempt == 0
    assert state.paused_until == 0 and state.pause_reason is None


async def test_sync_once_shows_progress_on_a_terminal_and_log_lines_otherwise(
    tmp_path: Path,
) -> None:
    import os
    import pty
    import sys

    async with FakeKubo(pins=300) as node, FakePinningService(token=ALPHA) as alpha:
        config = tmp_path / "config.yaml"
        env = write_config(
            config, node_api=node.url, services=[ServiceSpec("alpha", alpha.url, ALPHA)]
        )
        env["COLUMNS"] = "100"
        leader, follower = pty.openpty()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pinsyncd",
            "sync",
            "--once",
            "-c",
            str(config),
            env=env,
            stdin=follower,
            stdout=follower,
            stderr=follower,
        )
        os.close(follower)
        output = b""
        loop = asyncio.get_running_loop()
        while True:
            try:
                chunk = await loop.run_in_executor(None, os.read, leader, 65536)
            except OSError:  # the terminal closed
                break
            if not chunk:
                break
            output += chunk
        code = await process.wait()
        os.close(leader)
        assert code == 0, output.decode(errors="replace")
        screen = output.decode(errors="replace")
        assert "alpha: sending" in screen and "300/300" in screen, screen[-2000:]
        assert ALPHA not in screen

        (tmp_path / "state.db").unlink()
        alpha_two = FakePinningService(token=ALPHA)
        async with alpha_two:
            env = write_config(
                config, node_api=node.url, services=[ServiceSpec("alpha", alpha_two.url, ALPHA)]
            )
            plain = await asyncio.to_thread(cli, ["sync", "--once", "-c", str(config)], env)
    assert plain.returncode == 0, plain.stderr
    sending = [e for e in log_events(plain.stderr) if e["event"] == "sending"]
    assert sending[-1] == {**sending[-1], "service": "alpha", "done": 300, "total": 300}


async def test_http_endpoint_of_a_running_daemon(tmp_path: Path) -> None:
    import aiohttp
    from prometheus_client.parser import text_string_to_metric_families

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with FakeKubo(pins=25) as node, FakePinningService(token=ALPHA) as alpha:
        config = tmp_path / "config.yaml"
        env = write_config(
            config,
            node_api=node.url,
            services=[ServiceSpec("alpha", alpha.url, ALPHA)],
            http_listen=f"127.0.0.1:{port}",
        )
        daemon = await start_daemon(config, env, tmp_path / "daemon.log")
        base = f"http://127.0.0.1:{port}"
        try:
            await wait_for(lambda: synced(alpha, node), 15, "synced")
            async with aiohttp.ClientSession() as http:
                for _ in range(50):
                    try:
                        async with http.get(f"{base}/healthz") as response:
                            health = (response.status, await response.text())
                            break
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.1)
                await asyncio.sleep(0.5)
                async with http.get(f"{base}/metrics") as response:
                    metrics_text = await response.text()
                async with http.get(f"{base}/status") as response:
                    status = await response.json()
        finally:
            daemon.terminate()
            assert await asyncio.wait_for(daemon.wait(), 20) == 0
    assert health == (200, "ok\n")
    assert status["services"]["alpha"]["queued"] == 25
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
    }
    ok_adds = samples[
        ("pinsyncd_requests_total", (("operation", "add"), ("outcome", "ok"), ("service", "alpha")))
    ]
    assert ok_adds == 25
    assert samples[("pinsyncd_pins", (("service", "alpha"), ("status", "queued")))] == 25
    assert samples[("pinsyncd_local_pins", ())] == 25
    assert samples[("pinsyncd_node_online", ())] == 1
    assert ALPHA not in metrics_text and ALPHA not in json.dumps(status)


async def test_a_token_echoed_by_a_server_is_redacted_from_the_logs(tmp_path: Path) -> None:
    """Some servers put the header they got into their error text; the log never shows it."""
    from tests.fake_psa import Fault

    async with FakeKubo(pins=3) as node, FakePinningService(token=ALPHA) as alpha:
        alpha.inject(
            Fault("status", status=500, details=f"upstream rejected 'Bearer {ALPHA}'"),
            method="GET",
            times=None,
        )
        config = tmp_path / "config.yaml"
        env = write_config(
            config, node_api=node.url, services=[ServiceSpec("alpha", alpha.url, ALPHA)]
        )
        result = await asyncio.to_thread(cli, ["sync", "--once", "-c", str(config)], env)
    assert result.returncode == 69, "EX_UNAVAILABLE: the service errs"
    assert "upstream rejected 'Bearer ***'" in result.stderr
    status = cli(["status", "--json", "-c", str(config)], env)
    assert "Bearer ***" in status.stdout, "the stored last error is redacted too"
    assert ALPHA not in result.stderr + result.stdout + status.stdout + status.stderr


def test_a_token_file_readable_by_others_is_warned_about(tmp_path: Path) -> None:
    token = tmp_path / "alpha.token"
    token.write_text(ALPHA)
    token.chmod(0o644)
    config = tmp_path / "config.yaml"
    config.write_text(
        f"services:\n  - name: alpha\n    endpoint: https://a.example\n    token_file: {token}\n"
    )
    result = cli(["check-config", "-c", str(config)], {"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert f"token file {token} is readable by other users; chmod 600 it" in result.stderr
    assert ALPHA not in result.stdout + result.stderr


@pytest.mark.slow
async def test_status_and_retry_beside_a_busy_daemon_and_no_per_pin_spam(
    tmp_path: Path,
) -> None:
    """The daemon writes the state all the time during a large sync; `status` and `retry`
    read and write the same file meanwhile. Under systemd the log goes to stdout as JSON,
    one line per event: a 2000-pin sync is a handful of lines, not one per pin."""

    async with FakeKubo(pins=2000) as node, FakePinningService(token=ALPHA) as alpha:
        # The service holds every add after the 1000th until the commands have run twice, so
        # they run while the daemon is mid-sync however slow the machine is (each CLI run
        # starts Python); the daemon's timeout is longer than that.
        alpha.hold_adds_after = 1000
        config = tmp_path / "config.yaml"
        env = write_config(
            config,
            node_api=node.url,
            services=[ServiceSpec("alpha", alpha.url, ALPHA, timeout="120s")],
        )
        env["JOURNAL_STREAM"] = "8:12345"
        stdout_log = tmp_path / "stdout.log"
        daemon = await start_daemon(config, env, stdout_log)
        results = []
        try:
            await wait_for(lambda: len(alpha.pins) >= 1000, 60, "the sync is under way")
            for _ in range(2):
                for command in (["status", "--json"], ["retry"]):
                    args = [*command, "-c", str(config)]
                    results.append(await asyncio.to_thread(cli, args, env))
            busy_during = len(alpha.pins) < 2000
            alpha.release_adds.set()
            await wait_for(lambda: synced(alpha, node), 120, "the sync is done")
        finally:
            daemon.terminate()
            assert await asyncio.wait_for(daemon.wait(), 20) == 0
    assert busy_during, "the commands ran while the daemon was still sending"
    for result in results:
        assert result.returncode == 0, result.stderr
        assert "locked" not in result.stderr and "Traceback" not in result.stderr
    events = log_events(stdout_log.read_text())
    assert events and all("level" in e for e in events), "JSON lines"
    info = [e for e in events if e["level"] in ("info", "warning", "error")]
    assert len(info) <= 12, [e["event"] for e in info]


@pytest.mark.slow
async def test_adopt_takes_over_existing_pins_so_sync_sends_only_the_rest(
    tmp_path: Path,
) -> None:
    from multiformats import CID

    async with FakeKubo(pins=20) as node, FakePinningService(token=ALPHA) as alpha:
        ours = sorted(node.pinset())
        for cid in ours[:8]:  # pinned earlier by `ipfs pin remote add`, as CIDv0/v1 mix
            stored = CID.decode(cid).encode("base58btc") if cid.endswith("a") else cid
            alpha.add_pin(stored, name="by hand", status="pinned")
        alpha.add_pin(generated_cid(99, "foreign"), status="pinned")  # not ours
        config = tmp_path / "config.yaml"
        env = write_config(
            config, node_api=node.url, services=[ServiceSpec("alpha", alpha.url, ALPHA)]
        )
        adopted = await asyncio.to_thread(
            cli, ["adopt", "--service", "alpha", "-c", str(config)], env
        )
        assert adopted.returncode == 0, adopted.stderr
        assert adopted.stdout.startswith("alpha: 8 existing pins adopted, 0 of pinsyncd's own")
        synced_run = await asyncio.to_thread(cli, ["sync", "--once", "-c", str(config)], env)
        assert synced_run.returncode == 0, synced_run.stderr
    assert alpha.count(method="POST") == 12, "only the 12 pins the service did not have"
    assert len(alpha.pins) == 21
    status = json.loads(cli(["status", "--json", "-c", str(config)], env).stdout)
    assert status["services"]["alpha"]["pinned"] == 8
    assert status["services"]["alpha"]["queued"] == 12
    unknown = cli(["adopt", "--service", "nope", "-c", str(config)], env)
    assert unknown.returncode == 1 and "no service named 'nope'" in unknown.stderr
