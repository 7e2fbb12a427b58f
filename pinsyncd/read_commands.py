"""The commands that only read: `status` (and `--check`, `--failed`), `ls` and `show`. They
read the state file beside a running daemon, send no request, and import only what they need
(a `status` from a monitoring check starts in a fraction of a second)."""

from __future__ import annotations

import asyncio
import fnmatch
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from pinsyncd import health_check, loop
from pinsyncd.config import Config
from pinsyncd.durations import format_duration
from pinsyncd.exits import verdict
from pinsyncd.lock import StateLock
from pinsyncd.logs import printable, redact_text
from pinsyncd.say import unknown_argument
from pinsyncd.status import render_failed, render_pin, render_table, request_line
from pinsyncd.store.readonly import read_failed, read_local_pin, read_requests, read_status


def show_status(config: Config, *, as_json: bool, failed: bool = False) -> int:
    from pinsyncd.serve.status import serve_lines

    serve = _serve_status(config) if config.serve is not None and not failed else None
    if not config.services:  # a config of `pinsyncd serve` only
        assert serve is not None
        print(json.dumps({"serve": serve}, indent=2) if as_json else "\n".join(serve_lines(serve)))
        return 0
    names = [s.name for s in config.services]
    if failed:
        rows = read_failed(config.state_path, names, max_attempts=config.retry.max_attempts)
        print(
            redact_text(json.dumps(rows, indent=2) if as_json else printable(render_failed(rows)))
        )
        return 0
    status = read_status(
        config.state_path,
        names,
        max_attempts=config.retry.max_attempts,
        replicas=config.replicas,
        stuck_after=config.sync.stuck_after,
    )
    status["daemon"] = _daemon_health(config)
    if serve is not None and as_json:
        status["serve"] = serve
    # Stored text is scrubbed when written; this also covers a file from an older pinsyncd.
    print(redact_text(json.dumps(status, indent=2) if as_json else printable(render_table(status))))
    if serve is not None and not as_json:
        print("\n" + "\n".join(serve_lines(serve)))
    return 0


def _serve_status(config: Config) -> dict[str, Any]:
    """`pinsyncd serve`'s side of this machine, from its state file (`serve.status`)."""
    from pinsyncd.serve.status import read_serve_status

    assert config.serve is not None
    return read_serve_status(config.serve.state_path, [a.name for a in config.serve.accounts])


def list_requests(
    config: Config,
    *,
    services: Sequence[str],
    statuses: Sequence[str],
    cids: Sequence[str],
    names: Sequence[str],
    as_json: bool,
) -> int:
    """`pinsyncd ls`: the requests the state knows, from the state alone (no request is
    sent), one a line or as JSON; `--name` globs match the local name (or the request's)."""
    if (refusal := unknown_argument(config, services, cids)) is not None:
        return refusal
    from pinsyncd.cids import cid_forms  # multiformats: only when needed

    chosen = list(services) or [s.name for s in config.services]
    forms = [form for cid in cids for form in cid_forms(cid)]
    rows = read_requests(config.state_path, chosen, statuses=statuses, cids=forms)
    if names:
        rows = (r for r in rows if any(fnmatch.fnmatchcase(r["name"] or "", g) for g in names))
    width = max(len(name) for name in chosen)
    shown = 0
    if as_json:
        print("[", end="")
    for row in rows:
        if as_json:
            print(("," if shown else "") + "\n  " + redact_text(json.dumps(row)), end="")
        else:
            print(redact_text(request_line(row, width)))
        shown += 1
    if as_json:
        print("\n]" if shown else "]")
    elif not shown:
        print("no requests match", file=sys.stderr)
    return 0


def show_pin(config: Config, cid: str, *, as_json: bool) -> int:
    """`pinsyncd show CID`: where one CID is, from the state alone."""
    if (refusal := unknown_argument(config, [], [cid])) is not None:
        return refusal
    from pinsyncd.cids import cid_forms

    forms = cid_forms(cid)
    names = [s.name for s in config.services]
    rows = list(read_requests(config.state_path, names, cids=forms))
    doc = {
        "cid": cid,
        "local": read_local_pin(config.state_path, forms),
        "services": {name: [r for r in rows if r["service"] == name] for name in names},
        "pinned_on": len({r["service"] for r in rows if r["status"] == "pinned"}),
        "replicas": min(config.replicas or len(names), len(names)),
    }
    print(redact_text(json.dumps(doc, indent=2) if as_json else render_pin(doc)))
    return 0


def check_status(config: Config, *, max_age: float) -> int:
    """`status --check`: one line per problem on stdout and the exit code it calls for, or
    one `OK` line and 0."""
    status = read_status(
        config.state_path,
        [s.name for s in config.services],
        max_attempts=config.retry.max_attempts,
        replicas=config.replicas,
        stuck_after=config.sync.stuck_after,
    )
    status["daemon"] = _daemon_health(config)
    found = health_check.check(status, now=time.time(), max_age=max_age)
    for problem in found:
        print(printable(redact_text(problem.text)))
    if not found:
        services = len(status["services"])
        print(
            f"OK: {services} service{'s' * (services != 1)} synced within "
            f"{format_duration(max_age)}; nothing paused, stuck or failed for good"
        )
    code, _why = verdict(found)
    return code


def _daemon_health(config: Config) -> dict[str, Any] | None:
    """What the daemon running on this state file says of its health (it alone knows that
    it cannot write the state file); None when no daemon runs on it."""
    holder = StateLock(config.state_path).holder()
    if holder is None or not holder.is_daemon:
        return None
    from pinsyncd import control  # aiohttp: only when a daemon is there to ask

    said: list[dict[str, Any]] = []

    async def ask() -> tuple[int, str | None] | None:
        path = control.socket_path(config.state_path)
        return await asyncio.wait_for(
            control.ask(path, "health", {}, lambda line: said.append(line)), HEALTH_WAIT
        )

    try:
        answer = loop.run(ask())
    except TimeoutError:
        answer = None
    if answer is None or not said or not isinstance(said[0].get("daemon"), dict):
        return {"running": True, "healthy": None, "reason": "it does not answer"}
    return dict(said[0]["daemon"])


HEALTH_WAIT = 5.0
