"""Log priorities for the journal: when pinsyncd's output is the stream systemd named in
`$JOURNAL_STREAM` (systemd.exec(5)), each line starts with `<N>` (sd-daemon(3)), so that
`journalctl -p warning` finds the warnings and errors; anywhere else, the lines are as they
were. The CLI runs as a subprocess whose output is a real file, and `$JOURNAL_STREAM` names
that file's device and inode, as systemd names its socket."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from pinsyncd import journal
from tests.daemon_helpers import ServiceSpec, log_events, write_config
from tests.fake_kubo import FakeKubo
from tests.fake_psa import FakePinningService

TOKEN, WRONG = "journal-token-1234", "journal-wrong-5678"
PREFIXED = re.compile(r"<([0-7])>(.*)")


def stream_id(path: Path) -> str:
    info = os.stat(path)
    return f"{info.st_dev}:{info.st_ino}"


def test_a_stream_is_the_journal_only_when_its_device_and_inode_match(tmp_path: Path) -> None:
    journal_file, other = tmp_path / "journal", tmp_path / "other"
    journal_file.touch()
    other.touch()
    with journal_file.open("w") as stream, other.open("w") as elsewhere:
        env = {"JOURNAL_STREAM": stream_id(journal_file)}
        assert journal.is_journal(stream, env)
        assert not journal.is_journal(elsewhere, env), "output redirected in a child"
        assert not journal.is_journal(stream, {})
        assert not journal.is_journal(stream, {"JOURNAL_STREAM": "not:numbers"})


def test_every_line_of_an_event_carries_its_priority() -> None:
    assert journal.prefixed("one\n  two", "warning") == "<4>one\n<4>  two"
    assert journal.prefixed("x", "error") == "<3>x"
    assert journal.prefixed("x", "critical") == "<2>x"
    assert journal.prefixed("x", "debug") == "<7>x"
    assert journal.prefixed("x", "info") == journal.prefixed("x", "unheard-of") == "<6>x"


def run_cli(
    args: Sequence[str], env: dict[str, str], output: Path, *, journal_stream: Path | None
) -> int:
    """The CLI with stdout and stderr into `output` (as systemd connects both to the
    journal), `$JOURNAL_STREAM` naming `journal_stream`'s device and inode."""
    env = dict(env)
    env.pop("JOURNAL_STREAM", None)
    if journal_stream is not None:
        journal_stream.touch()
        env["JOURNAL_STREAM"] = stream_id(journal_stream)
    with output.open("ab") as out:
        return subprocess.run(
            [sys.executable, "-m", "pinsyncd", *args],
            env=env,
            stdout=out,
            stderr=out,
            timeout=120,
            check=False,
        ).returncode


@pytest.mark.slow
async def test_the_journal_gets_priorities_and_anything_else_plain_lines(
    tmp_path: Path,
) -> None:
    """`sync --once` with one service that works and one that refuses the token: the
    refusal is an error (<3>), the cycle's summary info (<6>), the line the command ends
    with an error too; the JSON after the prefix is intact and the token redacted. The same
    run with its output elsewhere (a child whose stderr was redirected keeps the variable)
    has no prefix at all."""
    async with (
        FakeKubo(pins=3) as node,
        FakePinningService(token=TOKEN) as alpha,
        FakePinningService(token="what-beta-takes") as beta,
    ):
        config = tmp_path / "config.yaml"
        env = write_config(
            config,
            node_api=node.url,
            services=[ServiceSpec("alpha", alpha.url, TOKEN), ServiceSpec("beta", beta.url, WRONG)],
        )
        args = ["sync", "--once", "-c", str(config)]
        into_journal, elsewhere = tmp_path / "journal.log", tmp_path / "file.log"
        code = await asyncio.to_thread(
            run_cli, args, env, into_journal, journal_stream=into_journal
        )
        assert code == 69, into_journal.read_text()
        plain_code = await asyncio.to_thread(
            run_cli, [*args, "--now"], env, elsewhere, journal_stream=tmp_path / "journal"
        )
        assert plain_code == 69, elsewhere.read_text()
    lines = into_journal.read_text().splitlines()
    priorities = []
    for line in lines:
        match = PREFIXED.fullmatch(line)
        assert match, f"no priority: {line!r}"
        priority, text = int(match.group(1)), match.group(2)
        if text.startswith("{"):
            event = json.loads(text)
            assert priority == journal.PRIORITIES[event["level"]], line
        priorities.append((priority, text))
    errors = [text for priority, text in priorities if priority == 3]
    assert any("beta" in text and "refused" in text for text in errors), lines
    assert errors[-1].startswith("pinsyncd: "), "the line the command ends with"
    assert any(priority == 6 for priority, _ in priorities), lines
    assert WRONG not in into_journal.read_text()

    plain = elsewhere.read_text().splitlines()
    assert plain and not [line for line in plain if PREFIXED.match(line)], plain
    assert log_events(elsewhere.read_text()), "JSON lines, as before"


@pytest.mark.slow
async def test_the_daemon_under_systemd_logs_priorities_to_stdout(tmp_path: Path) -> None:
    """`pinsyncd run` with `$JOURNAL_STREAM` set logs to stdout (systemd connects both
    streams to the journal): there too, a refused token is found at error priority."""
    async with (
        FakeKubo(pins=2) as node,
        FakePinningService(token="what-alpha-takes") as alpha,
    ):
        config = tmp_path / "config.yaml"
        env = write_config(
            config, node_api=node.url, services=[ServiceSpec("alpha", alpha.url, WRONG)]
        )
        stdout = tmp_path / "stdout.log"
        stdout.touch()
        env["JOURNAL_STREAM"] = stream_id(stdout)
        with stdout.open("ab") as out:
            daemon = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pinsyncd", "run", "-c", str(config), env=env, stdout=out
            )
        try:
            for _ in range(600):  # bounded: the refusal comes with the first cycle
                if "<3>" in await asyncio.to_thread(stdout.read_text):
                    break
                await asyncio.sleep(0.1)
        finally:
            daemon.terminate()
            assert await asyncio.wait_for(daemon.wait(), 30) == 0
    lines = stdout.read_text().splitlines()
    events = []
    for line in lines:
        match = PREFIXED.fullmatch(line)
        assert match, f"no priority: {line!r}"
        events.append((int(match.group(1)), json.loads(match.group(2))))
    assert any(p == 3 and "refused" in e["event"] for p, e in events), lines
    assert {e["level"] for p, e in events if p == 6} == {"info"}
    assert any(e["event"] == "pinsyncd stopped" for _, e in events)


@pytest.mark.slow
def test_config_errors_reach_the_journal_as_errors(tmp_path: Path) -> None:
    """A config the unit cannot start with (exit 78): each problem is an error line."""
    config = tmp_path / "config.yaml"
    config.write_text("node:\n  api: http://127.0.0.1:1\nservices: []\nunknown: 1\n")
    output = tmp_path / "journal.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PINSYNCD_")}
    code = run_cli(["run", "-c", str(config)], env, output, journal_stream=output)
    assert code == 78
    lines = output.read_text().splitlines()
    assert lines and all(line.startswith("<3>") for line in lines), lines
    assert "nothing was started" in lines[-1]
