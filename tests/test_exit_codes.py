"""The exit codes a cron job, a timer or a monitoring check tells apart (`pinsyncd.exits`),
each in its situation, through the real CLI against our fake node and services: all pinned
(0), pins failed or still pending at `--timeout` (3), a service paused or the node down
(69), a usage error (2); `sync --once --now` trying failed pins again at once; and
`status --check`, one line per problem."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from pinsyncd.exits import EX_INCOMPLETE, EX_OK, EX_UNAVAILABLE, epilog
from tests.daemon_helpers import ServiceSpec, acli, write_config
from tests.fake_kubo import FakeKubo, generated_cid
from tests.fake_psa import FakePinningService, Fault

pytestmark = pytest.mark.slow  # the CLI as a subprocess, several times a test

TOKEN = "exit-token"


@dataclass
class Setup:
    node: FakeKubo
    service: FakePinningService
    config: Path
    env: dict[str, str]

    async def run(self, *args: str) -> tuple[int, str, str]:
        command, *rest = args
        return await acli([command, *rest, "-c", str(self.config)], self.env)


@asynccontextmanager
async def setup(
    tmp_path: Path, *, fail: int = 0, transition: float | None = 0.0, extra: str = ""
) -> AsyncIterator[Setup]:
    async with (
        FakeKubo(pins=10) as node,
        FakePinningService(
            token=TOKEN,
            transition_after=transition,
            fail_cids=[generated_cid(i, "fake") for i in range(fail)],
        ) as service,
    ):
        config = tmp_path / "config.yaml"
        env = write_config(
            config,
            node_api=node.url,
            services=[ServiceSpec("alpha", service.url, TOKEN)],
            retry="base: 1h\ncap: 1h\nmax_attempts: 1",
            extra_sync=extra,
        )
        yield Setup(node, service, config, env)


async def test_failed_pins_are_3(tmp_path: Path) -> None:
    async with setup(tmp_path, fail=2) as s:
        code, _out, err = await s.run("sync", "--once", "--wait")
        assert code == EX_INCOMPLETE, err
        assert "alpha: 2 pins failed" in err.strip().splitlines()[-1], err


async def test_pins_in_backoff_wait_for_it_and_now_tries_them_at_once(tmp_path: Path) -> None:
    async with setup(tmp_path) as s:
        # Two adds refused (400: certainly not applied): they wait an hour (retry.base).
        s.service.inject(Fault("status", status=400), method="POST", path="/pins", times=2)
        code, _out, err = await s.run("sync", "--once", "--wait")
        assert code == EX_INCOMPLETE and "alpha: 2 pins failed" in err, err
        adds = s.service.count(method="POST")
        code, _out, err = await s.run("sync", "--once")
        assert code == EX_INCOMPLETE and s.service.count(method="POST") == adds, err
        code, _out, err = await s.run("sync", "--once", "--wait", "--now")
        assert code == EX_OK, err
        assert s.service.count(method="POST") == adds + 2, "tried again at once, and pinned"
        code, out, err = await s.run("status", "--check")
        assert code == EX_OK and out.startswith("OK: 1 service synced within"), (out, err)


async def test_a_paused_service_or_a_node_down_is_69(tmp_path: Path) -> None:
    async with setup(tmp_path) as s:
        s.service.inject(Fault("status", 401), times=None)
        code, _out, err = await s.run("sync", "--once")
        assert code == EX_UNAVAILABLE, err
        assert "alpha: paused: the token" in err, err
        code, out, _err = await s.run("status", "--check")
        assert code == EX_UNAVAILABLE and out.startswith("alpha: paused: the token"), out
        s.service.clear_faults()
        await s.node.go_offline()
        code, _out, err = await s.run("sync", "--once", "--now")
        assert code == EX_UNAVAILABLE and "node unreachable" in err, err


async def test_pins_still_pending_when_the_wait_ends_are_3(tmp_path: Path) -> None:
    async with setup(tmp_path, transition=None) as s:  # the service never pins
        code, _out, err = await s.run("sync", "--once", "--wait", "--timeout", "1s")
        assert code == EX_INCOMPLETE, err
        assert "gave up waiting after 1s; not yet pinned or failed: alpha: 10" in err, err


async def test_status_check_says_each_problem_on_its_own_line(tmp_path: Path) -> None:
    async with setup(tmp_path, fail=3, transition=0.0, extra="stuck_after: 1ms") as s:
        s.service.fail_cids.clear()
        s.service.fail_cids.add(generated_cid(0, "fake"))
        for i in (1, 2):
            s.node.extra[generated_cid(i, "stuck")] = ""
        code, _out, err = await s.run("sync", "--once", "--wait", "--timeout", "2s")
        assert code == EX_INCOMPLETE, err
        code, out, _err = await s.run("status", "--check", "--max-age", "1h")
        lines = out.strip().splitlines()
        assert "alpha: 1 pin failed for good (`pinsyncd status --failed`)" in lines, out
        assert code == EX_INCOMPLETE, out
        code, out, _err = await s.run("status", "--check", "--max-age", "1ms")
        assert code == EX_UNAVAILABLE, out
        assert any("last cycle" in line and "more than 1ms" in line for line in out.splitlines())


async def test_usage_errors_and_the_table_in_help(tmp_path: Path) -> None:
    async with setup(tmp_path) as s:
        code, _out, err = await s.run("sync", "--timeout", "5m")
        assert code == 2 and "--timeout needs --wait" in err, err
        code, _out, err = await s.run("status", "--max-age", "5m")
        assert code == 2 and "--max-age needs --check" in err, err
        code, out, _err = await s.run("sync", "--help")
        assert code == 0 and epilog().splitlines()[1] in out, out
