"""Sending an alert to one URL, and a heartbeat ping.

An `http://` or `https://` URL gets a plain POST: the text as the body, the title in a
`Title` header (ntfy reads it; any webhook receiver gets readable text). Any other scheme
goes through Apprise when it is installed (`pip install 'pinsyncd[alerts]'`): `ntfys://`,
`mailto://`, `tgram://`, `matrix://`, `discord://`, ... A heartbeat is a ping to a
Healthchecks-style URL: the URL itself after a good look, the URL with `/fail` after a bad
one. URLs are secrets (a topic, a bot token, a ping id): no message here names one."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from pinsyncd import __version__
from pinsyncd.alerts.ledger import Alert

TIMEOUT = aiohttp.ClientTimeout(total=20.0)
PRIORITIES = {"problem": "high", "reminder": "default", "resolved": "default"}


class DeliveryError(Exception):
    """The alert did not reach its target; the message never holds the URL."""


def is_plain(url: str) -> bool:
    return url.lower().startswith(("http://", "https://"))


async def send(session: aiohttp.ClientSession, url: str, alert: Alert) -> None:
    if not is_plain(url):
        await asyncio.to_thread(_send_with_apprise, url, alert)
        return
    headers = {
        "Title": _header(alert.title),
        "Priority": PRIORITIES[alert.kind],
        "Tags": alert.kind,
        "Content-Type": "text/plain; charset=utf-8",
        "User-Agent": f"pinsyncd/{__version__}",
    }
    await _post(session, url, alert.text.encode("utf-8"), headers)


async def ping(session: aiohttp.ClientSession, url: str, *, ok: bool, summary: str) -> None:
    target = url if ok else url.rstrip("/") + "/fail"
    headers = {"User-Agent": f"pinsyncd/{__version__}", "Content-Type": "text/plain"}
    await _post(session, target, summary.encode("utf-8")[:10_000], headers)


async def _post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> None:
    try:
        async with session.post(
            url, data=body, headers=headers, timeout=TIMEOUT, allow_redirects=False
        ) as response:
            await response.read()
            if not 200 <= response.status < 300:
                raise DeliveryError(f"HTTP {response.status}")
    except TimeoutError:
        raise DeliveryError(f"no answer within {TIMEOUT.total:g}s") from None
    except aiohttp.ClientError as exc:
        raise DeliveryError(type(exc).__name__) from None


def _send_with_apprise(url: str, alert: Alert) -> None:
    # Optional: check-config refuses such a URL when it is missing.
    import apprise  # type: ignore[import-not-found,import-untyped,unused-ignore]

    notifier: Any = apprise.Apprise()
    if not notifier.add(url):
        raise DeliveryError("Apprise does not accept this URL")
    kind = apprise.NotifyType.SUCCESS if alert.kind == "resolved" else apprise.NotifyType.WARNING
    if not notifier.notify(title=alert.title, body=alert.text, notify_type=kind):
        raise DeliveryError("Apprise could not deliver it")


def _header(text: str) -> str:
    """A header value: one line, Latin-1 (what HTTP headers carry)."""
    return " ".join(text.split()).encode("latin-1", "replace").decode("latin-1")[:200]
