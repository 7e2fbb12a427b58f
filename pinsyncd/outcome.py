"""What a command's outcome says, the same whether it ran alone or the daemon ran it for it:
the problems that set `sync --once`'s exit code (`pinsyncd.exits`: 69 for a node or service
that could not be used, 3 for pins failed or still pending), the pins not yet finished, its
`--json` summary, and what `adopt` and `retry` print."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from pinsyncd.durations import format_duration
from pinsyncd.exits import EX_FAILED, EX_INCOMPLETE, EX_UNAVAILABLE, Problem
from pinsyncd.logs import redact_text
from pinsyncd.model import UNFINISHED_STATUSES
from pinsyncd.store import StateStore
from pinsyncd.sync.context import ServiceReport


def problems(node_error: str | None, services: Mapping[str, ServiceReport]) -> list[Problem]:
    """One reason per thing that could not be used: the node, and each service's pause,
    error or backoff (rate limited, retrying after errors)."""
    found = [Problem(node_error, EX_UNAVAILABLE)] if node_error else []
    for name, report in services.items():
        if report.paused:
            found.append(Problem(f"{name}: {report.paused}", EX_UNAVAILABLE))
        elif report.error:
            code = EX_FAILED if report.error.startswith("internal error") else EX_UNAVAILABLE
            found.append(Problem(report.error, code))
        elif report.backoff:
            found.append(Problem(f"{name}: {report.backoff}", EX_UNAVAILABLE))
    return found


async def failed_pins(
    store: StateStore, services: Sequence[str], max_attempts: int
) -> list[Problem]:
    """Per service, the pins it did not get pinned: marked `failed` by the service, or adds
    that failed `max_attempts` times without reaching it (`pinsyncd status --failed`)."""
    found = []
    for name in services:
        count = await store.not_pinned(name, max_attempts)
        if count:
            found.append(
                Problem(
                    f"{name}: {count} pin{'s' * (count != 1)} failed (`pinsyncd status "
                    "--failed` says why; `pinsyncd sync --once --now` tries them now)",
                    EX_INCOMPLETE,
                )
            )
    return found


async def unfinished(
    store: StateStore, services: Mapping[str, ServiceReport], max_attempts: int
) -> dict[str, int]:
    """Per service that is not paused: pins that are neither pinned nor failed yet. An add
    that failed `max_attempts` times counts as failed (it is tried again only rarely); one
    that failed fewer times is still on its way, after its backoff."""
    left: dict[str, int] = {}
    for name, report in services.items():
        if report.paused:
            continue
        counts = await store.counts(name, unsent=False)
        lost = await store.not_pinned(name, max_attempts) - counts.get("failed", 0)
        count = sum(counts.get(s, 0) for s in UNFINISHED_STATUSES) + report.unsent - lost
        if count > 0:
            left[name] = count
    return left


def gave_up(remaining: Mapping[str, int], after: float | None) -> Problem:
    waited = f" after {format_duration(after)}" if after else ""
    detail = ", ".join(f"{name}: {n}" for name, n in remaining.items())
    return Problem(f"gave up waiting{waited}; not yet pinned or failed: {detail}", EX_INCOMPLETE)


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


def service_fields(r: ServiceReport) -> dict[str, object]:
    """What a service's cycle did, for its log line and `sync --once --json` (zeros left out)."""
    return {
        key: value
        for key, value in {
            "added": r.added,
            "adopted": r.adopted,
            "resolved": r.resolved,
            "replaced": r.replaced,
            "pinned": r.became_pinned,
            "failed": r.became_failed,
            "vanished": r.vanished,
            "deleted": dict(r.removed),
            "errors": r.errors,
            "pending": r.pending,
            "requests": sum(r.requests.values()),
            "paused": r.paused,
            "backoff": r.backoff,
            "error": r.error,
        }.items()
        if value
    }


def summary(
    code: int,
    found: Sequence[Problem],
    node_error: str | None,
    services: Mapping[str, ServiceReport],
) -> str:
    """`sync --once --json`: how the run ended, as one JSON document."""
    doc = {
        "exit_code": code,
        "problems": [p.text for p in found],
        "node_error": node_error,
        "services": {name: service_fields(r) for name, r in services.items()},
    }
    return redact_text(json.dumps(doc, indent=2))
