"""The status page (`GET /` when `http.listen` is set): the `/status` document and the pins
that need the user, as one small HTML page that reloads itself. Pure: the document, the
pins and the time are given. Every string from a server, the node or the state is escaped
(and any configured token masked); the page has no script and loads nothing, and the
headers it goes out with (`HEADERS`) forbid anything but its inline style."""

from __future__ import annotations

import html
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pinsyncd import health_check
from pinsyncd.durations import format_duration
from pinsyncd.exits import EX_UNAVAILABLE
from pinsyncd.logs import printable, redact_text
from pinsyncd.outcomes import Hold, hold_of
from pinsyncd.status import (
    daemon_note,
    drill_result,
    drill_warning,
    listing_notes,
    pin_notes,
)

SHOWN = 50
"""The most failed pins, stuck pins and failing drill CIDs listed per service."""

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}
"""What the page goes out with: nothing but its inline style may load or run, and no copy
is kept."""

COUNTS = ("pinned", "pinning", "queued", "failed", "failed_for_good", "sending", "unsent")


def refresh_seconds(interval: float) -> int:
    """How often the page reloads itself: every `sync.interval`, between 10 s and a minute."""
    return round(min(max(interval, 10.0), 60.0))


@dataclass(frozen=True, slots=True)
class Attention:
    """One thing the reader should look at; `urgent` ones come first, in red."""

    text: str
    urgent: bool


def attention(status: Mapping[str, Any], *, now: float, max_age: float) -> list[Attention]:
    """What needs the reader, the gravest first: what `status --check` finds (a paused or
    failing service, a daemon not well, a service not synced for `max_age`, stuck pins, pins
    failed for good), a service that could not serve CIDs in the last drill, CIDs on fewer
    services than `sync.replicas`, and the warnings."""
    found = health_check.check(dict(status), now=now, max_age=max_age)
    urgent = [Attention(p.text, True) for p in found if p.code == EX_UNAVAILABLE]
    drill = status.get("drill") or {}
    for name, entry in drill.get("services", {}).items():
        if (warning := drill_warning(name, entry)) is not None:
            urgent.append(Attention(f"restore drill: {warning}", True))
    rest = [Attention(p.text, False) for p in found if p.code != EX_UNAVAILABLE]
    if (below := _below(status)) is not None:
        rest.append(Attention(below, False))
    rest += [Attention(f"warning: {w}", False) for w in status.get("warnings", [])]
    return urgent + rest


def _below(status: Mapping[str, Any]) -> str | None:
    replication = status.get("replication") or {}
    kinds = replication.get("kinds") or {}
    below = sum(c["below"] for c in kinds.values())
    if not below:
        return None
    cids = sum(c["cids"] for c in kinds.values())
    none = sum(c["none"] for c in kinds.values())
    return (
        f"{below} of {cids} pins are on fewer than {replication['replicas']} of "
        f"{replication['services']} services" + (f" ({none} on none)" if none else "")
    )


def verdict(status: Mapping[str, Any], items: Sequence[Attention]) -> str:
    """The page's first line."""
    if items:
        n = len(items)
        return f"{n} thing{'s' * (n != 1)} need{'s' * (n == 1)} attention"
    replication = status.get("replication") or {}
    selected = sum(c["cids"] for c in (replication.get("kinds") or {}).values())
    if not selected:
        return "Nothing to back up yet: the node's last listing had no pin selected"
    k, n = replication["replicas"], replication["services"]
    pins = "the 1 pin is" if selected == 1 else f"all {selected} pins are"
    return f"{pins.capitalize()} backed up on {k} of {n} service{'s' * (n != 1)}"


def render_page(
    status: Mapping[str, Any],
    trouble: Mapping[str, Mapping[str, Any]],
    *,
    now: float,
    refresh: int,
    max_age: float,
) -> str:
    """The page: the verdict and what needs attention, then each service (its counts, its
    state, its notes, its failed and stuck pins: `store.readonly.read_trouble`), the node
    and replication, the last drill."""
    items = attention(status, now=now, max_age=max_age)
    headline = verdict(status, items)
    stuck_after = format_duration(float(status.get("stuck_after", 3600.0)))
    services = status["services"]
    body = [
        _summary(headline, items),
        *(
            _service(name, s, trouble.get(name, {}), now=now, stuck_after=stuck_after)
            for name, s in services.items()
        ),
        _node(status, now=now),
        _drill(status.get("drill"), now=now),
        f"<footer>Read-only. Reloads every {refresh} s; as of {_when(_iso(now), now)}. "
        'The same facts as JSON: <a href="/status">/status</a>.</footer>',
    ]
    return _PAGE.format(
        refresh=refresh,
        title=_e(f"pinsyncd: {headline}"),
        style=_STYLE,
        body="\n".join(body),
    )


def _summary(headline: str, items: Sequence[Attention]) -> str:
    state = "urgent" if any(i.urgent for i in items) else "warn" if items else "ok"
    lines = [f'<section id="summary" class="{state}">', f"<h1>{_e(headline)}</h1>"]
    if items:
        lines.append('<ol id="attention">')
        lines += [
            f'<li class="{"urgent" if i.urgent else "warn"}">{_e(i.text)}</li>' for i in items
        ]
        lines.append("</ol>")
    lines.append("</section>")
    return "\n".join(lines)


def _service(
    name: str, s: Mapping[str, Any], trouble: Mapping[str, Any], *, now: float, stuck_after: str
) -> str:
    label, level = _state(s)
    lines = [
        f'<section class="service" data-service="{_e(name)}">',
        f'<h2>{_e(name)} <span class="badge {level}">{_e(label)}</span></h2>',
        f"<p>last cycle {_when(s.get('last_cycle'), now)}"
        + (f", down since {_when(s['down_since'], now)}" if s.get("down_since") else "")
        + "</p>",
    ]
    if s.get("paused"):
        lines.append(
            f'<p class="pause {level}">{_e(s["paused"])}, until '
            f"{_when(s.get('paused_until'), now)}</p>"
        )
    if s.get("last_error"):
        lines.append(f'<p class="error">last error: {_e(s["last_error"])}</p>')
    lines.append(_counts(s))
    notes = pin_notes(dict(s), stuck_after)
    if notes:
        lines.append(_list("notes", notes))
    lines += [_failed(trouble, now), _stuck(name, trouble, stuck_after, now), "</section>"]
    return _lines(lines)


def _state(s: Mapping[str, Any]) -> tuple[str, str]:
    """The service's badge: its word (paused, backing off, rate limited, ...) and colour."""
    paused = s.get("paused")
    if paused:
        return _HOLDS[hold_of(str(paused))]
    if s.get("last_error"):
        return "last cycle failed", "warn"
    if not s.get("last_cycle"):
        return "never synced", "warn"
    return "ok", "ok"


_HOLDS = {
    Hold.PAUSED: ("paused", "urgent"),
    Hold.BACKOFF: ("backing off", "warn"),
    Hold.RATE_LIMITED: ("rate limited", "warn"),
    Hold.NONE: ("waiting", "warn"),  # a reason worded by an older pinsyncd
}


def _failed(trouble: Mapping[str, Any], now: float) -> str:
    total = trouble.get("failed_total", 0)
    if not total:
        return ""
    rows = [
        [
            r["name"] or "",
            r["cid"],
            r["attempts"],
            _when(r["next_try"], now) if r["next_try"] else "at the next cycle",
            r["reason"] or "(no reason given)",
        ]
        for r in trouble.get("failed", [])
    ]
    return _lines(
        [
            f"<h3>Failed pins ({total})</h3>",
            _table("failed pins", ["name", "CID", "attempts", "next try", "why"], rows, raw=(3,)),
            _more(total, len(rows), "pinsyncd status --failed", "lists them all"),
        ]
    )


def _stuck(name: str, trouble: Mapping[str, Any], stuck_after: str, now: float) -> str:
    total = trouble.get("stuck_total", 0)
    if not total:
        return ""
    rows = [
        [r["name"] or "", r["cid"], r["status"], _when(r["since"], now)]
        for r in trouble.get("stuck", [])
    ]
    return _lines(
        [
            f"<h3>Stuck for over {_e(stuck_after)} ({total})</h3>",
            _table("stuck pins", ["name", "CID", "status", "since"], rows, raw=(3,)),
            _more(
                total,
                len(rows),
                f"pinsyncd ls --service {name} --status queued,pinning",
                "lists every pending request, these among them",
            ),
        ]
    )


def _lines(parts: Iterable[str]) -> str:
    return "\n".join(part for part in parts if part)


def _more(total: int, shown: int, command: str, does: str) -> str:
    if total <= shown:
        return ""
    return f'<p class="more">and {total - shown} more: <code>{_e(command)}</code> {_e(does)}</p>'


def _node(status: Mapping[str, Any], *, now: float) -> str:
    local = status["local"]
    selected = local.get("selected", local["pins"])
    lines = [
        '<section id="node">',
        "<h2>Local node</h2>",
        f"<p>{_e(local['pins'])} pins, {_e(selected)} of them to back up; last listed "
        f"{_when(local.get('last_cycle'), now)}</p>",
    ]
    notes = listing_notes(dict(local))
    daemon = status.get("daemon")
    if (said := daemon_note(daemon)) is not None:
        notes.insert(0, said)
    elif daemon and daemon.get("healthy"):
        notes.insert(0, "daemon: healthy")
    if notes:
        lines.append(_list("notes", notes))
    replication = status.get("replication") or {}
    kinds = replication.get("kinds") or {}
    if kinds:
        k, n = replication["replicas"], replication["services"]
        rows = [
            [kind, c["cids"], c["cids"] - c["below"], c["below"], c["none"]]
            for kind, c in kinds.items()
        ]
        lines.append(f"<h3>Replication: each pin on {_e(k)} of {_e(n)} services</h3>")
        lines.append(
            _table("replication", ["kind", "pins", f"on {k} or more", "below", "on none"], rows)
        )
    lines.append("</section>")
    return "\n".join(lines)


def _drill(drill: Mapping[str, Any] | None, *, now: float) -> str:
    lines = ['<section id="drill">', "<h2>Last restore drill</h2>"]
    if not drill:
        lines.append(
            "<p>None yet: <code>pinsyncd check --retrieval</code> fetches a sample of the "
            "pins from each service alone, as a restore would.</p>"
        )
        return "\n".join([*lines, "</section>"])
    results = [
        f"{_e(name)}: {_e(drill_result(entry))}, {_when(entry.get('time'), now)}"
        for name, entry in drill["services"].items()
    ]
    lines.append(_list("drill", results, escaped=True))
    failing = [
        [name, f.get("cid"), f.get("result"), f.get("reason"), f.get("detail")]
        for name, entry in drill["services"].items()
        for f in entry.get("failing", [])[:SHOWN]
    ]
    if failing:
        lines.append("<h3>CIDs the drill did not fetch</h3>")
        lines.append(
            _table("drill-failing pins", ["service", "CID", "result", "reason", "detail"], failing)
        )
    return "\n".join([*lines, "</section>"])


def _table(
    kind: str, heads: Sequence[str], rows: Iterable[Sequence[Any]], *, raw: Collection[int] = ()
) -> str:
    """A table in a box that scrolls sideways on a narrow screen (a `pins` table shows each
    row as a card there instead, each cell with its column's name); cells escaped, except
    the columns in `raw` (already HTML)."""
    labels = [_e(h) for h in heads]
    head = "".join(f"<th>{label}</th>" for label in labels)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td data-label="{labels[i]}">'
            f"{cell if i in raw else _e('' if cell is None else cell)}</td>"
            for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return (
        f'<div class="scroll"><table class="{kind}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def _counts(s: Mapping[str, Any]) -> str:
    """A service's counts, as boxes that wrap on a narrow screen."""
    boxes = "".join(
        f"<div><dt>{_e(c.replace('_', ' '))}</dt><dd>{_e(s.get(c, 0))}</dd></div>" for c in COUNTS
    )
    return f'<dl class="counts">{boxes}</dl>'


def _list(kind: str, items: Iterable[str], *, escaped: bool = False) -> str:
    return (
        f'<ul class="{kind}">'
        + "".join(f"<li>{item if escaped else _e(item)}</li>" for item in items)
        + "</ul>"
    )


def _when(iso: object, now: float) -> str:
    """A time from the document (ISO 8601) as a `<time>` element in UTC, with how long ago
    (or until) it is; `never` for none."""
    if not iso:
        return "never"
    try:
        moment = datetime.fromisoformat(str(iso))
    except ValueError:
        return _e(iso)
    if moment.tzinfo is None:
        return _e(iso)
    shown = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    element = f'<time datetime="{_e(iso)}">{_e(shown)}</time>'
    delta = moment.timestamp() - now
    if abs(delta) < 1:
        return f"{element} (now)"
    ago = format_duration(abs(delta))
    return f"{element} ({'in ' + ago if delta > 0 else ago + ' ago'})"


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def _e(value: object) -> str:
    """`value` as text safe anywhere in the page, attributes included: control characters
    and lone surrogates shown as escapes, tokens masked, then HTML-escaped."""
    return html.escape(printable(redact_text(str(value))), quote=True)


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{refresh}">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
{body}
</body>
</html>
"""

_STYLE = """
:root{color-scheme:light dark;--ok:#1a7f37;--warn:#9a6700;--urgent:#cf222e;--line:#8884}
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:72rem;padding:.75rem}
h1{font-size:1.3rem;margin:0 0 .4rem}h2{font-size:1.15rem;margin:0 0 .3rem}
h3{font-size:1rem;margin:.8rem 0 .3rem}
section{border:1px solid var(--line);border-radius:.5rem;padding:.75rem;margin:0 0 .75rem}
#summary{border-width:0 0 0 .4rem}#summary.ok{border-color:var(--ok)}
#summary.warn{border-color:var(--warn)}#summary.urgent{border-color:var(--urgent)}
ol,ul{margin:.3rem 0;padding-left:1.3rem}li{margin:.15rem 0}
li.urgent{color:var(--urgent);font-weight:600}li.warn{color:var(--warn)}
.badge{font-size:.8rem;padding:.1rem .45rem;border-radius:1rem;color:#fff;vertical-align:middle}
.badge.ok{background:var(--ok)}.badge.warn{background:var(--warn)}
.badge.urgent{background:var(--urgent)}
p.pause.urgent{color:var(--urgent);font-weight:600}p.pause.warn{color:var(--warn)}
.scroll{overflow-x:auto}table{border-collapse:collapse;font-size:.9rem}
th,td{text-align:left;padding:.2rem .6rem .2rem 0;border-bottom:1px solid var(--line);
vertical-align:top}
table.replication td{text-align:right}
td{overflow-wrap:anywhere;max-width:28rem}code{font-size:.9em}
li,p{overflow-wrap:anywhere}
dl.counts{display:flex;flex-wrap:wrap;gap:.4rem;margin:.5rem 0}
dl.counts div{border:1px solid var(--line);border-radius:.4rem;padding:.2rem .6rem;min-width:4.5rem}
dt{font-size:.8rem;opacity:.8}dd{margin:0;font-size:1.1rem;font-weight:600}
@media (max-width:40rem){table.pins thead{display:none}
table.pins tr{display:block;border-bottom:1px solid var(--line);padding:.3rem 0}
table.pins td{display:block;border:0;padding:.05rem 0;max-width:none}
table.pins td::before{content:attr(data-label) ": ";font-weight:600}}
footer{font-size:.85rem;opacity:.8}
"""
