"""A fake IPFS Pinning Service API v1.0.0 server for tests, with quirks and fault injection.

By default it follows the IPFS Pinning Service API spec v1.0.0 closely: Bearer auth, 202
on add/replace/delete, a fresh uuid4 ``requestid`` on every add (even for the same CID),
globally unique and strictly increasing ``created`` timestamps, newest-first listing,
``count`` = total matches, pinned-only when no ``status`` filter is given and 400s for
every out-of-spec query.

Quirk switches emulate real servers (the npm mock, Kubo's test server, ipfs-cluster),
and :class:`Fault` rules make chosen requests fail (error codes, 429 with rate-limit
headers, connection resets, hangs, slow or malformed answers, HTML error pages).

In-process use::

    async with FakePinningService(token="secret") as svc:
        svc.inject(Fault("status", status=503), method="POST", path="/pins", times=2)
        ...  # talk to svc.url
        assert len(svc.pins_for_cid(cid)) == 1

Standalone use (prints ``{"port": N}`` once listening on 127.0.0.1)::

    python -m tests.fake_psa --port 0 --token T [--transition-after 0.5] [--fail-cids-file F]

The fail-cids file (one CID per line) is re-read whenever it changes.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import copy
import fnmatch
import hmac
import json
import math
import os
import random
import re
import signal
import socket
import struct
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from email.utils import formatdate
from typing import Any, Literal, get_args

from aiohttp import web
from multidict import MultiDictProxy

STATUSES: tuple[str, ...] = ("queued", "pinning", "pinned", "failed")
MATCH_STRATEGIES: tuple[str, ...] = ("exact", "iexact", "partial", "ipartial")
FAIL_DETAILS = "could not fetch the DAG (test)"
FAKE_PEER_ID = "12D3KooWGBoSpdSqfj8YYGCBkNPjRgyJyymfmx3hmhxTTJ9nh8KX"
DEFAULT_DELEGATES: tuple[str, ...] = (f"/ip4/127.0.0.1/tcp/4001/p2p/{FAKE_PEER_ID}",)

FaultKind = Literal[
    "status", "rate_limit", "reset", "hang", "slow", "malformed", "html_500", "flood"
]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)
REASONS: dict[int, str] = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "INSUFFICIENT_FUNDS",
    429: "TOO_MANY_REQUESTS",
    500: "INTERNAL_SERVER_ERROR",
    502: "BAD_GATEWAY",
    503: "SERVICE_UNAVAILABLE",
    504: "GATEWAY_TIMEOUT",
}
HTML_ERROR_PAGE = (
    '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>Error</title>\n'
    "</head>\n<body>\n<pre>Error: schema must be a string or object but undefined was passed"
    "<br> &nbsp; &nbsp;at ZSchema.validate (node_modules/z-schema/src/ZSchema.js:260:15)</pre>\n"
    "</body>\n</html>\n"
)
NOT_JSON_BODY = '{"count": 1, "results": [{"requestid": "'
WRONG_SHAPE_LIST = '{"count": "x", "results": {"oops": true}}'
WRONG_SHAPE_STATUS = '{"requestid": 7, "status": "done", "pin": "x", "created": "yesterday"}'

_B58 = "1-9A-HJ-NP-Za-km-z"
_CID_RE = re.compile(
    rf"Qm[{_B58}]{{44}}|b[a-z2-7]{{7,}}|B[A-Z2-7]{{7,}}|z[{_B58}]{{7,}}|f[0-9a-f]{{7,}}"
    r"|k[0-9a-z]{7,}"
)
_RFC3339_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Fault:
    """What goes wrong with one request.

    kind:
      ``status``     JSON Failure with ``status`` (default 500) and ``reason`` (default by code,
                     e.g. 409 -> INSUFFICIENT_FUNDS).
      ``rate_limit`` 429 + ``X-RateLimit-Limit: 5`` / ``X-RateLimit-Remaining: 0``; the limit stays
                     active for ``retry_after`` seconds (requests during it are violations).
                     ``retry_after_header``: "seconds", "http_date" or None (no Retry-After);
                     ``reset_header`` adds ``X-RateLimit-Reset: <unix epoch seconds>``.
      ``reset``      close the TCP connection without an answer (RST if ``rst``, else FIN).
      ``hang``       never answer (``delay`` defaults to the service's ``hang_seconds``); the
                     connection is aborted when the delay ends or the server stops.
      ``slow``       answer normally after ``delay`` seconds (default 0.5).
      ``malformed``  success status with a body that is ``shape`` "not_json" or "wrong_shape".
      ``html_500``   ``status`` (default 500) with an HTML page (like the npm mock's crash).
      ``flood``      ``status`` (default 200) with a JSON-looking body of ``size`` bytes, sent
                     in 64 KiB chunks as fast as the client reads (None: it never ends).
    after_apply: run the real operation first (the pin is created/deleted), then misbehave.
    body: replaces the response body text of ``status``/``malformed``/``html_500``.
    headers: sent as they are with ``status``/``malformed``/``html_500`` (e.g. a raw
    ``Retry-After`` on a 429 from ``status``).
    """

    kind: FaultKind
    status: int | None = None
    reason: str | None = None
    details: str = "injected fault"
    after_apply: bool = False
    delay: float | None = None
    retry_after: float = 1.0
    retry_after_header: Literal["seconds", "http_date"] | None = "seconds"
    reset_header: bool = False
    shape: Literal["not_json", "wrong_shape"] = "not_json"
    body: str | None = None
    rst: bool = True
    headers: Mapping[str, str] | None = None
    size: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {FAULT_KINDS}")


@dataclass
class FaultRule:
    """An injected fault for requests matching ``method`` and the fnmatch ``path`` pattern.

    ``path`` is relative to the base path ("/pins", "/pins/*", "/pins*"); None matches all.
    The first ``skip`` matching requests pass untouched, then ``times`` of them get the
    fault (None = forever). ``hits`` counts the faulted requests.
    """

    fault: Fault
    method: str | None = None
    path: str | None = None
    times: int | None = 1
    skip: int = 0
    hits: int = 0

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self.path is None or fnmatch.fnmatchcase(path, self.path)


@dataclass
class RecordedRequest:
    """One request as seen by the server (the Authorization header is never kept).

    ``path`` is relative to the base path; ``body`` is the parsed JSON (or raw text);
    ``status`` is what the client got (None: connection reset / hang / no answer yet);
    ``applied_status`` is what the real operation produced (None if it never ran).
    """

    time: float
    method: str
    path: str
    query: dict[str, str]
    body: Any = None
    status: int | None = None
    fault: Fault | None = None
    applied_status: int | None = None


@dataclass(frozen=True)
class RateLimitViolation:
    """A request that arrived while an advertised rate limit was still in force."""

    time: float
    method: str
    path: str
    early_by: float


@dataclass(eq=False)
class _Record:
    requestid: str
    pin: dict[str, Any]
    created_ns: int
    created: str
    added: float
    forced: str | None = None
    info: dict[str, str] = field(default_factory=dict)
    alive: bool = True


@dataclass
class _Chaos:
    rate: float
    kinds: list[Fault]
    rng: random.Random
    method: str | None
    path: str | None


@dataclass
class _Filters:
    cids: set[str] | None
    name: str | None
    match: str
    statuses: set[str]
    before: int | None
    after: int | None
    limit: int
    meta: dict[str, str] | None


class _Failure(Exception):
    def __init__(self, status: int, details: str, reason: str | None = None) -> None:
        super().__init__(details)
        self.status = status
        self.details = details
        self.reason = reason or REASONS.get(status, "ERROR")


def failure_body(reason: str, details: str) -> dict[str, Any]:
    """The spec's Failure object."""
    return {"error": {"reason": reason, "details": details}}


def format_created(ns: int) -> str:
    """RFC 3339 UTC with microseconds and Z, e.g. 2024-05-01T12:00:00.123456Z."""
    return (_EPOCH + timedelta(microseconds=ns // 1000)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_rfc3339(text: str) -> int:
    """RFC 3339 date-time -> nanoseconds since the epoch; ValueError if invalid."""
    m = _RFC3339_RE.fullmatch(text)
    if m is None:
        raise ValueError(f"not an RFC 3339 date-time: {text!r}")
    year, month, day, hour, minute, sec = (int(g) for g in m.groups()[:6])
    frac, off = m.group(7) or "", m.group(8)
    if off in ("Z", "z"):
        tz = UTC
    else:
        sign = -1 if off[0] == "-" else 1
        tz = timezone(sign * timedelta(hours=int(off[1:3]), minutes=int(off[4:6])))
    dt = datetime(year, month, day, hour, minute, sec, tzinfo=tz)
    seconds = (dt - _EPOCH) // timedelta(seconds=1)
    return seconds * 1_000_000_000 + int(frac.ljust(9, "0"))


def _json_response(
    status: int, data: Any, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(data), content_type="application/json", headers=headers
    )


def _failure_response(exc: _Failure, headers: Mapping[str, str] | None = None) -> web.Response:
    return _json_response(exc.status, failure_body(exc.reason, exc.details), headers)


def _format_seconds(seconds: float, integral: bool) -> str:
    if integral:
        return str(max(0, math.ceil(round(seconds, 3))))
    return f"{max(0.0, seconds):.3f}"


class FakePinningService:
    """An in-memory Pinning Service API server on aiohttp (see the module docstring).

    Keyword arguments (all quirks off by default):
      token: the Bearer token; None disables auth.
      host, port: where to listen (127.0.0.1, 0 = any free port; kept across stop/start).
      base_path: route prefix, e.g. "/psa" -> endpoint ``http://127.0.0.1:PORT/psa``.
      delegates, info: returned in every PinStatus.
      transition_after: seconds; queued -> pinning after it, -> pinned (or failed for
        ``fail_cids``) after twice it. None: pins stay queued until :meth:`set_status`.
      fail_cids / fail_cids_file: CIDs that end up ``failed`` (the file is re-read on change).
      order: "newest_first" or "oldest_first" (npm mock).
      count_mode: "total" or "page" (count = len(results): npm mock, Kubo's test server).
      inclusive_before: ``before`` also matches equal timestamps (ipfs-cluster).
      same_created_batch: that many consecutive adds share one ``created`` (0/1 = off).
      default_all_statuses: no ``status`` filter lists all statuses (cluster, npm mock).
      requestid_is_cid: requestid = CID; re-adding a CID returns the existing request.
      ignore_limit_over: silently serve at most that many results per page.
      rate_limit_grace: seconds of slack before a rate-limit reset that are not violations.
      in_flight_grace: requests arriving this soon after a 429 was sent still get a 429, but
        are not violations: they were already on the wire when the client was told.
      hang_seconds: default duration of a ``hang`` fault.
    """

    def __init__(
        self,
        token: str | None = "secret",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        base_path: str = "",
        delegates: Sequence[str] = DEFAULT_DELEGATES,
        info: Mapping[str, str] | None = None,
        transition_after: float | None = None,
        fail_cids: Iterable[str] = (),
        fail_cids_file: str | os.PathLike[str] | None = None,
        order: Literal["newest_first", "oldest_first"] = "newest_first",
        count_mode: Literal["total", "page"] = "total",
        inclusive_before: bool = False,
        same_created_batch: int = 0,
        default_all_statuses: bool = False,
        requestid_is_cid: bool = False,
        ignore_limit_over: int | None = None,
        rate_limit_grace: float = 0.005,
        in_flight_grace: float = 0.05,
        hang_seconds: float = 3600.0,
        replace_noop: bool | Literal["any"] = False,
    ) -> None:
        if order not in ("newest_first", "oldest_first"):
            raise ValueError(f"bad order {order!r}")
        if count_mode not in ("total", "page"):
            raise ValueError(f"bad count_mode {count_mode!r}")
        self.token = token
        self.host = host
        self.port = port
        self.base_path = "/" + base_path.strip("/") if base_path.strip("/") else ""
        self.delegates = list(delegates)
        self.info = dict(info or {})
        self.transition_after = transition_after
        self.fail_cids: set[str] = set(fail_cids)
        self.fail_cids_file = os.fspath(fail_cids_file) if fail_cids_file is not None else None
        self.order = order
        self.count_mode = count_mode
        self.inclusive_before = inclusive_before
        self.same_created_batch = same_created_batch
        self.default_all_statuses = default_all_statuses
        self.requestid_is_cid = requestid_is_cid
        self.ignore_limit_over = ignore_limit_over
        self.rate_limit_grace = rate_limit_grace
        self.in_flight_grace = in_flight_grace
        self.hang_seconds = hang_seconds
        self.replace_noop = replace_noop
        """Helia's server: a replace by the request's own CID answers 202 with the request as
        it was (same requestid, old status, old name) and changes nothing; `"any"`: a
        replace by any CID does."""
        self.flooded = 0  # bytes of the last `flood` body that were sent
        self.hold_adds_after: int | None = None
        """Once this many pins are stored, a new `POST /pins` waits for `release_adds` before
        it is applied: a test holds a sync open for as long as it needs, on any machine."""
        self.release_adds = asyncio.Event()
        self.most_at_once: dict[str, int] = {}
        """Per CID, the most live requests it ever had at one instant."""
        self._live_by_cid: dict[str, int] = {}

        self.requests: list[RecordedRequest] = []
        self.rate_limit_violations: list[RateLimitViolation] = []
        self.rules: list[FaultRule] = []
        self._chaos: _Chaos | None = None
        self._rl_fault: Fault | None = None
        self._rl_until = 0.0  # wall-clock end of the advertised rate limit
        self._rl_started = 0.0  # wall-clock time the 429 that started it was sent

        # Pins: a list in created order (with tombstones) + parallel keys + a dict by id.
        self._order: list[_Record] = []
        self._keys: list[int] = []
        self._by_id: dict[str, _Record] = {}
        self._dead = 0
        self._wall0_ns = time.time_ns()
        self._mono0_ns = time.monotonic_ns()
        self._last_created_ns = 0
        self._batch_left = 0
        self._fail_file_stamp: tuple[int, int] | None = None

        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """The service endpoint, e.g. ``http://127.0.0.1:PORT/psa``."""
        return f"http://{self.host}:{self.port}{self.base_path}"

    async def start(self) -> None:
        """Start listening (again: a restarted service keeps its pins and port)."""
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self.port = runner.addresses[0][1]
        self._stopping = asyncio.Event()
        self._runner = runner

    async def stop(self) -> None:
        """Stop listening; hanging and slow requests are aborted."""
        if self._runner is None:
            return
        assert self._stopping is not None
        self._stopping.set()
        runner, self._runner = self._runner, None
        await runner.cleanup()

    async def __aenter__(self) -> FakePinningService:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ faults

    def inject(
        self,
        fault: Fault,
        *,
        method: str | None = None,
        path: str | None = None,
        times: int | None = 1,
        skip: int = 0,
    ) -> FaultRule:
        """Add a fault rule (rules are tried in order; the first live match wins)."""
        rule = FaultRule(fault, method, path, times, skip)
        self.rules.append(rule)
        return rule

    def chaos(
        self,
        rate: float,
        kinds: Sequence[Fault | FaultKind] = ("status", "reset", "rate_limit"),
        *,
        seed: int | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        """Fault a random ``rate`` fraction of matching requests not hit by a rule; 0 = off."""
        if rate <= 0:
            self._chaos = None
            return
        faults = [k if isinstance(k, Fault) else Fault(k) for k in kinds]
        self._chaos = _Chaos(rate, faults, random.Random(seed), method, path)

    def clear_faults(self) -> None:
        """Remove all rules, chaos and any active rate limit."""
        self.rules.clear()
        self._chaos = None
        self._rl_fault = None
        self._rl_until = 0.0

    @property
    def rate_limited_until(self) -> float | None:
        """Wall-clock (time.time()) end of the active rate limit, or None."""
        return self._rl_until if self._rl_fault is not None else None

    def _pick_fault(self, method: str, path: str) -> Fault | None:
        for rule in self.rules:
            if rule.exhausted or not rule.matches(method, path):
                continue
            if rule.skip > 0:
                rule.skip -= 1
                continue
            rule.hits += 1
            return rule.fault
        ch = self._chaos
        if ch is None or not ch.kinds:
            return None
        if ch.method is not None and ch.method.upper() != method.upper():
            return None
        if ch.path is not None and not fnmatch.fnmatchcase(path, ch.path):
            return None
        if ch.rng.random() < ch.rate:
            return ch.rng.choice(ch.kinds)
        return None

    # ------------------------------------------------------------------ pins (test API)

    @property
    def pins(self) -> list[dict[str, Any]]:
        """All stored PinStatus objects, oldest first (copies)."""
        now = time.monotonic()
        return [self._pin_status(r, now, copy_=True) for r in self._live()]

    def pins_for_cid(self, cid: str) -> list[dict[str, Any]]:
        """All stored PinStatus objects for ``cid``, oldest first (copies)."""
        now = time.monotonic()
        return [self._pin_status(r, now, copy_=True) for r in self._live() if r.pin["cid"] == cid]

    def get_pin(self, requestid: str) -> dict[str, Any] | None:
        rec = self._by_id.get(requestid)
        return None if rec is None else self._pin_status(rec, time.monotonic(), copy_=True)

    def add_pin(
        self,
        cid: str,
        *,
        name: str | None = None,
        origins: Sequence[str] | None = None,
        meta: Mapping[str, str] | None = None,
        status: str | None = None,
        details: str | None = None,
    ) -> dict[str, Any]:
        """Store a pin directly (no HTTP, no validation); returns its PinStatus."""
        pin: dict[str, Any] = {"cid": cid}
        if name is not None:
            pin["name"] = name
        if origins is not None:
            pin["origins"] = list(origins)
        if meta is not None:
            pin["meta"] = dict(meta)
        rec = self._create(pin)
        if status is not None:
            self._force(rec, status, details)
        return self._pin_status(rec, time.monotonic(), copy_=True)

    def seed(
        self, cids: Iterable[str], *, status: str | None = None, name_prefix: str | None = None
    ) -> int:
        """Store many pins at once (no HTTP, no validation, no copies), each with its own
        ``created``; ``status`` forces their status, ``name_prefix`` names them PREFIX-i.
        Returns how many were stored. For benchmarks that need a service holding 10^6 pins."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"bad status {status!r}")
        stored = 0
        for index, cid in enumerate(cids):
            pin: dict[str, Any] = {"cid": cid}
            if name_prefix is not None:
                pin["name"] = f"{name_prefix}-{index}"
            self._create(pin).forced = status
            stored += 1
        return stored

    @property
    def pin_count(self) -> int:
        """How many pins are stored (each request once, whatever its status)."""
        return len(self._by_id)

    def request_counts(self) -> dict[str, int]:
        """Recorded requests by Pinning Service operation: ``add`` (POST /pins), ``list``
        (GET /pins), ``get``, ``replace``, ``delete`` (on /pins/{requestid}), ``other``."""
        counts = dict.fromkeys(("add", "list", "get", "replace", "delete", "other"), 0)
        for r in self.requests:
            counts[_operation(r.method, r.path)] += 1
        return counts

    def set_status(self, target: str, status: str, details: str | None = None) -> list[str]:
        """Force the status of the pin with requestid ``target``, or of every pin of CID
        ``target``; ``details`` goes to ``info.status_details``. Returns the requestids."""
        rec = self._by_id.get(target)
        recs = [rec] if rec is not None else [r for r in self._live() if r.pin["cid"] == target]
        if not recs:
            raise KeyError(target)
        for r in recs:
            self._force(r, status, details)
        return [r.requestid for r in recs]

    def vanish(self, requestid: str) -> None:
        """Silently drop a pin (as if the service lost it)."""
        self._remove(self._by_id[requestid])

    def count(
        self, method: str | None = None, path_prefix: str | None = None, status: int | None = None
    ) -> int:
        """How many recorded requests match (path_prefix is relative to the base path)."""
        return sum(
            1
            for r in self.requests
            if (method is None or r.method == method.upper())
            and (path_prefix is None or r.path.startswith(path_prefix))
            and (status is None or r.status == status)
        )

    # ------------------------------------------------------------------ storage

    def _live(self) -> Iterator[_Record]:
        return (r for r in self._order if r.alive)

    def _next_created_ns(self) -> int:
        if self.same_created_batch > 1 and self._batch_left > 0:
            self._batch_left -= 1
            return self._last_created_ns
        now = self._wall0_ns + time.monotonic_ns() - self._mono0_ns
        ns = max(now // 1000 * 1000, self._last_created_ns + 1000)  # whole microseconds
        self._last_created_ns = ns
        self._batch_left = self.same_created_batch - 1
        return ns

    def _create(self, pin: dict[str, Any]) -> _Record:
        if self.requestid_is_cid and (old := self._by_id.get(pin["cid"])) is not None:
            return old
        ns = self._next_created_ns()
        rid = pin["cid"] if self.requestid_is_cid else uuid.uuid4().hex
        rec = _Record(rid, pin, ns, format_created(ns), time.monotonic())
        self._order.append(rec)
        self._keys.append(ns)
        self._by_id[rid] = rec
        key = str(pin.get("cid"))  # a record added as junk may have no CID, or not a string
        live = self._live_by_cid[key] = self._live_by_cid.get(key, 0) + 1
        self.most_at_once[key] = max(live, self.most_at_once.get(key, 0))
        return rec

    def _remove(self, rec: _Record) -> None:
        rec.alive = False
        del self._by_id[rec.requestid]
        self._live_by_cid[str(rec.pin.get("cid"))] -= 1
        self._dead += 1
        if self._dead > 64 and self._dead * 2 > len(self._order):
            self._order = [r for r in self._order if r.alive]
            self._keys = [r.created_ns for r in self._order]
            self._dead = 0

    def _force(self, rec: _Record, status: str, details: str | None) -> None:
        if status not in STATUSES:
            raise ValueError(f"bad status {status!r}")
        rec.forced = status
        if details is None:
            rec.info.pop("status_details", None)
        else:
            rec.info["status_details"] = details

    def _status_of(self, rec: _Record, now: float) -> str:
        if rec.forced is not None:
            return rec.forced
        step = self.transition_after
        if step is None:
            return "queued"
        age = now - rec.added
        if age < step:
            return "queued"
        if age < 2 * step:
            return "pinning"
        return "failed" if rec.pin["cid"] in self.fail_cids else "pinned"

    def _pin_status(self, rec: _Record, now: float, copy_: bool = False) -> dict[str, Any]:
        status = self._status_of(rec, now)
        info = {**self.info, **rec.info}
        if status == "failed" and rec.forced is None:
            info.setdefault("status_details", FAIL_DETAILS)
        out = {
            "requestid": rec.requestid,
            "status": status,
            "created": rec.created,
            "pin": copy.deepcopy(rec.pin) if copy_ else rec.pin,
            "delegates": list(self.delegates),
            "info": info,
        }
        return out

    def _refresh_fail_cids(self) -> None:
        if self.fail_cids_file is None:
            return
        try:
            st = os.stat(self.fail_cids_file)
        except FileNotFoundError:
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._fail_file_stamp:
            self._fail_file_stamp = stamp
            with open(self.fail_cids_file, encoding="utf-8") as f:
                self.fail_cids = {line.strip() for line in f if line.strip()}

    # ------------------------------------------------------------------ HTTP plumbing

    def _relative(self, path: str) -> str | None:
        if not self.base_path:
            return path
        if path == self.base_path or path.startswith(self.base_path + "/"):
            return path[len(self.base_path) :] or "/"
        return None

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        rel = self._relative(request.path)
        rec = RecordedRequest(
            time.monotonic(),
            request.method,
            request.path if rel is None else rel,
            {k: v for k, v in request.query.items()},
        )
        self.requests.append(rec)
        raw = await request.text() if request.body_exists else ""
        if raw:
            try:
                rec.body = json.loads(raw)
            except ValueError:
                rec.body = raw
        resp = await self._serve(request, rec, rel, raw)
        if rec.status is None and not (request.transport is None or request.transport.is_closing()):
            rec.status = resp.status
        return resp

    async def _serve(
        self, request: web.Request, rec: RecordedRequest, rel: str | None, raw: str
    ) -> web.StreamResponse:
        self._refresh_fail_cids()
        if (limited := self._rate_limit_check(rec)) is not None:
            return limited
        if (
            request.method == "POST"
            and rec.path.rstrip("/").endswith("/pins")
            and self.hold_adds_after is not None
            and len(self.pins) >= self.hold_adds_after
        ):
            await self.release_adds.wait()
        fault = self._pick_fault(request.method, rec.path)
        rec.fault = fault
        if fault is None:
            resp = self._apply(request, rel, raw)
            rec.applied_status = resp.status
            return resp
        if fault.kind == "slow":
            if await self._sleep(0.5 if fault.delay is None else fault.delay):
                return self._abort(request, fault.rst)
            resp = self._apply(request, rel, raw)
            rec.applied_status = resp.status
            return resp
        if fault.after_apply:
            rec.applied_status = self._apply(request, rel, raw).status
        return await self._misbehave(request, rec.path, fault)

    async def _misbehave(self, request: web.Request, path: str, fault: Fault) -> web.StreamResponse:
        kind = fault.kind
        if kind == "reset":
            return self._abort(request, fault.rst)
        if kind == "hang":
            await self._sleep(self.hang_seconds if fault.delay is None else fault.delay)
            return self._abort(request, fault.rst)
        if kind == "rate_limit":
            return self._start_rate_limit(fault)
        if kind == "flood":
            return await self._flood(request, fault)
        if kind == "html_500":
            return web.Response(
                status=fault.status or 500,
                text=HTML_ERROR_PAGE if fault.body is None else fault.body,
                content_type="text/html",
                headers=fault.headers,
            )
        if kind == "malformed":
            listing = request.method == "GET" and path == "/pins"
            if fault.body is not None:
                text = fault.body
            elif fault.shape == "not_json":
                text = NOT_JSON_BODY
            else:
                text = WRONG_SHAPE_LIST if listing else WRONG_SHAPE_STATUS
            code = fault.status or (200 if request.method == "GET" else 202)
            return web.Response(
                status=code, text=text, content_type="application/json", headers=fault.headers
            )
        # kind == "status"
        status = fault.status or 500
        if fault.body is not None:
            return web.Response(
                status=status,
                text=fault.body,
                content_type="application/json",
                headers=fault.headers,
            )
        return _failure_response(_Failure(status, fault.details, fault.reason), fault.headers)

    async def _flood(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        response = web.StreamResponse(status=fault.status or 200)
        response.content_type = "application/json"
        await response.prepare(request)
        chunk = b'{"count": 1, "results": [' + b" " * (65536 - 26)
        sent = self.flooded = 0
        assert self._stopping is not None
        while (fault.size is None or sent < fault.size) and not self._stopping.is_set():
            part = chunk if fault.size is None else chunk[: fault.size - sent]
            try:
                await response.write(part)
            except (ConnectionError, RuntimeError):
                break  # the client hung up
            sent += len(part)
            self.flooded = sent
        return response

    async def _sleep(self, seconds: float) -> bool:
        """Sleep; True if interrupted because the server is stopping."""
        assert self._stopping is not None
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            return False
        return True

    @staticmethod
    def _abort(request: web.Request, rst: bool) -> web.StreamResponse:
        transport = request.transport
        if transport is not None and not transport.is_closing():
            sock = transport.get_extra_info("socket")
            if rst and sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        return web.Response(status=500)  # never reaches the client

    # ------------------------------------------------------------------ rate limiting

    def _rate_limit_headers(self, fault: Fault, now: float) -> dict[str, str]:
        headers = {"X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "0"}
        until = self._rl_until
        integral = float(fault.retry_after).is_integer()
        if fault.retry_after_header == "seconds":
            headers["Retry-After"] = _format_seconds(until - now, integral)
        elif fault.retry_after_header == "http_date":
            headers["Retry-After"] = formatdate(math.ceil(until), usegmt=True)
        if fault.reset_header:
            headers["X-RateLimit-Reset"] = str(math.ceil(until))
        return headers

    def _start_rate_limit(self, fault: Fault) -> web.Response:
        now = time.time()
        until = now + fault.retry_after
        if fault.retry_after_header == "http_date" or (
            fault.reset_header and fault.retry_after_header is None
        ):
            until = math.ceil(until)  # only whole seconds were advertised
        self._rl_fault, self._rl_until = fault, until
        self._rl_started = time.time()
        exc = _Failure(429, f"rate limited; retry in {fault.retry_after} s", "RATE_LIMITED")
        return _failure_response(exc, self._rate_limit_headers(fault, now))

    def _rate_limit_check(self, rec: RecordedRequest) -> web.Response | None:
        fault = self._rl_fault
        if fault is None:
            return None
        now = time.time()
        if now >= self._rl_until - self.rate_limit_grace:
            self._rl_fault = None
            return None
        early = self._rl_until - now
        if now - self._rl_started > self.in_flight_grace:
            self.rate_limit_violations.append(
                RateLimitViolation(time.monotonic(), rec.method, rec.path, early)
            )
        rec.fault = fault
        exc = _Failure(429, f"rate limit still active for {early:.3f} s", "RATE_LIMITED")
        return _failure_response(exc, self._rate_limit_headers(fault, now))

    # ------------------------------------------------------------------ the API itself

    def _apply(self, request: web.Request, rel: str | None, raw: str) -> web.Response:
        try:
            self._check_auth(request)
            return self._route(request.method, rel, request.query, raw)
        except _Failure as exc:
            headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
            return _failure_response(exc, headers)

    def _check_auth(self, request: web.Request) -> None:
        if self.token is None:
            return
        header = request.headers.get("Authorization")
        if not header:
            raise _Failure(401, "access token is missing")
        scheme, _, value = header.partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), self.token.encode()
        )
        if not ok:
            raise _Failure(401, "access token is invalid")

    def _route(
        self, method: str, rel: str | None, query: MultiDictProxy[str], raw: str
    ) -> web.Response:
        if rel == "/pins":
            if method == "GET":
                return _json_response(200, self._list(query))
            if method == "POST":
                rec = self._create(self._parse_pin(raw))
                return _json_response(202, self._pin_status(rec, time.monotonic()))
            raise _Failure(405, f"{method} not allowed on /pins")
        m = re.fullmatch(r"/pins/([^/]+)", rel or "")
        if m is None:
            raise _Failure(404, "no such endpoint")
        rid = m.group(1)
        if method == "GET":
            return _json_response(200, self._pin_status(self._lookup(rid), time.monotonic()))
        if method == "POST":
            pin = self._parse_pin(raw)
            old = self._lookup(rid)
            if self.replace_noop == "any" or (self.replace_noop and old.pin["cid"] == pin["cid"]):
                return _json_response(202, self._pin_status(old, time.monotonic()))
            self._remove(old)
            rec = self._create(pin)
            return _json_response(202, self._pin_status(rec, time.monotonic()))
        if method == "DELETE":
            self._remove(self._lookup(rid))
            return web.Response(status=202)
        raise _Failure(405, f"{method} not allowed on /pins/{{requestid}}")

    def _lookup(self, requestid: str) -> _Record:
        rec = self._by_id.get(requestid)
        if rec is None:
            raise _Failure(404, f"no pin with requestid {requestid}")
        return rec

    @staticmethod
    def _parse_pin(raw: str) -> dict[str, Any]:
        try:
            body = json.loads(raw)
        except ValueError:
            raise _Failure(400, "request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise _Failure(400, "request body must be a Pin object")
        cid = body.get("cid")
        if not isinstance(cid, str) or not _CID_RE.fullmatch(cid):
            raise _Failure(400, f"cid is missing or not a valid CID: {cid!r}")
        pin: dict[str, Any] = {"cid": cid}
        if "name" in body:
            name = body["name"]
            if not isinstance(name, str) or len(name) > 255:
                raise _Failure(400, "name must be a string of at most 255 characters")
            pin["name"] = name
        if "origins" in body:
            origins = body["origins"]
            if (
                not isinstance(origins, list)
                or len(origins) > 20
                or not all(isinstance(o, str) for o in origins)
                or len(set(origins)) != len(origins)
            ):
                raise _Failure(400, "origins must be at most 20 unique multiaddr strings")
            pin["origins"] = origins
        if "meta" in body:
            pin["meta"] = _check_meta(body["meta"], "meta")
        return pin

    def _parse_filters(self, query: MultiDictProxy[str]) -> _Filters:
        for key in ("cid", "name", "match", "status", "before", "after", "limit", "meta"):
            if len(query.getall(key, [])) > 1:
                raise _Failure(400, f"{key} given more than once (use the comma form for lists)")
        cids = None
        if "cid" in query:
            items = query["cid"].split(",")
            if not 1 <= len(items) <= 10 or "" in items or len(set(items)) != len(items):
                raise _Failure(400, "cid must list 1 to 10 unique CIDs")
            cids = set(items)
        name = query.get("name")
        if name is not None and len(name) > 255:
            raise _Failure(400, "name is longer than 255 characters")
        match = query.get("match", "exact")
        if match not in MATCH_STRATEGIES:
            raise _Failure(400, f"match must be one of {', '.join(MATCH_STRATEGIES)}")
        if "status" in query:
            statuses = query["status"].split(",")
            if not statuses or any(s not in STATUSES for s in statuses):
                raise _Failure(400, f"status must be a comma list of {', '.join(STATUSES)}")
            status_set = set(statuses)
        else:
            status_set = set(STATUSES) if self.default_all_statuses else {"pinned"}
        before, after = (self._parse_time(query, k) for k in ("before", "after"))
        try:
            limit = int(query.get("limit", "10"))
        except ValueError:
            raise _Failure(400, "limit must be an integer") from None
        if not 1 <= limit <= 1000:
            raise _Failure(400, "limit must be between 1 and 1000")
        if self.ignore_limit_over is not None:
            limit = min(limit, self.ignore_limit_over)
        meta = None
        if "meta" in query:
            try:
                meta = _check_meta(json.loads(query["meta"]), "meta filter")
            except ValueError:
                raise _Failure(400, "meta must be a URL-escaped JSON object") from None
        return _Filters(cids, name, match, status_set, before, after, limit, meta)

    @staticmethod
    def _parse_time(query: MultiDictProxy[str], key: str) -> int | None:
        if key not in query:
            return None
        try:
            return parse_rfc3339(query[key])
        except ValueError:
            raise _Failure(400, f"{key} must be an RFC 3339 date-time") from None

    def _list(self, query: MultiDictProxy[str]) -> dict[str, Any]:
        f = self._parse_filters(query)
        lo = 0 if f.after is None else bisect.bisect_right(self._keys, f.after)
        hi = len(self._keys)
        if f.before is not None:
            cut = bisect.bisect_right if self.inclusive_before else bisect.bisect_left
            hi = cut(self._keys, f.before)
        span = range(hi - 1, lo - 1, -1) if self.order == "newest_first" else range(lo, hi)
        now = time.monotonic()
        all_statuses = len(f.statuses) == len(STATUSES)
        needle = None if f.name is None else f.name.casefold()
        # Every record in the span matches: the total is its length (a million pins are
        # counted without looking at each).
        unfiltered = (
            all_statuses and not self._dead and f.cids is None and f.name is None and f.meta is None
        )
        total, page = 0, []
        for i in span:
            rec = self._order[i]
            if not rec.alive:
                continue
            pin = rec.pin
            if f.cids is not None and pin["cid"] not in f.cids:
                continue
            if f.name is not None and not _name_matches(pin.get("name"), f.name, needle, f.match):
                continue
            if f.meta is not None:
                meta = pin.get("meta") or {}
                if any(meta.get(k) != v for k, v in f.meta.items()):
                    continue
            if not all_statuses and self._status_of(rec, now) not in f.statuses:
                continue
            total += 1
            if len(page) < f.limit:
                page.append(rec)
            elif self.count_mode == "page":
                break  # the count is the page length: nothing more to look at
            elif unfiltered:
                total = len(span)
                break
        results = [self._pin_status(r, now) for r in page]
        count = total if self.count_mode == "total" else len(results)
        return {"count": count, "results": results}


def _operation(method: str, path: str) -> str:
    if path == "/pins":
        return {"POST": "add", "GET": "list"}.get(method, "other")
    if path.startswith("/pins/") and "/" not in path[6:]:
        return {"GET": "get", "POST": "replace", "DELETE": "delete"}.get(method, "other")
    return "other"


def _check_meta(value: Any, what: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise _Failure(400, f"{what} must be a JSON object of strings")
    if len(value) > 1000:
        raise _Failure(400, f"{what} has more than 1000 keys")
    return value


def _name_matches(name: str | None, wanted: str, needle: str | None, match: str) -> bool:
    if name is None:
        return False
    if match == "exact":
        return name == wanted
    if match == "partial":
        return wanted in name
    folded = name.casefold()
    return folded == needle if match == "iexact" else needle is not None and needle in folded


# ---------------------------------------------------------------------- standalone mode


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tests.fake_psa", description=(__doc__ or "").split("\n")[0]
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--token", default=None, help="Bearer token (default: no auth)")
    p.add_argument("--base-path", default="")
    p.add_argument("--transition-after", type=float, default=None)
    p.add_argument("--fail-cids-file", default=None)
    p.add_argument("--order", choices=("newest_first", "oldest_first"), default="newest_first")
    p.add_argument("--count-mode", choices=("total", "page"), default="total")
    p.add_argument("--inclusive-before", action="store_true")
    p.add_argument("--default-all-statuses", action="store_true")
    p.add_argument("--requestid-is-cid", action="store_true")
    p.add_argument("--ignore-limit-over", type=int, default=None)
    return p.parse_args(argv)


async def _serve_forever(args: argparse.Namespace) -> None:
    svc = FakePinningService(
        args.token,
        host=args.host,
        port=args.port,
        base_path=args.base_path,
        transition_after=args.transition_after,
        fail_cids_file=args.fail_cids_file,
        order=args.order,
        count_mode=args.count_mode,
        inclusive_before=args.inclusive_before,
        default_all_statuses=args.default_all_statuses,
        requestid_is_cid=args.requestid_is_cid,
        ignore_limit_over=args.ignore_limit_over,
    )
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    async with svc:
        print(json.dumps({"port": svc.port}), flush=True)
        await done.wait()


def main(argv: Sequence[str] | None = None) -> None:
    asyncio.run(_serve_forever(_parse_args(argv)))


if __name__ == "__main__":
    main()
