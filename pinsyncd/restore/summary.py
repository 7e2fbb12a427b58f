"""What a restore tells its user: the plan (`--dry-run`), then what came back, what did not
and why, and the exit code that tells "all restored" from "some missing"."""

from __future__ import annotations

from collections import Counter

from pinsyncd.exits import EX_INCOMPLETE, EX_OK
from pinsyncd.restore.choose import Item
from pinsyncd.restore.run import RestoreReport
from pinsyncd.sizes import human_bytes

EX_RESTORED = EX_OK
EX_MISSING = EX_INCOMPLETE
"""Some wanted pins are not on the node (failed, not pinned anywhere, or a service could not
be listed in full)."""

SHOWN = 20
"""The most CIDs listed under each heading of the summary (the state keeps them all)."""


def exit_code(report: RestoreReport) -> int:
    return EX_RESTORED if report.complete else EX_MISSING


def whose(report: RestoreReport) -> str:
    if report.owners is None:
        return "every node's"
    others = sorted(report.owners - {report.peer_id})
    return ", ".join([f"{report.peer_id} (this node)", *others])


def plan_lines(report: RestoreReport) -> list[str]:
    """`restore --dry-run`: what would be fetched, from where (a line per CID), then how
    many, last, where a long list does not scroll it away."""
    sources = Counter(item.service for item in report.todo)
    lines = [
        f"{item.cid}  {item.name or '-'}  <- {item.service}  ({_delegates(item)})"
        for item in report.todo
    ]
    lines.append(f"the pins pinsyncd backed up for {whose(report)}:")
    lines.append(
        f"would restore {len(report.todo)} pins"
        + (": " + ", ".join(f"{n} from {s}" for s, n in sources.items()) if sources else "")
    )
    lines.append(f"already on this node (not fetched again): {len(report.present)}")
    return lines + _trouble(report)


def result_lines(report: RestoreReport) -> list[str]:
    restored = report.restored
    size = sum(r.bytes for r in restored)
    lines = [
        f"restored {len(restored)} of {len(report.todo)} pins ({human_bytes(size)}) in "
        f"{report.seconds:.1f}s; {len(report.present)} were already on this node"
    ]
    if report.stopped:
        left = len(report.todo) - len(report.results)
        lines.append(f"stopped with {left} left: {report.stopped}; run restore again to go on")
    if report.failed:
        lines.append(f"not restored: {len(report.failed)}")
        lines += [f"  {r.cid}  {r.name or '-'}: {r.reason}" for r in report.failed[:SHOWN]] + _more(
            len(report.failed)
        )
    lines += _trouble(report)
    if report.taken_over:
        lines.append(
            "this node owns the requests of "
            + ", ".join(report.taken_over)
            + ": the next sync adopts them, and pins nothing twice"
        )
    return lines


def _trouble(report: RestoreReport) -> list[str]:
    lines: list[str] = []
    unpinned = report.plan.unpinned
    if unpinned:
        lines.append(f"not pinned on any service, so not restorable now: {len(unpinned)}")
        lines += [f"  {i.cid}  {i.name or '-'}: {_statuses(i)}" for i in unpinned[:SHOWN]]
        lines += _more(len(unpinned))
    for service, why in report.listings.failed.items():
        lines.append(f"{service}: could not be listed, its pins are left out: {why}")
    for service, why in report.listings.incomplete.items():
        lines.append(f"{service}: the listing may have missed requests: {why}")
    if report.plan.left_out:
        lines.append(
            f"left out: {report.plan.left_out} requests of other nodes or tools, or filtered "
            "out (--from-peer or --all to take other nodes')"
        )
    return lines


def _statuses(item: Item) -> str:
    return ", ".join(f"{status} on {service}" for service, status in item.elsewhere.items())


def _delegates(item: Item) -> str:
    count = len(item.delegates(item.sources[0]))
    return f"{count} delegate{'s' * (count != 1)}"


def _more(count: int) -> list[str]:
    return [f"  ... and {count - SHOWN} more (all in the state file)"] if count > SHOWN else []
