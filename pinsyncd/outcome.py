"""What a command's outcome says, the same whether it ran alone or the daemon ran it for it:
the problems that make `sync --once` exit 1, the pins not yet finished, and what `adopt` and
`retry` print."""

from __future__ import annotations

from collections.abc import Mapping

from pinsyncd.durations import format_duration
from pinsyncd.model import UNFINISHED_STATUSES
from pinsyncd.store import StateStore
from pinsyncd.sync.context import ServiceReport


def problems(node_error: str | None, services: Mapping[str, ServiceReport]) -> list[str]:
    """One reason per thing that went wrong: the node, and each service's pause or error."""
    found = [node_error] if node_error else []
    for name, report in services.items():
        if report.paused:
            found.append(f"{name}: {report.paused}")
        elif report.error:
            found.append(report.error)
        elif report.backoff:
            found.append(f"{name}: {report.backoff}")
    return found


async def unfinished(store: StateStore, services: Mapping[str, ServiceReport]) -> dict[str, int]:
    """Per service that is not paused: pins that are neither pinned nor failed yet."""
    left: dict[str, int] = {}
    for name, report in services.items():
        if report.paused:
            continue
        counts = await store.counts(name, unsent=False)
        count = sum(counts.get(s, 0) for s in UNFINISHED_STATUSES) + report.unsent
        if count:
            left[name] = count
    return left


def gave_up(remaining: Mapping[str, int], after: float | None) -> str:
    waited = f" after {format_duration(after)}" if after else ""
    detail = ", ".join(f"{name}: {n}" for name, n in remaining.items())
    return f"gave up waiting{waited}; not yet pinned or failed: {detail}"


def adopted_lines(service: str, report: ServiceReport, local_pins: int) -> list[str]:
    lines = [
        f"{service}: {report.adopted} existing pin{'s' * (report.adopted != 1)} adopted, "
        f"{report.resolved} of pinsyncd's own settled, for {local_pins} local pins "
        f"({sum(report.requests.values())} requests)"
    ]
    if report.duplicates:
        lines.append(
            f"{service}: {report.duplicates} CIDs have more than one request on the service"
        )
    if report.others:
        lines.append(
            f"{service}: {report.others} requests belong to other devices and were left alone"
        )
    return lines


def retried_line(pins: int, paused: int, *, now: bool = False) -> str:
    when = "now" if now else "at the next cycle"
    return (
        f"{pins} pin{'s' * (pins != 1)} and {paused} paused service{'s' * (paused != 1)} "
        f"will be tried again {when}"
    )
