"""The status page of a running daemon, looked at in a real headless browser (Debian's
`chromium`): the DOM it builds from the page, and a screenshot. The daemon runs as a
subprocess against a fake Kubo node with a pin whose name is HTML, a service that pins some
and fails one with a reason that is HTML, and a service that refuses the token."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pinsyncd.store.drill_record import write_drill
from tests.daemon_helpers import ServiceSpec, daemon_for
from tests.fake_kubo import FakeKubo, generated_cid
from tests.fake_psa import FakePinningService
from tests.test_status_page import HOSTILE, checked, counts

pytestmark = pytest.mark.slow

ALPHA, BETA = "alpha-page-token-1234", "beta-page-token-5678"
REASON = '<iframe src="http://203.0.113.9/"></iframe><b>no provider</b> & "quoted"'
DRILL_DETAIL = "<script>alert(3)</script>nothing came in 60s"
BROWSER_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
"""Without the background-networking flags Chromium tries to reach Google on its own."""
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.skip(
            "Debian's chromium is not installed: scripts/install-peers installs it when run "
            "as root (apt-get install chromium); without apt, install it another way"
        )
    return found


def browse(url: str, *extra: str, timeout: float = 90.0) -> str:
    """Chromium, headless, on `url` with a fresh profile; its stdout. Every process it
    started is ended with it."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        process = subprocess.Popen(
            [chromium(), *BROWSER_FLAGS, f"--user-data-dir={profile}", *extra, url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            out, err = process.communicate(timeout=timeout)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, err[-2000:]
    return out


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's header, after checking it is one."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE, head
    length, kind, width, height = struct.unpack(">I4sII", head[8:24])
    assert (length, kind) == (13, b"IHDR")
    return width, height


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def wait_for(check: Callable[[], Any], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for: {what}")


async def test_the_status_page_in_a_real_browser(tmp_path: Path) -> None:
    browser = chromium()
    hostile_cid = generated_cid(0, "hostile")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with (
        FakeKubo(pins=5, extra={hostile_cid: HOSTILE}) as node,
        FakePinningService(token=ALPHA) as alpha,  # pins stay queued until told otherwise
        FakePinningService(token=BETA) as beta,
    ):
        ordinary = sorted(set(node.pinset()) - {hostile_cid})
        write_drill(
            tmp_path / "state.db",
            {
                "alpha": {
                    "time": time.time(),
                    "fetched": 2,
                    "not_fetched": 1,
                    "failing": [
                        {
                            "cid": ordinary[0],
                            "result": "not_fetched",
                            "reason": "stalled",
                            "detail": DRILL_DETAIL,
                        }
                    ],
                }
            },
            time.time(),
        )
        daemon = await daemon_for(
            tmp_path,
            node.url,
            [
                ServiceSpec("alpha", alpha.url, ALPHA),
                ServiceSpec("beta", beta.url, "not-the-beta-token-0000"),
            ],
            extra_sync="stuck_after: 1s",
            retry="base: 1h\nmax_attempts: 1",
            http_listen=f"127.0.0.1:{port}",
        )
        try:
            async with aiohttp.ClientSession() as http:

                async def status() -> dict[str, Any]:
                    try:
                        async with http.get(f"{base}/status") as response:
                            return dict(await response.json()) if response.status == 200 else {}
                    except aiohttp.ClientConnectionError:
                        return {}

                async def all_sent() -> bool:
                    return alpha.pin_count == 6

                await wait_for(all_sent, 60, "every pin sent to alpha")
                for cid in ordinary[:4]:
                    alpha.set_status(cid, "pinned")
                alpha.set_status(hostile_cid, "failed", details=REASON)  # ordinary[4]: queued

                async def settled() -> bool:
                    services = (await status()).get("services", {})
                    a, b = services.get("alpha", {}), services.get("beta", {})
                    return (a.get("pinned"), a.get("failed_for_good"), a.get("stuck")) == (
                        4,
                        1,
                        1,
                    ) and bool(b.get("paused"))

                await wait_for(settled, 60, "4 pinned, 1 failed and 1 stuck on alpha, beta paused")
                async with http.get(f"{base}/") as response:
                    assert response.status == 200
                    served = await response.text()
            dom = await asyncio.to_thread(browse, f"{base}/", "--dump-dom")
            wide, narrow = tmp_path / "status-page.png", tmp_path / "status-page-phone.png"
            await asyncio.to_thread(
                browse, f"{base}/", f"--screenshot={wide}", "--window-size=1200,900"
            )
            await asyncio.to_thread(
                browse, f"{base}/", f"--screenshot={narrow}", "--window-size=390,844"
            )
        finally:
            daemon.process.send_signal(signal.SIGTERM)
            stopped = await asyncio.wait_for(daemon.process.wait(), 30)
    assert stopped == 0, daemon.log.read_text()[-3000:]
    print(f"screenshots: {wide} {narrow} (browser {browser})")

    # What the browser made of it: nothing from a name, a reason or a detail became an element.
    parsed = checked(dom)
    for tag in ("script", "img", "iframe", "b"):
        assert parsed.count(tag) == 0, tag
    assert HOSTILE in parsed.text and REASON in parsed.text and DRILL_DETAIL in parsed.text
    assert "<script" not in served and "<img" not in served and "<iframe" not in served

    assert parsed.one("h1").endswith("things need attention")
    attention = parsed.all("li.urgent")
    assert attention[0].startswith("beta: paused: ") and "refused" in attention[0]
    assert attention[-1] == (
        f"restore drill: alpha says it has pinned 1 CIDs it could not serve: {ordinary[0]}"
    )
    assert "alpha: 1 pin failed for good (`pinsyncd status --failed`)" in parsed.all("li.warn")
    assert "alpha: 1 pin queued or pinning for over 1s" in parsed.all("li.warn")
    assert "6 of 6 pins are on fewer than 2 of 2 services (2 on none)" in parsed.all("li.warn")

    assert parsed.all("span.badge") == ["ok", "paused"]
    assert parsed.all("dl.counts") == [counts(4, 0, 1, 1, 1, 0, 0), counts(0, 0, 0, 0, 0, 0, 6)]
    pause = parsed.one("p.pause")
    assert pause.startswith("paused: ") and "refused" in pause and ", until " in pause
    assert pause.endswith(")") and "UTC (in " in pause
    failed = parsed.one("table.failed")
    assert failed.startswith("name CID attempts next try why")
    assert f"{HOSTILE} {hostile_cid} 1 " in failed and failed.endswith(" ".join(REASON.split()))
    assert f"{ordinary[4]} queued" in parsed.one("table.stuck")
    assert parsed.one("table.replication").endswith("recursive 6 0 6 2")
    assert parsed.one("ul.drill").startswith("alpha: 2 of 3 fetched without this node")

    for path, size in ((wide, (1200, 900)), (narrow, (390, 844))):
        assert path.stat().st_size > 10_000, path
        assert png_size(path) == size
