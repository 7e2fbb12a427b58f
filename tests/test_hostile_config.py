"""A config shaped to break the reader, token files that are not files, a SIGHUP while the
daemon starts: each is one clear line (exit 78), and a running daemon keeps its config."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from tests.daemon_helpers import ServiceSpec, cli, daemon_for, log_events
from tests.fake_kubo import FakeKubo
from tests.fake_psa import FakePinningService
from tests.test_hostile_state import wait_for

TOKEN = "hostile-config-token"

GOOD = """node:
  api: http://127.0.0.1:5001
services:
  - name: a
    endpoint: http://127.0.0.1:9/
    token_file: {token}
state:
  path: {state}
"""


def alias_bomb(levels: int = 9) -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    previous = "a"
    for name in "bcdefghijk"[: levels - 1]:
        lines.append(f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]")
        previous = name
    return "\n".join(lines) + "\n"


HOSTILE = {
    "recursive alias": ("services: &x [*x]\n", "an alias refers to a value that contains it"),
    "recursive mapping": ("node: &n {api: *n}\n", "an alias refers to a value that contains it"),
    "10,000 levels": ("a: " + "[" * 10_000 + "]" * 10_000 + "\n", "nests deeper than"),
    "100 levels": ("a: " + "[" * 100 + "]" * 100 + "\n", "nests deeper than 64 levels"),
    "alias bomb": (alias_bomb(), "more than 100,000 values once its aliases are expanded"),
    "2 MiB": ("# " + "x" * 2**21 + "\n", "is larger than 1 MiB"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_config_is_one_clear_error(tmp_path: Path, case: str) -> None:
    text, message = HOSTILE[case]
    config = tmp_path / "config.yaml"
    config.write_text(text)
    result = cli(["check-config", "-c", str(config)], dict(os.environ), timeout=60)
    assert result.returncode == 78
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 2


def test_a_config_that_is_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    os.mkfifo(config)
    result = cli(["check-config", "-c", str(config)], dict(os.environ), timeout=30)
    assert result.returncode == 78 and "is not a regular file (a FIFO)" in result.stderr


@pytest.mark.slow
def test_token_files_that_are_not_token_files(tmp_path: Path) -> None:
    """Before: a FIFO hung start-up forever, /dev/zero ended in a MemoryError traceback, a
    second line crashed every cycle on "Forbidden control character"."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    zero = tmp_path / "zero"
    zero.symlink_to("/dev/zero")
    big = tmp_path / "big"
    big.write_text("t" * (65 * 2**10))
    two_lines = tmp_path / "two-lines"
    two_lines.write_text("first-line\nsecond-line\n")
    newline = tmp_path / "newline"
    newline.write_text(f"{TOKEN}\n")
    for path, message in [
        (fifo, "is not a regular file (a FIFO)"),
        (zero, "is not a regular file (a device)"),
        (big, "is larger than 64 KiB"),
        (two_lines, "holds a control character inside the token"),
    ]:
        config = tmp_path / "config.yaml"
        config.write_text(GOOD.format(token=path, state=tmp_path / "state.db"))
        result = cli(["check-config", "-c", str(config)], dict(os.environ), timeout=30)
        assert result.returncode == 78, (path, result.stderr)
        assert f"services[0].token_file: token file {path} {message}" in result.stderr
        assert "Traceback" not in result.stderr
    config.write_text(GOOD.format(token=newline, state=tmp_path / "state.db"))
    result = cli(["check-config", "-c", str(config)], dict(os.environ), timeout=30)
    assert result.returncode == 0, result.stderr  # the trailing newline is not the token's


async def test_a_hot_reload_of_a_hostile_config_keeps_the_daemon_and_its_config(
    tmp_path: Path,
) -> None:
    """Before: a hot reload of a recursive alias or an alias bomb killed the daemon."""
    async with (
        FakeKubo(pins=5) as node,
        FakePinningService(token=TOKEN, transition_after=0.0) as svc,
    ):
        run = await daemon_for(tmp_path, node.url, [ServiceSpec("a", svc.url, TOKEN)])
        config, log, daemon = run.config, run.log, run.process
        good = config.read_text()
        try:
            await wait_for(lambda: len(svc.pins) == 5, 60, "the pins backed up")
            for case in ("recursive alias", "alias bomb"):
                text, message = HOSTILE[case]
                config.write_text(text)
                daemon.send_signal(signal.SIGHUP)  # besides the file watcher: both are safe
                await wait_for(lambda m=message: _rejected(log, m), 30, f"{case} rejected")
            config.write_text(good.replace("interval: 1h", "interval: 2h"))
            daemon.send_signal(signal.SIGHUP)
            await wait_for(
                lambda: any(e["event"] == "config reloaded" for e in log_events(log.read_text())),
                30,
                "the good config taken",
            )
            assert daemon.returncode is None
        finally:
            daemon.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(daemon.wait(), 30) == 0
    events = log_events(log.read_text())
    rejected = [e for e in events if e["event"] == "config rejected"]
    assert any("an alias refers to a value" in e["problem"] for e in rejected)
    assert any("alias bomb" in e["problem"] for e in rejected)
    assert "Traceback" not in log.read_text()


def _rejected(log: Path, message: str) -> bool:
    return any(
        e["event"] == "config rejected" and message in e["problem"]
        for e in log_events(log.read_text())
    )


async def test_a_sighup_while_the_daemon_starts_is_not_fatal(tmp_path: Path) -> None:
    """Before: a SIGHUP in the first half second ended the process (SIGHUP's default action),
    because the daemon's own handler comes only once it runs. Sent here as soon as the
    process catches SIGHUP at all (its package is imported), long before it has started."""
    async with (
        FakeKubo(pins=3) as node,
        FakePinningService(token=TOKEN, transition_after=0.0) as svc,
    ):
        run = await daemon_for(tmp_path, node.url, [ServiceSpec("a", svc.url, TOKEN)])
        log, daemon = run.log, run.process
        try:
            await wait_for(lambda: _catches_sighup(daemon.pid), 30, "SIGHUP caught")
            started_before = any(
                e["event"] == "pinsyncd started" for e in log_events(log.read_text())
            )
            daemon.send_signal(signal.SIGHUP)
            await wait_for(lambda: len(svc.pins) == 3, 60, "the pins backed up")
            assert daemon.returncode is None
        finally:
            if daemon.returncode is None:
                daemon.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(daemon.wait(), 30)
    assert code == 0
    assert not started_before, "the signal came while the daemon was still starting"
    events = [e["event"] for e in log_events(log.read_text())]
    assert "SIGHUP: reading the config again" in events


def _catches_sighup(pid: int) -> bool:
    deadline = time.monotonic() + 0.1
    while time.monotonic() < deadline:  # poll closely: the window is short
        status = Path(f"/proc/{pid}/status").read_text()
        caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
        if int(caught.split()[1], 16) & (1 << (signal.SIGHUP - 1)):
            return True
        time.sleep(0.002)
    return False
