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

from pinsyncd.config import Config
from pinsyncd.model import ServiceState

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


@dataclass(frozen=True)
class Questions:
    """What the policy must know from the state to decide for one service (`Policy.ask`)."""

    ahead: tuple[str, ...] = ()  # services ranked ahead of it that are up
    lost: bool = False  # which CIDs those services lost (K of N applies)
    surplus: bool = False  # which CIDs K of those have pinned (`sync.trim_extra`)
    gone_before: float | None = None  # which CIDs left the node before then (`unpin: mirror`)


@dataclass(frozen=True)
class Answers:
    """The state's answers to `Questions`."""

    lost: Mapping[str, int] | None = None  # CID -> services in `ahead` that lost it
    surplus: frozenset[str] = frozenset()
    gone: frozenset[str] = frozenset()


class Policy:
    """The policy for one configuration. It never reads the state itself: `ask` says what it
    needs, from the services' states; `decide` turns the answers into `Directives`."""

    def __init__(self, config: Config) -> None:
        self.order = config.service_order
        self.replicas = config.replicas
        self.sync = config.sync
        self.max_attempts = config.retry.max_attempts

    @property
    def replicated_everywhere(self) -> bool:
        return self.replicas >= len(self.order)

    def ask(self, service: str, states: Mapping[str, ServiceState], now: float) -> Questions:
        """What to look up for `service`, given every service's state (`states`)."""
        ahead: tuple[str, ...] = ()
        k_of_n = False
        if not self.replicated_everywhere:
            ahead = self._up_ahead_of(service, states, now)
            k_of_n = len(ahead) >= self.replicas
        mirror = self.sync.unpin == "mirror"
        return Questions(
            ahead=ahead,
            lost=k_of_n,
            surplus=k_of_n and self.sync.trim_extra,
            gone_before=now - self.sync.unpin_grace if mirror else None,
        )

    def decide(
        self,
        questions: Questions,
        answers: Answers,
        *,
        peer_id: str | None,
        mfs_root: str | None = None,
    ) -> Directives:
        mfs = self.sync.mfs and peer_id is not None
        return Directives(
            lost=answers.lost if questions.lost else None,
            spare=len(questions.ahead) - self.replicas if questions.lost else 0,
            gone=answers.gone,
            surplus=answers.surplus,
            mfs_root=mfs_root if mfs else None,
            mfs_name=mfs_name(peer_id) if mfs and peer_id else None,
            rename=self.sync.propagate_names,
        )

    def _up_ahead_of(
        self, service: str, states: Mapping[str, ServiceState], now: float
    ) -> tuple[str, ...]:
        """The services ranked ahead of `service` that are not down."""
        ahead = self.order[: self.order.index(service)] if service in self.order else ()
        failover = self.sync.failover_after
        return tuple(
            name
            for name in ahead
            if not is_down(states.get(name) or ServiceState(name), failover, now)
        )
