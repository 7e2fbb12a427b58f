"""Alerts that reach a person: what needs attention and when it is told (pure, the clock
given), and the real thing: `pinsyncd sync --once` against fake Kubo and a fake service
that refuses the token, telling real HTTP receivers on 127.0.0.1 (a plain POST, Apprise's
`json://`, a Healthchecks-style heartbeat), then telling them it is over."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from pinsyncd.alerts.conditions import Condition, conditions
from pinsyncd.alerts.ledger import GAP, decide, keep_undelivered
from pinsyncd.config import ConfigError, load_config
from tests.daemon_helpers import ServiceSpec, acli, log_events, start_daemon, write_config
from tests.fake_kubo import FakeKubo
from tests.fake_psa import FakePinningService
from tests.test_hostile_state import wait_for

DAY = 86400.0


def status_doc(**services: dict[str, Any]) -> dict[str, Any]:
    blank = {"paused": None, "paused_until": None, "stuck": 0, "failed_for_good": 0}
    return {
        "stuck_after": 3600.0,
        "services": {name: {**blank, **fields} for name, fields in services.items()},
        "drill": None,
    }


def test_conditions_name_each_problem_and_its_service() -> None:
    doc = status_doc(
        a={
            "paused": "paused: the token was refused (HTTP 401)",
            "paused_until": "2026-12-07T00:00:00Z",
        },
        b={"stuck": 3, "failed_for_good": 2},
        c={"paused": "backing off: 3 failed cycles", "paused_until": "2026-12-07T00:00:00Z"},
    )
    doc["drill"] = {"services": {"c": {"not_fetched": 1, "time": "2026-12-06T01:00:00Z"}}}
    found = {c.key: c for c in conditions(doc)}
    assert sorted(found) == ["drill:c", "failed:b", "paused:a", "stuck:b"]
    assert "token was refused" in found["paused:a"].text
    assert "2026-12-07T00:00:00Z" in found["paused:a"].text
    assert "over 1h" in found["stuck:b"].text
    assert "pinsyncd status --failed" in found["failed:b"].text
    assert conditions(status_doc(ok={})) == []


PAUSED = Condition("paused:a", "pinsyncd: a is paused", "Nothing is sent to a ...")


def test_a_problem_is_told_once_reminded_after_repeat_and_its_end_told_once() -> None:
    alerts, ledger = decide({}, [PAUSED], now=1000.0, repeat=DAY)
    assert [(a.kind, a.key) for a in alerts] == [("problem", "paused:a")]
    alerts, ledger = decide(ledger, [PAUSED], now=1000.0 + DAY - 1, repeat=DAY)
    assert alerts == [], "not again before `repeat`"
    alerts, ledger = decide(ledger, [PAUSED], now=1000.0 + DAY, repeat=DAY)
    assert [a.kind for a in alerts] == ["reminder"]
    alerts, ledger = decide(ledger, [], now=1000.0 + DAY + GAP, repeat=DAY)
    assert [(a.kind, a.title) for a in alerts] == [("resolved", "resolved: pinsyncd: a is paused")]
    alerts, ledger = decide(ledger, [], now=1000.0 + DAY + 2 * GAP, repeat=DAY)
    assert alerts == [] and ledger == {}, "over and told: forgotten"


def test_a_problem_that_comes_and_goes_is_not_told_each_time() -> None:
    alerts, ledger = decide({}, [PAUSED], now=0.0, repeat=DAY)
    assert len(alerts) == 1
    told = []
    for minute in range(1, 10):  # gone, back, gone, ... every minute
        found = [PAUSED] if minute % 2 == 0 else []
        alerts, ledger = decide(ledger, found, now=minute * 60.0, repeat=DAY)
        told += alerts
    assert told == [], "nothing within GAP of the last message"
    alerts, ledger = decide(ledger, [], now=GAP, repeat=DAY)
    assert [a.kind for a in alerts] == ["resolved"], "told once it has settled"


def test_an_alert_not_delivered_is_tried_again() -> None:
    alerts, after = decide({}, [PAUSED], now=0.0, repeat=DAY)
    kept = keep_undelivered(alerts, set(), {}, after)
    assert kept == {}
    alerts, after = decide(kept, [PAUSED], now=60.0, repeat=DAY)
    assert [a.kind for a in alerts] == ["problem"]


def test_alert_urls_come_from_env_or_files_and_are_checked(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    base = "services:\n  - {name: a, endpoint: http://127.0.0.1:1, token_env: T}\n"
    config.write_text(
        base + "alerts:\n  targets:\n    - url_env: NTFY\n    - url: https://x\n"
        "  heartbeat: {url_file: hc}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(config, env={"T": "t", "NTFY": "not a url"})
    rendered = "\n".join(p.render("c.yaml") for p in caught.value.problems)
    assert "alerts.targets[1].url: unknown key" in rendered, "a URL is never written inline"
    config.write_text(base + "alerts:\n  targets: [{url_env: NTFY}]\n  heartbeat: {url_file: hc}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config, env={"T": "t", "NTFY": "not a url"})
    rendered = "\n".join(p.render("c.yaml") for p in caught.value.problems)
    assert "alerts.targets[0].url_env: is not a URL" in rendered
    assert "alerts.heartbeat.url_file" in rendered and "does not exist" in rendered
    (tmp_path / "hc").write_text("https://hc.example/ping/abc\n")
    loaded = load_config(config, env={"T": "t", "NTFY": "https://ntfy.example/topic"})
    assert loaded.heartbeat_url is not None
    assert loaded.heartbeat_url.reveal() == "https://hc.example/ping/abc"


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that keeps every request it gets."""

    got: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.got.append(
            {
                "path": request.path,
                "title": request.headers.get("Title"),
                "body": (await request.read()).decode(),
            }
        )
        return web.Response(text="ok")


@asynccontextmanager
async def receiving() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    receiver.url = f"http://127.0.0.1:{port}"
    try:
        yield receiver
    finally:
        await runner.cleanup()


@pytest.mark.slow
async def test_a_refused_token_is_told_to_a_person_and_so_is_its_end(tmp_path: Path) -> None:
    async with (
        FakeKubo(pins=5) as node,
        FakePinningService(token="right-token-0001", transition_after=0.0) as svc,
        receiving() as ntfy,
        receiving() as hook,
        receiving() as healthchecks,
    ):
        config = tmp_path / "config.yaml"
        env = write_config(
            config, node_api=node.url, services=[ServiceSpec("vault", svc.url, "wrong-token-99")]
        )
        with config.open("a") as out:
            out.write(
                "alerts:\n  targets:\n    - url_env: ALERT_NTFY\n    - url_env: ALERT_JSON\n"
                "  heartbeat: {url_env: ALERT_HC}\n"
            )
        env["ALERT_NTFY"] = f"{ntfy.url}/pinsyncd-topic-secret"
        env["ALERT_JSON"] = "json://" + hook.url.removeprefix("http://") + "/hook"
        env["ALERT_HC"] = f"{healthchecks.url}/ping/hc-uuid-secret"

        code, out, err = await acli(["sync", "--once", "-c", str(config)], env)
        assert code == 69, err
        assert [m["title"] for m in ntfy.got] == ["pinsyncd: vault is paused"]
        assert "token" in ntfy.got[0]["body"] and "refused" in ntfy.got[0]["body"]
        sent = json.loads(hook.got[0]["body"])  # what Apprise's json:// posts
        assert sent["title"] == "pinsyncd: vault is paused"
        assert [r["path"] for r in healthchecks.got] == ["/ping/hc-uuid-secret/fail"]
        everything = json.dumps([ntfy.got, hook.got, healthchecks.got]) + out + err
        for secret in ("wrong-token-99", "right-token-0001"):
            assert secret not in everything, "no token in an alert or a log"
        for secret in ("pinsyncd-topic-secret", "hc-uuid-secret"):
            assert secret not in out + err, "alert URLs are secrets too"

        code, out, err = await acli(["sync", "--once", "-c", str(config)], env)
        assert len(ntfy.got) == 1, "not told again while it lasts (repeat: 1d)"

        env["PINSYNCD_TEST_TOKEN_VAULT"] = "right-token-0001"
        code, out, err = await acli(["sync", "--once", "--now", "-c", str(config)], env)
        assert code == 0, err
        # Two messages about one problem are at least 10 minutes apart: the end is told at
        # the first look after that. The state's ledger is moved back to get there now.
        await _age_ledger(config.parent / "state.db")
        code, out, err = await acli(["sync", "--once", "-c", str(config)], env)
        assert code == 0, err
        assert [m["title"] for m in ntfy.got][-1] == "resolved: pinsyncd: vault is paused"
        assert json.loads(hook.got[-1]["body"])["title"].startswith("resolved:")
        assert healthchecks.got[-1]["path"] == "/ping/hc-uuid-secret"
        assert any(e["event"] == "alert sent" for e in log_events(out + err))


async def _age_ledger(state: Path) -> None:
    import sqlite3

    db = sqlite3.connect(state)
    try:
        (text,) = db.execute("SELECT value FROM meta WHERE key='alerts'").fetchone()
        ledger = {k: {**v, "last": v["last"] - 3600} for k, v in json.loads(text).items()}
        with db:
            db.execute("UPDATE meta SET value=? WHERE key='alerts'", (json.dumps(ledger),))
    finally:
        db.close()


@pytest.mark.slow
async def test_the_daemon_tells_a_person_too(tmp_path: Path) -> None:
    async with (
        FakeKubo(pins=3) as node,
        FakePinningService(token="right-token-0001") as svc,
        receiving() as ntfy,
    ):
        config = tmp_path / "config.yaml"
        env = write_config(
            config,
            node_api=node.url,
            services=[ServiceSpec("vault", svc.url, "wrong-token-99")],
            interval="1s",
        )
        with config.open("a") as out:
            out.write("alerts:\n  targets: [{url_env: ALERT_NTFY}]\n")
        env["ALERT_NTFY"] = f"{ntfy.url}/topic"
        daemon = await start_daemon(config, env, tmp_path / "daemon.log")
        try:
            await wait_for(lambda: bool(ntfy.got), 60, "the alert")
        finally:
            daemon.terminate()
            assert await asyncio.wait_for(daemon.wait(), 30) == 0
    assert [m["title"] for m in ntfy.got] == ["pinsyncd: vault is paused"]
