"""The daemon's small HTTP server: `GET /metrics` (Prometheus text format), `GET /healthz`
(200 "ok" or 503 with the reason), `GET /status` (the `status --json` document) and `GET /`
(the status page, `status_page`).

Read-only and unauthenticated, so it belongs on a loopback address; listening anywhere else
is allowed but logged as a warning. `/metrics`, `/status` and `/` read the SQLite state
file, so they run in a worker thread and never stall the event loop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web

from pinsyncd.listen import is_loopback, parse_listen
from pinsyncd.logs import redact_text
from pinsyncd.metrics import Metrics
from pinsyncd.operator_http import health_response
from pinsyncd.status_page import HEADERS as PAGE_HEADERS

log = structlog.get_logger("pinsyncd.http")


class HttpApi:
    """Serves one `Metrics`. The constructor only checks `listen`; `stop()` is idempotent."""

    def __init__(
        self,
        listen: str,
        metrics: Metrics,
        health: Callable[[], tuple[bool, str]],
        status: Callable[[], dict[str, Any]],
        page: Callable[[], str] | None = None,
    ) -> None:
        self.host, self.port = parse_listen(listen)
        self.metrics = metrics
        self._health = health
        self._status = status
        self._page = page
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """The base URL actually listened on (the real port when `listen` asked for 0)."""
        if self._url is None:
            raise RuntimeError("the HTTP API is not started")
        return self._url

    async def start(self) -> None:
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/status", self._status_json)
        if self._page is not None:
            app.router.add_get("/", self._status_page)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self._url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        if is_loopback(self.host):
            log.info("HTTP API listening", url=self._url)
        else:
            log.warning(
                "HTTP API listening on a non-loopback address: anyone who can reach it can "
                "read metrics and status",
                url=self._url,
            )

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _metrics(self, _request: web.Request) -> web.Response:
        body, content_type = await asyncio.to_thread(self.metrics.render)
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _healthz(self, _request: web.Request) -> web.Response:
        return health_response(*self._health())

    async def _status_json(self, _request: web.Request) -> web.Response:
        try:
            document = await asyncio.to_thread(self._status)
        except Exception as exc:
            log.warning("cannot read the status", error=str(exc))
            return web.json_response({"error": redact_text(str(exc))}, status=503)
        return web.json_response(document, dumps=_scrubbed_json)

    async def _status_page(self, _request: web.Request) -> web.Response:
        assert self._page is not None
        try:
            page = await asyncio.to_thread(self._page)
        except Exception as exc:
            log.warning("cannot read the status", error=str(exc))
            return web.Response(status=503, text=f"{redact_text(str(exc))}\n", headers=PAGE_HEADERS)
        return web.Response(
            text=page, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS
        )


def _scrubbed_json(document: object) -> str:
    """JSON without any configured token (stored text is scrubbed already; this is the last
    line of defence for a file written by an older pinsyncd)."""
    return redact_text(json.dumps(document))
