"""Best-effort dials from the local node to the `delegates` a service returns after an add.

Every add returns the same few delegates, so each address is dialled once and then not again
for `ttl` seconds; dials run beside the adds and cycles (never in their way) and a failed dial
never fails a pin. While a pin is still pending, `keep_connected()` dials its delegates again
(at most every `refresh` seconds): after an offline window, even one too short for anyone to
notice, the node's connections are gone, and the service will not dial back (ipfs-cluster dials
the origins once, when it starts fetching). A dial to a peer already connected opens nothing
new. The dialer owns its tasks: `drain()` waits for them (a one-shot run does before it exits)
and `close()` cancels what is left on shutdown.

A failed dial is why a pin can stay `queued` or `pinning` for ever (a service with no timeout
waits for data it cannot get). Failures are kept per service (`trouble()`, for `status`) and
said at info level once per service and cause, with whether origins went with its pins.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass

import structlog

from pinsyncd.kubo import LocalNode

MAX_DELEGATES = 20
NO_ORIGINS = (
    "no origins were sent (sync.origins: public keeps only public addresses), so the service "
    "cannot dial your node either"
)
log = structlog.get_logger("pinsyncd.delegates")


@dataclass(frozen=True)
class DialTrouble:
    """A service's delegates that the node failed to dial at their latest try."""

    addresses: tuple[str, ...]
    error: str  # the node's words for the first of them
    origins: int  # how many of the node's addresses went with the service's pins


def cause_of(error: str) -> str:
    """The gist of a dial error (Kubo's last line names each address it tried, then why):
    `connection refused`, `i/o timeout`, `no route to host`..."""
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else error
    return last.rsplit(": ", 1)[-1].strip() or last


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
        self._owners: dict[str, set[str]] = {}  # address -> the services that gave it
        self._origins: dict[str, int] = {}  # service -> origins sent with its pins
        self._failed: dict[str, dict[str, str]] = {}  # service -> address -> error
        self._told: set[tuple[str, str]] = set()  # (service, cause) said at info level

    def submit(
        self,
        addresses: Iterable[str],
        *,
        service: str = "",
        origins: int = 0,
        within: float | None = None,
    ) -> None:
        """Dial each address unless it was dialled in the last `within` seconds (`ttl`).
        `service` gave them, and `origins` addresses of the node went with its pins."""
        now = time.monotonic()
        window = self._ttl if within is None else within
        self._origins[service] = origins
        current = list(dict.fromkeys(addresses))[:MAX_DELEGATES]
        failed = self._failed.get(service)
        if failed:  # delegates the service no longer gives are no longer its trouble
            for gone in failed.keys() - set(current):
                del failed[gone]
        for address in current:
            self._owners.setdefault(address, set()).add(service)
            last = self._recent.get(address)
            if last is not None and now - last <= window:
                continue
            self._recent[address] = now
            task = asyncio.create_task(self._dial(address))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def keep_connected(
        self, addresses: Iterable[str], *, service: str = "", origins: int = 0
    ) -> None:
        """For a pin that is still pending: dial its delegates again, unless dialled in the
        last `refresh` seconds (many pending pins share the same few delegates)."""
        self.submit(addresses, service=service, origins=origins, within=self._refresh)

    def trouble(self, service: str) -> DialTrouble | None:
        """The service's delegates whose latest dial failed; None when there are none."""
        failed = self._failed.get(service)
        if not failed:
            return None
        first = min(failed)
        return DialTrouble(tuple(sorted(failed)), failed[first], self._origins.get(service, 0))

    async def _dial(self, address: str) -> None:
        async with self._limit:
            (result,) = await self._node.swarm_connect([address])
        self.dialled += 1
        if result.ok:
            self.connected += 1
            log.debug("delegate connected", address=address)
        else:
            log.debug("delegate dial failed", address=address, error=result.error)
        for service in sorted(self._owners.get(address, ())):
            self._note(service, address, None if result.ok else result.error or "failed")

    def _note(self, service: str, address: str, error: str | None) -> None:
        failed = self._failed.setdefault(service, {})
        if error is None:
            failed.pop(address, None)
            if not failed:  # all reachable again: a new failure is worth saying again
                self._told = {told for told in self._told if told[0] != service}
            return
        failed[address] = error
        cause = cause_of(error)
        if (service, cause) in self._told:
            return
        self._told.add((service, cause))
        origins = self._origins.get(service, 0)
        log.info(
            "your node cannot dial a service's delegates: unless the service can reach your "
            "node by its origins, pins there wait for data they cannot get",
            service=service or None,
            delegate=address,
            error=cause,
            origins_sent=origins,
            **({"hint": NO_ORIGINS} if not origins else {}),
        )

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
