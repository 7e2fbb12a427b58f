"""After each look (a daemon round, a `sync --once`): what needs attention is read from the
state, compared with what was told last, and told; then the heartbeat."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import aiohttp
import structlog

from pinsyncd.alerts.conditions import conditions
from pinsyncd.alerts.deliver import DeliveryError, ping, send
from pinsyncd.alerts.ledger import Alert, decide, keep_undelivered
from pinsyncd.config import Config
from pinsyncd.logs import register_secrets
from pinsyncd.store import StateStore
from pinsyncd.store.readonly import read_status

log = structlog.get_logger("pinsyncd.alerts")
LEDGER_KEY = "alerts"


class AlertRunner:
    """Does nothing when the config has no `alerts:` targets and no heartbeat."""

    def __init__(
        self, config: Config, store: StateStore, *, now: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self.store = store
        self._now = now
        self.enabled = bool(config.alert_urls or config.heartbeat_url)
        urls = list(config.alert_urls)
        if config.heartbeat_url is not None:
            urls.append(config.heartbeat_url)
        register_secrets(urls)  # redacted wherever they would appear in a log

    async def after_look(self, *, healthy: bool, summary: str) -> list[Alert]:
        """Tell what changed, then ping the heartbeat (`healthy`: the look went well).
        Returns the alerts that were delivered. Never raises: alerts are no reason for a
        sync to fail or the daemon to stop (what went wrong is logged)."""
        if not self.enabled:
            return []
        try:
            return await self._after_look(healthy, summary)
        except Exception as exc:
            log.warning("alerts could not be worked out", error=f"{type(exc).__name__}: {exc}")
            return []

    async def _after_look(self, healthy: bool, summary: str) -> list[Alert]:
        delivered: list[Alert] = []
        async with aiohttp.ClientSession() as session:
            if self.config.alert_urls:
                delivered = await self._tell(session)
            if self.config.heartbeat_url is not None:
                try:
                    await ping(
                        session, self.config.heartbeat_url.reveal(), ok=healthy, summary=summary
                    )
                except DeliveryError as exc:
                    log.warning("the heartbeat ping did not get through", error=str(exc))
        return delivered

    async def _tell(self, session: aiohttp.ClientSession) -> list[Alert]:
        config = self.config
        status = await asyncio.to_thread(
            read_status,
            config.state_path,
            [s.name for s in config.services],
            max_attempts=config.retry.max_attempts,
            replicas=config.replicas,
            stuck_after=config.sync.stuck_after,
        )
        before = _ledger(await self.store.get_meta(LEDGER_KEY))
        alerts, after = decide(
            before, conditions(status), now=self._now(), repeat=config.alerts.repeat
        )
        delivered = [alert for alert in alerts if await self._deliver(session, alert)]
        if len(delivered) < len(alerts):
            after = keep_undelivered(alerts, {a.key for a in delivered}, before, after)
        if after != before:
            await self.store.set_meta(LEDGER_KEY, json.dumps(after, sort_keys=True))
        return delivered

    async def _deliver(self, session: aiohttp.ClientSession, alert: Alert) -> bool:
        """To every target; delivered when one of them took it (so a broken target does not
        make the others hear it again at every look)."""
        reached = 0
        for index, url in enumerate(self.config.alert_urls):
            try:
                await send(session, url.reveal(), alert)
                reached += 1
            except DeliveryError as exc:
                log.warning(
                    "an alert did not get through",
                    target=f"alerts.targets[{index}]",
                    alert=alert.title,
                    error=str(exc),
                )
        if reached:
            log.info("alert sent", alert=alert.title, kind=alert.kind)
        return reached > 0


def _ledger(text: str | None) -> dict[str, dict[str, object]]:
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}
