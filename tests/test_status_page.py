"""The status page (`status_page`) rendered from real state files read by
`store.readonly`, parsed back with the standard library's HTML parser; and `GET /` served by
`HttpApi` on a real socket to a real client."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog

from pinsyncd import status_page
from pinsyncd.http_api import HttpApi
from pinsyncd.logs import register_secrets
from pinsyncd.metrics import Metrics
from pinsyncd.model import RemotePin, RemoteStatus, ServiceState
from pinsyncd.status_page import SHOWN, refresh_seconds, render_page
from pinsyncd.store import StateStore
from pinsyncd.store.drill_record import write_drill
from pinsyncd.store.readonly import KUBO_MFS_NOTE, read_failed, read_status, read_trouble
from pinsyncd.tokens import Secret

HOSTILE = "<img src=x onerror=alert(1)><script>alert(2)</script>"
REASON = '<b onmouseover="alert(\'r\')">cannot fetch</b> & "more"'
OLD = "2020-01-01T00:00:00+00:00"
"""A `created` long past: queued or pinning since then is stuck."""
TAGS = {
    *("html", "head", "meta", "title", "style", "body", "section", "footer", "a", "code"),
    *("h1", "h2", "h3", "p", "span", "ol", "ul", "li", "div", "time"),
    *("table", "thead", "tbody", "tr", "th", "td", "dl", "dt", "dd"),
}
"""Every element the page may have: none of them runs or loads anything."""


class Parsed(HTMLParser):
    """A page taken apart: its elements with their attributes, its text, and the text of
    each element with a given class, id or data-service."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.chunks: list[str] = []
        self._open: list[tuple[str, list[str]]] = []
        self.texts: dict[str, list[str]] = {}
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._separate()
        found = dict(attrs)
        self.elements.append((tag, found))
        if tag in ("meta",):
            return
        keys = [tag, *(f"{tag}.{c}" for c in (found.get("class") or "").split())]
        keys += [f"#{found['id']}"] if found.get("id") else []
        keys += [f"[{found['data-service']}]"] if found.get("data-service") else []
        self._open.append((tag, keys))
        for key in keys:
            self.texts.setdefault(key, []).append("")

    def _separate(self) -> None:
        """Elements' texts are apart by a space (`one` and `all` fold the spaces)."""
        for _, keys in self._open:
            for key in keys:
                self.texts[key][-1] += " "

    def handle_endtag(self, tag: str) -> None:
        self._separate()
        while self._open:
            opened, _ = self._open.pop()
            if opened == tag:
                break

    def handle_data(self, data: str) -> None:
        self.chunks.append(data)
        for _, keys in self._open:
            for key in keys:
                self.texts[key][-1] += data

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    def one(self, key: str) -> str:
        (text,) = self.texts[key]
        return " ".join(text.split())

    def all(self, key: str) -> list[str]:
        return [" ".join(t.split()) for t in self.texts.get(key, [])]

    def count(self, tag: str, **attrs: str) -> int:
        return sum(
            1
            for t, found in self.elements
            if t == tag and all(found.get(k) == v for k, v in attrs.items())
        )


def checked(page: str) -> Parsed:
    """The page parsed, after the checks every page passes: only the expected elements, no
    event handler, no link off the page, and it encodes as UTF-8."""
    page.encode("utf-8")
    parsed = Parsed(page)
    assert {tag for tag, _ in parsed.elements} <= TAGS
    for tag, attrs in parsed.elements:
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
        if tag == "a":
            assert attrs["href"] == "/status"
    return parsed


async def make_state(
    path: Path,
    local: dict[str, str],
    rows: Sequence[RemotePin] = (),
    services: Sequence[ServiceState] = (),
    notes: dict[str, dict[str, Any]] | None = None,
) -> Path:
    store = await StateStore.open(path)
    try:
        await store.replace_local_pins(local)
        await store.save(rows)
        for state in services:
            await store.save_service_state(state)
        for key, fact in (notes or {}).items():
            await store.note(key, fact)
        await store.set_meta("last_cycle", str(time.time()))
    finally:
        await store.close()
    return path


def page_of(
    path: Path,
    names: Sequence[str] = ("a", "b"),
    *,
    replicas: int | None = None,
    daemon: dict[str, Any] | None = None,
    stuck_after: float = 3600.0,
    limit: int = SHOWN,
    now: float | None = None,
) -> str:
    status = read_status(path, names, replicas=replicas, stuck_after=stuck_after)
    if daemon is not None:
        status["daemon"] = daemon
    trouble = read_trouble(path, names, stuck_after=stuck_after, limit=limit)
    now = time.time() if now is None else now
    return render_page(status, trouble, now=now, refresh=30, max_age=600)


def counts(*numbers: int) -> str:
    """A service's counts as the page shows them, in the page's order."""
    names = ("pinned", "pinning", "queued", "failed", "failed for good", "sending", "unsent")
    return " ".join(f"{name} {n}" for name, n in zip(names, numbers, strict=True))


def pinned(service: str, cids: Sequence[str]) -> list[RemotePin]:
    return [RemotePin(service, cid, RemoteStatus.PINNED, created=OLD) for cid in cids]


def synced(*names: str) -> list[ServiceState]:
    return [ServiceState(name, adopted=True, last_cycle=time.time()) for name in names]


async def test_every_string_from_a_server_the_node_or_the_state_is_escaped(
    tmp_path: Path,
) -> None:
    weird = "tab\there \x1b[31mred\x1b[0m end"
    path = await make_state(
        tmp_path / "state.db",
        {"cid1": HOSTILE, "cid2": weird, "cid3": "plain"},
        [
            RemotePin("a", "cid1", RemoteStatus.FAILED, name=HOSTILE, details=REASON, attempts=9),
            RemotePin("a", "cid2", RemoteStatus.QUEUED, name=weird, created=OLD),
            *pinned("a", ["cid3"]),
        ],
        [
            ServiceState(
                "a", last_cycle=time.time(), last_error=f"HTTP 500: {HOSTILE}", down_since=1.0
            ),
            ServiceState("b", paused_until=time.time() + 60, pause_reason=f"paused: {HOSTILE}"),
        ],
        {KUBO_MFS_NOTE: {"warnings": [f"Kubo says {HOSTILE}"]}},
    )
    # A drill record is JSON, which can carry a lone surrogate: shown as an escape.
    detail = f"{HOSTILE} \ud800"
    failing = {"cid": "cid3", "result": "not_fetched", "reason": "stalled", "detail": detail}
    write_drill(path, {"a": {"time": time.time(), "not_fetched": 1, "failing": [failing]}}, 1.0)
    page = page_of(path, daemon={"running": True, "healthy": False, "reason": HOSTILE})
    parsed = checked(page)
    assert "<script" not in page and "<img" not in page and "<b " not in page
    text = parsed.text
    assert text.count(HOSTILE) >= 7  # names, error, pause, warning, drill, daemon
    assert REASON in parsed.one("table.failed")
    assert HOSTILE in parsed.one("table.failed") and "cid1" in parsed.one("table.failed")
    # A terminal's escapes and a lone surrogate are shown as escapes, never sent raw.
    assert "\\x1b[31mred" in parsed.one("table.stuck") and "\x1b" not in page
    assert f"{HOSTILE} \\ud800" in parsed.one("table.drill-failing")
    assert f"last error: HTTP 500: {HOSTILE}" in parsed.one("[a]")
    assert f"paused: {HOSTILE}" in parsed.one("p.pause")
    assert f"warning: Kubo says {HOSTILE}" in parsed.one("#attention")


async def test_a_token_in_a_stored_error_is_masked(tmp_path: Path) -> None:
    token = "page-token-7f3a9c"
    register_secrets([Secret(token, "test")])
    path = await make_state(
        tmp_path / "state.db",
        {"cid1": "x"},
        services=[ServiceState("a", last_cycle=time.time(), last_error=f"echoed {token}")],
    )
    page = page_of(path, ["a"])
    assert token not in page
    assert "echoed ***" in checked(page).one("[a]")


async def test_a_state_file_that_does_not_exist_yet(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    parsed = checked(page_of(path))
    assert not path.exists()
    assert parsed.one("h1") == "2 things need attention"
    assert parsed.all("#attention") == [
        "a: never synced (is the daemon or the timer running?) "
        "b: never synced (is the daemon or the timer running?)"
    ]
    for name in ("a", "b"):
        assert parsed.one(f"[{name}]").startswith(f"{name} never synced last cycle never")
    assert parsed.all("dl.counts") == [counts(0, 0, 0, 0, 0, 0, 0)] * 2
    assert "0 pins, 0 of them to back up; last listed never" in parsed.one("#node")
    assert "None yet: pinsyncd check --retrieval" in parsed.one("#drill")
    assert parsed.count("table", **{"class": "failed"}) == 0


async def test_all_backed_up_says_so_and_nothing_else_needs_attention(tmp_path: Path) -> None:
    cids = ["cid1", "cid2", "cid3"]
    path = await make_state(
        tmp_path / "state.db",
        dict.fromkeys(cids, ""),
        [*pinned("a", cids), *pinned("b", cids)],
        synced("a", "b"),
    )
    parsed = checked(page_of(path, daemon={"running": True, "healthy": True, "reason": "ok"}))
    assert parsed.one("h1") == "All 3 pins are backed up on 2 of 2 services"
    assert parsed.count("section", id="summary", **{"class": "ok"}) == 1
    assert parsed.count("ol", id="attention") == 0
    assert parsed.all("span.badge") == ["ok", "ok"]
    assert parsed.one("title") == "pinsyncd: All 3 pins are backed up on 2 of 2 services"
    assert "daemon: healthy" in parsed.one("#node")
    assert parsed.one("table.replication").endswith("recursive 3 3 0 0")


async def test_k_of_n_counts_a_pin_backed_up_on_k_services(tmp_path: Path) -> None:
    path = await make_state(
        tmp_path / "state.db",
        {"cid1": "", "cid2": ""},
        [*pinned("a", ["cid1"]), *pinned("b", ["cid2"])],
        synced("a", "b"),
    )
    assert checked(page_of(path, replicas=1)).one("h1") == (
        "All 2 pins are backed up on 1 of 2 services"
    )
    below = checked(page_of(path))
    assert below.one("h1") == "1 thing needs attention"
    assert below.one("#attention") == "2 of 2 pins are on fewer than 2 of 2 services"


async def test_the_gravest_comes_first(tmp_path: Path) -> None:
    """Paused and failing services, a daemon not well and a drill that found a CID a
    service could not serve are red and first; then stuck and failed-for-good pins, pins
    below K and the warnings."""
    now = float(int(time.time()))  # the document's times are whole seconds
    path = await make_state(
        tmp_path / "state.db",
        {"cid1": "one", "cid2": "two", "cid3": "three"},
        [
            RemotePin("a", "cid1", RemoteStatus.FAILED, name="one", details="none", attempts=9),
            RemotePin("a", "cid2", RemoteStatus.PINNING, name="two", created=OLD),
            *pinned("a", ["cid3"]),
        ],
        [
            ServiceState("a", last_cycle=now),
            ServiceState(
                "b",
                last_cycle=now,
                paused_until=now + 3600,
                pause_reason="paused: the token (PINSYNCD_B) was refused: HTTP 401",
                last_error="HTTP 401: access token is invalid",
                down_since=now - 120,
            ),
        ],
        {KUBO_MFS_NOTE: {"warnings": ["Kubo's MFS policy pins the MFS root too"]}},
    )
    failing = {"cid": "cid3", "result": "not_fetched", "reason": "nothing_fetched", "detail": None}
    write_drill(path, {"a": {"time": now, "fetched": 2, "not_fetched": 1, "failing": [failing]}}, 1)
    daemon = {"running": True, "healthy": False, "reason": "full"}
    parsed = checked(page_of(path, daemon=daemon, now=now))
    items = [
        (attrs["class"], text)
        for (_, attrs), text in zip(
            [e for e in parsed.elements if e[0] == "li"], parsed.all("li"), strict=True
        )
        if attrs.get("class")
    ]
    assert items == [
        ("urgent", "daemon: unhealthy: full"),
        ("urgent", "b: paused: the token (PINSYNCD_B) was refused: HTTP 401"),
        ("urgent", "restore drill: a says it has pinned 1 CIDs it could not serve: cid3"),
        ("warn", "a: 1 pin queued or pinning for over 1h"),
        ("warn", "a: 1 pin failed for good (`pinsyncd status --failed`)"),
        ("warn", "3 of 3 pins are on fewer than 2 of 2 services (2 on none)"),
        ("warn", "warning: Kubo's MFS policy pins the MFS root too"),
    ]
    assert parsed.one("h1") == "7 things need attention"
    assert parsed.count("section", id="summary", **{"class": "urgent"}) == 1
    assert parsed.all("span.badge") == ["ok", "paused"]
    pause = parsed.one("p.pause")
    assert pause.startswith("paused: the token (PINSYNCD_B) was refused: HTTP 401, until ")
    assert pause.endswith("UTC (in 1h)")
    service_b = parsed.one("[b]")
    assert "last error: HTTP 401: access token is invalid" in service_b
    assert "down since " in service_b and "(2m ago)" in service_b
    assert "daemon: NOT HEALTHY: full" in parsed.one("#node")
    assert parsed.one("table.failed").endswith("one cid1 9 at the next cycle none")
    assert "two cid2 pinning 2020-01-01 00:00:00 UTC" in parsed.one("table.stuck")
    assert parsed.all("ul.drill")[0].startswith(
        "a: 2 of 3 fetched without this node (1 not fetched), "
    )
    assert parsed.one("table.drill-failing").endswith("a cid3 not_fetched nothing_fetched")


async def test_a_service_backing_off_one_rate_limited_and_one_held_back(tmp_path: Path) -> None:
    now = float(int(time.time()))  # the document's times are whole seconds
    path = await make_state(
        tmp_path / "state.db",
        {"cid1": ""},
        services=[
            ServiceState(
                "a",
                last_cycle=now,
                paused_until=now + 90,
                pause_reason="backing off: 2 failed cycle(s), next try in 1m30s",
                last_error="HTTP 502 from the service",
                failures=2,
                down_since=now - 600,
            ),
            ServiceState(
                "b",
                last_cycle=now,
                paused_until=now + 600,
                pause_reason="rate limited: nothing is sent for 10m",
            ),
            ServiceState(
                "c", last_cycle=now, paused_until=now + 60, pause_reason="held back (older words)"
            ),
        ],
    )
    parsed = checked(page_of(path, ["a", "b", "c"], now=now))
    assert parsed.all("span.badge") == ["backing off", "rate limited", "waiting"]
    backing_off, rate_limited, older = parsed.all("p.warn")
    assert older.startswith("held back (older words), until 2")
    assert backing_off.startswith("backing off: 2 failed cycle(s), next try in 1m30s, until 2")
    assert backing_off.endswith(" UTC (in 1m30s)")
    assert rate_limited.startswith("rate limited: nothing is sent for 10m, until 2")
    assert rate_limited.endswith(" UTC (in 10m)")
    assert "last error: HTTP 502 from the service" in parsed.one("[a]")


async def test_failed_and_stuck_pins_are_listed_up_to_a_bound(tmp_path: Path) -> None:
    failed = [f"f{i:03}" for i in range(7)]
    stuck = [f"s{i:03}" for i in range(6)]
    path = await make_state(
        tmp_path / "state.db",
        dict.fromkeys(failed + stuck + ["late"], "pin"),
        [
            *(RemotePin("a", c, RemoteStatus.FAILED, details=f"why {c}") for c in failed),
            RemotePin("a", "late", RemoteStatus.ERROR, attempts=5, last_error="HTTP 400"),
            *(
                RemotePin("a", c, RemoteStatus.QUEUED, created=f"2020-01-0{9 - i}T00:00:00Z")
                for i, c in enumerate(stuck)
            ),
            RemotePin("a", "fresh", RemoteStatus.QUEUED, created="2999-01-01T00:00:00Z"),
        ],
        synced("a"),
    )
    trouble = read_trouble(path, ["a"], max_attempts=5, limit=5)["a"]
    assert trouble["failed_total"] == 8 == len(read_failed(path, ["a"], max_attempts=5))
    assert [r["cid"] for r in trouble["failed"]] == failed[:5]
    assert trouble["failed"] == read_failed(path, ["a"], max_attempts=5)[:5]
    assert trouble["stuck_total"] == 6 == read_status(path, ["a"])["services"]["a"]["stuck"]
    assert [r["cid"] for r in trouble["stuck"]] == stuck[::-1][:5]  # the longest stuck first
    assert trouble["stuck"][0] == {
        "cid": "s005",
        "name": None,
        "status": "queued",
        "since": "2020-01-04T00:00:00+00:00",
    }
    parsed = checked(page_of(path, ["a"], limit=5))
    assert parsed.all("h3")[:2] == ["Failed pins (8)", "Stuck for over 1h (6)"]
    assert parsed.all("p.more") == [
        "and 3 more: pinsyncd status --failed lists them all",
        "and 1 more: pinsyncd ls --service a --status queued,pinning lists every pending "
        "request, these among them",
    ]
    assert parsed.count("tr") == 6 + 6 + 2  # failed, stuck, replication


def test_no_state_file_means_no_trouble(tmp_path: Path) -> None:
    assert read_trouble(tmp_path / "none.db", ["a"]) == {
        "a": {"failed": [], "failed_total": 0, "stuck": [], "stuck_total": 0}
    }


@pytest.mark.parametrize(("interval", "seconds"), [(1.0, 10), (30.0, 30), (45.4, 45), (3600, 60)])
def test_the_page_reloads_every_sync_interval_within_bounds(interval: float, seconds: int) -> None:
    assert refresh_seconds(interval) == seconds


async def test_the_page_reloads_itself(tmp_path: Path) -> None:
    page = render_page(
        read_status(tmp_path / "none.db", ["a"]), {}, now=0.0, refresh=17, max_age=600
    )
    parsed = checked(page)
    assert parsed.count("meta", **{"http-equiv": "refresh", "content": "17"}) == 1
    assert "Reloads every 17 s" in parsed.one("footer")


# ------------------------------------------------------------------ served


async def serve(page: Callable[[], str]) -> HttpApi:
    server = HttpApi(
        "127.0.0.1:0", Metrics(Path("/nonexistent"), list), lambda: (True, ""), dict, page
    )
    await server.start()
    return server


async def test_get_serves_the_page_read_only_with_headers_that_forbid_everything(
    tmp_path: Path,
) -> None:
    path = await make_state(
        tmp_path / "state.db", {"cid1": HOSTILE}, pinned("a", ["cid1"]), synced("a")
    )
    server = await serve(lambda: page_of(path, ["a"]))
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{server.url}/") as response:
                body = await response.text()
                assert response.status == 200
                assert response.headers["Content-Type"] == "text/html; charset=utf-8"
                assert response.headers["Content-Security-Policy"].startswith(
                    "default-src 'none'; style-src 'unsafe-inline';"
                )
                assert response.headers["X-Content-Type-Options"] == "nosniff"
                assert response.headers["Cache-Control"] == "no-store"
            async with session.head(f"{server.url}/") as response:
                assert response.status == 200 and await response.read() == b""
            for method in ("POST", "PUT", "DELETE"):
                async with session.request(method, f"{server.url}/") as response:
                    assert response.status == 405
    finally:
        await server.stop()
    assert checked(body).one("h1") == "The 1 pin is backed up on 1 of 1 service"


async def test_a_page_that_cannot_be_read_answers_503(tmp_path: Path) -> None:
    def broken() -> str:
        raise RuntimeError("the state file is damaged")

    server = await serve(broken)
    try:
        with structlog.testing.capture_logs() as logs:
            async with aiohttp.ClientSession() as session, session.get(server.url) as response:
                assert response.status == 503
                assert await response.text() == "the state file is damaged\n"
                assert response.headers["Cache-Control"] == "no-store"
    finally:
        await server.stop()
    assert logs[0]["event"] == "cannot read the status"


def test_the_headers_forbid_everything_but_inline_style() -> None:
    policy = dict(
        part.strip().split(" ", 1)
        for part in status_page.HEADERS["Content-Security-Policy"].split(";")
    )
    assert policy == {
        "default-src": "'none'",
        "style-src": "'unsafe-inline'",
        "base-uri": "'none'",
        "form-action": "'none'",
        "frame-ancestors": "'none'",
    }


async def test_a_node_with_no_pin_to_back_up(tmp_path: Path) -> None:
    path = await make_state(tmp_path / "state.db", {}, services=synced("a"))
    parsed = checked(page_of(path, ["a"]))
    assert parsed.one("h1") == "Nothing to back up yet: the node's last listing had no pin selected"
    assert parsed.count("section", id="summary", **{"class": "ok"}) == 1
