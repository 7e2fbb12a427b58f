"""Kubo's own MFS policy and `sync.mfs` on the same service would pin the MFS root twice:
Kubo keeps its own remote request for the root (named `policy/<peer id>/mfs`, like ours, but
not one pinsyncd knows as its own), and pinsyncd keeps another. Said by `check-config`, at
the start of a cycle (the log) and by `status`."""

from __future__ import annotations

from collections.abc import Sequence

from pinsyncd.config import Config
from pinsyncd.kubo import LocalNode
from pinsyncd.kubo_setup.render import same_endpoint


async def mfs_warnings(config: Config, node: LocalNode) -> list[str]:
    """What `check-config` and each start say: a warning for each service that both Kubo's
    MFS policy and `sync.mfs` pin to. The node is asked only when `sync.mfs` is on; its
    `NodeError`s are the caller's."""
    return double_mfs(config, await kubo_policies(node)) if config.sync.mfs else []


async def kubo_policies(node: LocalNode) -> list[tuple[str, str, bool]]:
    """(nickname, endpoint, MFS policy on) for each pinning service Kubo knows."""
    return [(name, url, await node.mfs_policy(name)) for name, url in await node.remote_services()]


def double_mfs(config: Config, policies: Sequence[tuple[str, str, bool]]) -> list[str]:
    """A warning for each service that both Kubo's MFS policy and `sync.mfs` pin to."""
    if not config.sync.mfs:
        return []
    warnings = []
    for kubo_name, endpoint, mfs in policies:
        for service in config.services:
            if mfs and same_endpoint(service.endpoint, endpoint):
                warnings.append(
                    f"Kubo's own MFS policy pins the MFS root to its service {kubo_name!r}, "
                    f"which is {service.name} here, and sync.mfs is on: the root is pinned "
                    "twice on that service. Turn one off: sync.mfs: false, or `ipfs config "
                    f"--json Pinning.RemoteServices.{kubo_name}.Policies.MFS.Enable false`"
                )
    return warnings
