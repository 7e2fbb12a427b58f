"""The replication and lifecycle policy: which of the selected local pins each service should
hold (`sync.replicas`, service priority, failover), and which of its requests pinsyncd deletes
(`sync.unpin: mirror`, `sync.trim_extra`).

K of N: services take CIDs in priority order. A service is *down* once its failed or paused
cycles have lasted `sync.failover_after`; a CID is *lost* on a service where it failed
`retry.max_attempts` times. A CID is meant for service S when fewer than K services ahead of S
are up and have not lost it, so the next service in line takes over exactly the CIDs (or the
whole share) that a service ahead of it cannot hold. A copy that falls outside the first K is
kept (`trim_extra: false`), or deleted once K services ahead of it have the CID `pinned`.

Deleting is limited to requests recorded in the state: pins that pinsyncd created or adopted.
A pin made by another tool is never in the state, so it is never deleted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pinsyncd import clock
from pinsyncd.config import Config
from pinsyncd.state import ServiceState, StateStore

MFS_NAME = "policy/{peer_id}/mfs"
"""The remote name of the MFS root pin, as Kubo's own MFS pinning policy names it."""


@dataclass(frozen=True)
class Directives:
    """What the policy asks of one service in this cycle. The selected local pins themselves
    stay in the state; the executor asks it for those that need something done."""

    lost: Mapping[str, int] | None = None  # K of N: CID -> services ahead that lost it
    spare: int = 0  # a CID is meant for this service when lost on more than `spare` ahead
    gone: frozenset[str] = frozenset()  # absent locally past the grace period: delete
    surplus: frozenset[str] = frozenset()  # K copies pinned ahead of this service: delete
    mfs_root: str | None = None  # the node's MFS root CID, when `sync.mfs` is on
    mfs_name: str | None = None  # its remote name
    rename: bool = False  # replace requests whose name no longer matches the local name

    def meant_for(self, candidates: Mapping[str, str]) -> Mapping[str, str]:
        """Those of `candidates` (CID -> name) that this service should hold."""
        lost = self.lost
        if lost is None:
            return candidates
        return {cid: name for cid, name in candidates.items() if lost.get(cid, 0) > self.spare}


def mfs_name(peer_id: str) -> str:
    return MFS_NAME.format(peer_id=peer_id)


def is_down(state: ServiceState, failover_after: float, now: float) -> bool:
    """Failed or paused for `failover_after` and still not answering."""
    return state.down_since > 0 and now - state.down_since >= failover_after


class Policy:
    def __init__(self, config: Config) -> None:
        self.order = config.service_order
        self.replicas = config.replicas
        self.sync = config.sync
        self.max_attempts = config.retry.max_attempts

    @property
    def replicated_everywhere(self) -> bool:
        return self.replicas >= len(self.order)

    async def directives(
        self,
        store: StateStore,
        service: str,
        *,
        peer_id: str | None,
        mfs_root: str | None = None,
        now: float | None = None,
    ) -> Directives:
        now = clock.now() if now is None else now
        lost: Mapping[str, int] | None = None
        spare = 0
        surplus: frozenset[str] = frozenset()
        if not self.replicated_everywhere:
            ahead = await self._up_ahead_of(store, service, now)
            if len(ahead) >= self.replicas:
                lost = await store.failed_for_good(ahead, self.max_attempts)
                spare = len(ahead) - self.replicas
                if self.sync.trim_extra:
                    surplus = frozenset(await store.surplus(service, ahead, self.replicas))
        gone: frozenset[str] = frozenset()
        if self.sync.unpin == "mirror":
            gone = frozenset(await store.gone_since(service, now - self.sync.unpin_grace))
        mfs = self.sync.mfs and peer_id is not None
        return Directives(
            lost=lost,
            spare=spare,
            gone=gone,
            surplus=surplus,
            mfs_root=mfs_root if mfs else None,
            mfs_name=mfs_name(peer_id) if mfs and peer_id else None,
            rename=self.sync.propagate_names,
        )

    async def _up_ahead_of(self, store: StateStore, service: str, now: float) -> list[str]:
        """The services ranked ahead of `service` that are not down."""
        ahead = self.order[: self.order.index(service)] if service in self.order else ()
        up = []
        for name in ahead:
            if not is_down(await store.service_state(name), self.sync.failover_after, now):
                up.append(name)
        return up
