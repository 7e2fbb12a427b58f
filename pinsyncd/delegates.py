"""Best-effort dials from the local node to the `delegates` a service returns after an add.

Every add returns the same few delegates, so each address is dialled once and then not again
for `ttl` seconds; dials run beside the adds and cycles (never in their way) and a failed dial
never fails a pin. While a pin is still pending, `keep_connected()` dials its delegates again
(at most every `refresh` seconds): after an offline window, even one too short for anyone to
notice, the node's connections are gone, and the service will not dial back (ipfs-cluster dials
the origins once, when it starts fetching). A dial to a peer already connected opens nothing
new. The dialer owns its tasks: `drain()` waits for them (a one-shot run does before it exits)
and `close()` cancels what is left on shutdown.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import structlog

from pinsyncd.kubo import LocalNode

MAX_DELEGATES = 20
log = structlog.get_logger("pinsyncd.delegates")


class DelegateDialer:
    def __init__(
        self, node: LocalNode, *, ttl: float = 300.0, refresh: float = 5.0, parallel: int = 4
    ) -> None:
        self._node = node
        self._ttl = ttl
        self._refresh = refresh
        self._limit = asyncio.Semaphore(parallel)
        self._recent: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.dialled = 0
        self.connected = 0

    def submit(self, addresses: Iterable[str], *, within: float | None = None) -> None:
        """Dial each address unless it was dialled in the last `within` seconds (`ttl`)."""
        now = time.monotonic()
        window = self._ttl if within is None else within
        for address in list(addresses)[:MAX_DELEGATES]:
            last = self._recent.get(address)
            if last is not None and now - last <= window:
                continue
            self._recent[address] = now
            task = asyncio.create_task(self._dial(address))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def keep_connected(self, addresses: Iterable[str]) -> None:
        """For a pin that is still pending: dial its delegates again, unless dialled in the
        last `refresh` seconds (many pending pins share the same few delegates)."""
        self.submit(addresses, within=self._refresh)

    async def _dial(self, address: str) -> None:
        async with self._limit:
            (result,) = await self._node.swarm_connect([address])
        self.dialled += 1
        if result.ok:
            self.connected += 1
            log.debug("delegate connected", address=address)
        else:
            log.debug("delegate dial failed", address=address, error=result.error)

    async def drain(self, within: float) -> None:
        """Wait (up to `within` seconds) for the dials under way; cancel what is left."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=within)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def close(self) -> None:
        await self.drain(0)
