"""One sync cycle: list the local pinset, then bring every service up to date, each on its own
so that one service failing never stops the others."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import structlog

from pinsyncd.backoff import RetryPolicy
from pinsyncd.config import Config
from pinsyncd.delegates import DelegateDialer
from pinsyncd.executor import NodeView, ServiceExecutor, ServiceReport
from pinsyncd.kubo import LocalNode, NodeError
from pinsyncd.origins import select_origins
from pinsyncd.psa import PinningServiceClient
from pinsyncd.state import StateStore
from pinsyncd.throttle import Throttle

log = structlog.get_logger("pinsyncd.engine")


@dataclass
class CycleReport:
    started: float
    duration: float = 0.0
    node_online: bool = False
    node_error: str | None = None
    local_pins: int = 0
    local_added: int = 0
    local_removed: int = 0
    node_came_back: bool = False
    services: dict[str, ServiceReport] = field(default_factory=dict)


class SyncEngine:
    """Owns the clients for one config. The constructor does no I/O; `close()` is idempotent."""

    def __init__(
        self,
        config: Config,
        store: StateStore,
        *,
        retry: RetryPolicy | None = None,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.config = config
        self.store = store
        self.node = LocalNode(config.node.api, timeout=config.node.timeout)
        self.dialer = DelegateDialer(self.node)
        retry = retry or RetryPolicy.from_config(config.retry)
        self.clients = {
            s.name: PinningServiceClient(
                s.name,
                s.endpoint,
                s.token,
                timeout=s.timeout,
                connections=s.concurrency + 2,
                throttle=Throttle(s.rate_limit),
            )
            for s in config.services
        }
        self.executors = {
            s.name: ServiceExecutor(
                s,
                self.clients[s.name],
                store,
                self.dialer,
                retry=retry,
                verify_interval=config.sync.verify_interval,
                stopping=stopping,
            )
            for s in config.services
        }
        self._node_was_online: bool | None = None
        self.local: Mapping[str, str] = {}
        self.node_view = NodeView(online=False)

    def interrupt(self) -> None:
        """Stop waiting for turns: requests not yet sent are abandoned (the daemon stops)."""
        for client in self.clients.values():
            client.throttle.interrupt()

    async def close(self) -> None:
        await self.dialer.close()
        for client in self.clients.values():
            await client.close()
        await self.node.close()

    async def cycle(self, *, send: bool = True, list_node: bool = True) -> CycleReport:
        """List the node's pins (or fall back to the last complete listing when the node is
        unreachable), then sync every service concurrently. `send=False, list_node=False` is
        a status round: it resolves and tracks what is pending, and sends nothing."""
        if list_node:
            report = await self.refresh_node()
        else:
            report = CycleReport(started=time.time())
            self.local, self.node_view = await self.store.local_pins(), NodeView(online=False)
            report.local_pins = len(self.local)
        results = await asyncio.gather(
            *(self.sync_service(name, send=send) for name in self.executors)
        )
        report.services = dict(zip(self.executors, results, strict=True))
        report.duration = time.time() - report.started
        return report

    async def refresh_node(self) -> CycleReport:
        """List the node's pins into the state (or fall back to the last complete listing
        when the node is unreachable); services then work from this snapshot."""
        report = CycleReport(started=time.time())
        self.local, self.node_view = await self._read_node(report)
        await self.store.set_meta("last_cycle", str(report.started))
        report.duration = time.time() - report.started
        return report

    async def sync_service(self, name: str, *, send: bool = True) -> ServiceReport:
        """One service's cycle on the current snapshot; an internal error is reported, not
        raised, so one service can never stop the others."""
        try:
            return await self.executors[name].sync(self.local, self.node_view, send=send)
        except Exception as exc:
            log.exception("service cycle crashed", service=name)
            return ServiceReport(name, error=f"internal error: {exc!r}")

    async def _read_node(self, report: CycleReport) -> tuple[Mapping[str, str], NodeView]:
        try:
            identity = await self.node.identity()
            listed = {pin.cid: pin.name async for pin in self.node.iter_pins()}
        except NodeError as exc:
            report.node_error = str(exc)
            if self._node_was_online is not False:
                log.warning("local node unreachable; working from the last listing", error=str(exc))
            self._node_was_online = False
            local = await self.store.local_pins()
            report.local_pins = len(local)
            return local, NodeView(online=False)
        if self._node_was_online is False:
            log.info("local node is back", node=self.config.node.api)
            report.node_came_back = True
        self._node_was_online = True
        added, removed, _renamed = await self.store.replace_local_pins(listed)
        await self.store.set_meta("node_peer_id", identity.peer_id)
        report.node_online = True
        report.local_pins = len(listed)
        report.local_added, report.local_removed = added, removed
        origins = select_origins(
            identity.addresses,
            identity.peer_id,
            include_private=self.config.sync.origins == "all",
        )
        return listed, NodeView(online=True, peer_id=identity.peer_id, origins=tuple(origins))
