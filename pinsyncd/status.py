"""How `pinsyncd status` shows what the state says (`store.readonly` reads it): a table, one
line per service, with notes on what needs the user; and the failed pins, one a line. The
notes are sentences the status page (`status_page`) shows too."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pinsyncd.durations import format_duration
from pinsyncd.logs import one_line


def render_failed(failed: Sequence[dict[str, Any]]) -> str:
    if not failed:
        return "no failed pins"
    lines = []
    for row in failed:
        lines.append(
            f"{row['service']}  {row['cid']}  attempts {row['attempts']}, next try "
            f"{row['next_try'] or 'at the next cycle'}: {row['reason'] or '(no reason given)'}"
        )
    return "\n".join(lines)


def render_table(status: dict[str, Any]) -> str:
    """A readable table, one line per service."""
    columns = ("pinned", "pinning", "queued", "failed", "unsent")
    names = list(status["services"])
    stuck_after = format_duration(status.get("stuck_after", 3600.0))
    width = max([len("service"), *(len(n) for n in names)])
    lines = [f"{'service':<{width}}  " + "  ".join(f"{c:>7}" for c in columns) + "  last cycle"]
    for name in names:
        s = status["services"][name]
        counts = "  ".join(f"{s[c]:>7}" for c in columns)
        lines.append(f"{name:<{width}}  {counts}  {s['last_cycle'] or 'never'}")
        lines.extend(f"{'':<{width}}  {line}" for line in _service_notes(s, stuck_after))
    lines.extend(_node_lines(status))
    lines.extend(_drill_lines(status.get("drill")))
    lines.extend(f"WARNING: {warning}" for warning in status.get("warnings", []))
    return "\n".join(lines)


def _service_notes(s: dict[str, Any], stuck_after: str) -> list[str]:
    """The lines under one service's row: what needs the reader's attention."""
    notes = pin_notes(s, stuck_after)
    if s["paused"]:
        notes.append(f"{s['paused']} (next try {s['paused_until']})")
    elif s["last_error"]:
        notes.append(f"last error: {s['last_error']}")
    return notes


def pin_notes(s: dict[str, Any], stuck_after: str) -> list[str]:
    """What one service's pins need: failed for good, sending, skipped records, a replace
    that does nothing, delegates the node cannot dial, stuck pins."""
    notes = []
    if s["failed_for_good"]:
        notes.append(f"{s['failed_for_good']} failed for good (pinsyncd status --failed shows why)")
    if s["sending"]:
        notes.append(f"{s['sending']} being sent (outcome not yet known)")
    if s.get("skipped_records"):
        notes.append(
            f"{s['skipped_records']} records in its last full listing do not "
            f"match the spec and were skipped ({s['skipped_reason']})"
        )
    if s.get("replace_noop"):
        notes.append(
            "its replace does nothing: a failed pin is deleted, then added "
            "again, and names are not carried to it"
        )
    dials = s.get("delegates_unreachable")
    if dials and (s["stuck"] or s["queued"] or s["pinning"]):
        sent = dials["origins_sent"]
        notes.append(
            f"your node cannot dial its delegates "
            f"({', '.join(dials['delegates'][:3])}): {dials['cause']}; "
            + (
                f"{sent} origins were sent, so it must dial your node"
                if sent
                else "no origins were sent, so it cannot reach your node either"
            )
        )
    if s["stuck"]:
        notes.append(
            f"{s['stuck']} queued or pinning for over {stuck_after}: the "
            "service fetches the data from your node, which must be online and reachable "
            "(see sync.origins)"
        )
    return notes


def _node_lines(status: dict[str, Any]) -> list[str]:
    """The lines for the local node, the daemon and replication, under the services."""
    lines = []
    local = status["local"]
    selected = local.get("selected", local["pins"])
    chosen = f" ({selected} selected)" if selected != local["pins"] else ""
    lines.append(
        f"local node: {local['pins']} pins{chosen}, last cycle {local['last_cycle'] or 'never'}"
    )
    lines.extend(f"  {note}" for note in listing_notes(local))
    if (said := daemon_note(status.get("daemon"))) is not None:
        lines.append(said)
    replication = status.get("replication")
    if replication and replication["kinds"]:
        k, n = replication["replicas"], replication["services"]
        parts = []
        for kind, c in replication["kinds"].items():
            text = f"{kind} {c['cids']}: {c['cids'] - c['below']} on >= {k}, {c['below']} below"
            if c["none"]:
                text += f" ({c['none']} on none)"
            parts.append(text)
        lines.append(f"replication (each CID on {k} of {n} services): " + "; ".join(parts))
    return lines


def _drill_lines(drill: dict[str, Any] | None) -> list[str]:
    """The last restore drill (`pinsyncd check --retrieval`): per service, how many of the
    CIDs drawn were fetched without this node, and a warning for each service that could not
    serve a CID it says is pinned."""
    if not drill:
        return []
    lines = [f"restore drill {drill['time']}:"]
    warnings = []
    for name, entry in drill["services"].items():
        text = f"  {name}: {drill_result(entry)}"
        if entry["time"] != drill["time"]:
            text += f", at {entry['time']}"
        lines.append(text)
        if (warning := drill_warning(name, entry)) is not None:
            warnings.append(f"  WARNING: {warning}")
    return lines + warnings


def drill_result(entry: dict[str, Any]) -> str:
    """One service's last drill: how many of the CIDs drawn were fetched without this node,
    and what became of the others."""
    checked = sum(entry.get(k, 0) for k in ("fetched", "not_fetched", "error", "inconclusive"))
    text = f"{entry.get('fetched', 0)} of {checked} fetched without this node"
    others = [
        f"{entry[k]} {k.replace('_', ' ')}"
        for k in ("not_fetched", "error", "inconclusive", "not_pinned")
        if entry.get(k)
    ]
    return text + (" (" + ", ".join(others) + ")" if others else "")


def drill_warning(name: str, entry: dict[str, Any]) -> str | None:
    """What a drill found worst: the service could not serve CIDs it says it has pinned."""
    if not entry.get("not_fetched"):
        return None
    failing = not_served(entry)
    return (
        f"{name} says it has pinned {entry['not_fetched']} CIDs it could not "
        f"serve: {', '.join(failing[:3])}{' ...' if len(failing) > 3 else ''}"
    )


def not_served(entry: dict[str, Any]) -> list[str]:
    """The CIDs kept from a service's drill that it says are pinned and could not serve."""
    return [f["cid"] for f in entry.get("failing", []) if f["result"] == "not_fetched"]


def listing_notes(local: dict[str, Any]) -> list[str]:
    """What the node's last listing left out, or counted once for two spellings."""
    notes = []
    skipped = local.get("skipped") or {}
    if skipped.get("lines") or skipped.get("unparsable"):
        notes.append(
            f"its last listing left out {skipped.get('lines', 0)} lines that are not a pin "
            f"and {skipped.get('unparsable', 0)} CIDs that do not parse; nothing is unpinned "
            "from the services while they last"
        )
    if skipped.get("spellings"):
        notes.append(
            f"{skipped['spellings']} pins are a second spelling (CIDv0/CIDv1) of another: "
            "one pin each on the services"
        )
    return notes


def daemon_note(daemon: dict[str, Any] | None) -> str | None:
    """What the daemon running on the state says of its health, when it is not well."""
    if daemon and daemon.get("healthy") is False:
        return f"daemon: NOT HEALTHY: {daemon.get('reason')}"
    if daemon and daemon.get("healthy") is None:
        return f"daemon: runs, but {daemon.get('reason')}"
    return None


def request_line(row: dict[str, Any], width: int) -> str:
    """`pinsyncd ls`: one request a line, as `ipfs pin remote ls` shows a pin (CID, status,
    name), with its service first; every field from a server or a node escaped."""
    name = one_line(row["name"] or "")
    status = row["status"]
    if status in ("failed", "error") and row["reason"]:
        status += f" ({one_line(row['reason'])})"
    return f"{row['service']:<{width}}  {row['cid']}  {status}  {name}".rstrip()


def render_pin(doc: dict[str, Any]) -> str:
    """`pinsyncd show CID`: the local pin, then each service's request for it."""
    local = doc["local"]
    if local is None:
        lines = [f"{doc['cid']}: not pinned on the node (as last listed)"]
    else:
        backed = "backed up" if local["selected"] else "not backed up (include/exclude)"
        name = f' as "{one_line(local["name"])}"' if local["name"] else ""
        lines = [f"{local['cid']}: pinned on the node ({local['kind']}){name}, {backed}"]
    width = max([len(s) for s in doc["services"]] or [0])
    for service, rows in doc["services"].items():
        if not rows:
            lines.append(f"  {service:<{width}}  no request")
        for row in rows:
            lines.append(f"  {service:<{width}}  " + _request_detail(row))
    replicas = doc["replicas"]
    lines.append(
        f"pinned on {doc['pinned_on']} of {len(doc['services'])} services "
        f"(sync.replicas: {replicas}" + ("; below it)" if doc["pinned_on"] < replicas else ")")
    )
    return "\n".join(lines)


def _request_detail(row: dict[str, Any]) -> str:
    parts = [row["status"]]
    if row["requestid"]:
        parts.append(f"requestid {one_line(row['requestid'])}")
    if row["created"]:
        parts.append(f"created {row['created']}")
    if row["attempts"]:
        parts.append(f"attempts {row['attempts']}")
    if row["next_try"]:
        parts.append(f"next try {row['next_try']}")
    if not row["owned"]:
        parts.append("not this device's (never deleted or replaced by it)")
    if row["reason"]:
        parts.append(f"why: {one_line(row['reason'])}")
    return ", ".join(parts)
