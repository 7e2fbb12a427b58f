"""What `pinsyncd serve` reads from and writes to the wire, as the IPFS Pinning Service API
v1.0.0 says: a `Pin` checked field by field, the query of `GET /pins` checked parameter by
parameter (every mistake a 400 that names it), and a stored request as a `PinStatus`.
No I/O here: the HTTP layer hands text in and gets plain data back."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from multidict import MultiMapping

from pinsyncd.cids import InvalidCIDError, cid_forms

STATUSES = ("queued", "pinning", "pinned", "failed")
MATCHES = ("exact", "iexact", "partial", "ipartial")
MAX_NAME = 255  # Pin.name and the name filter: maxLength 255
MAX_ORIGINS = 20
MAX_META = 1000  # PinMeta: maxProperties
MAX_CID_FILTERS = 10
MAX_LIMIT = 1000
DEFAULT_LIMIT = 10

Match = Literal["exact", "iexact", "partial", "ipartial"]


class Refusal(Exception):
    """A request answered with the spec's `Failure`: its HTTP status, reason and details."""

    def __init__(self, status: int, reason: str, details: str) -> None:
        super().__init__(details)
        self.status = status
        self.reason = reason
        self.details = details


class BadRequest(Refusal):
    """A request the spec does not allow: 400, saying what is wrong."""

    def __init__(self, details: str) -> None:
        super().__init__(400, "BAD_REQUEST", details)


@dataclass(frozen=True)
class Pin:
    """A pin request's object as the client sent it (checked), and the key of its content:
    the CID as CIDv1, so that the same DAG asked for as v0 and as v1 is one pin in Kubo."""

    cid: str
    key: str
    name: str | None = None
    origins: tuple[str, ...] = ()
    meta: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Query:
    """The filters of `GET /pins`, checked; `statuses` defaults to `pinned` (the spec)."""

    keys: tuple[str, ...] = ()
    name: str | None = None
    match: Match = "exact"
    statuses: tuple[str, ...] = ("pinned",)
    before_us: int | None = None  # microseconds since the epoch, strict
    after_us: int | None = None
    limit: int = DEFAULT_LIMIT
    meta: Mapping[str, str] = field(default_factory=dict)


def content_key(cid: str) -> str:
    """The CIDv1 (base32) of `cid`; raises BadRequest when it is not a CID."""
    try:
        forms = cid_forms(cid)
    except InvalidCIDError as exc:
        raise BadRequest(str(exc)) from None
    return next(form for form in forms if form.startswith("b"))  # cid_forms adds the v1


def parse_pin(body: bytes) -> Pin:
    """A `Pin` from a request body; BadRequest says which field is wrong and why."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest('the body is not JSON: send a Pin, e.g. {"cid": "bafy..."}') from None
    if not isinstance(data, dict):
        raise BadRequest('the body must be a Pin object, e.g. {"cid": "bafy..."}')
    cid = data.get("cid")
    if not isinstance(cid, str) or not cid.strip():
        raise BadRequest("cid is required: the CID to pin, as a string")
    name = data.get("name")
    if name is not None:
        if not isinstance(name, str):
            raise BadRequest("name must be a string")
        if len(name) > MAX_NAME:
            raise BadRequest(f"name is {len(name)} characters long; at most {MAX_NAME}")
    return Pin(
        cid=cid.strip(),
        key=content_key(cid),
        name=name,
        origins=_origins(data.get("origins")),
        meta=_meta(data.get("meta"), "meta"),
    )


def _origins(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise BadRequest("origins must be a list of multiaddrs (strings)")
    if len(value) > MAX_ORIGINS:
        raise BadRequest(f"origins has {len(value)} addresses; at most {MAX_ORIGINS}")
    if len(set(value)) != len(value):
        raise BadRequest("origins lists an address twice")
    return tuple(value)


def _meta(value: object, what: str) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise BadRequest(f"{what} must be an object whose values are strings")
    if len(value) > MAX_META:
        raise BadRequest(f"{what} has {len(value)} keys; at most {MAX_META}")
    return dict(value)


def _listed(query: MultiMapping[str], key: str) -> list[str]:
    """A form-style array (`?status=queued,pinning`), also when repeated (`&status=...`)."""
    items: list[str] = []
    for value in query.getall(key, ()):
        items += [part.strip() for part in value.split(",") if part.strip()]
    return items


def parse_query(query: MultiMapping[str]) -> Query:
    """The filters of `GET /pins`; BadRequest names the parameter that is wrong."""
    cids = list(dict.fromkeys(_listed(query, "cid")))
    if "cid" in query and not cids:
        raise BadRequest("cid is empty: give 1 to 10 CIDs, separated by commas")
    if len(cids) > MAX_CID_FILTERS:
        raise BadRequest(f"cid lists {len(cids)} CIDs; at most {MAX_CID_FILTERS}")
    statuses = list(dict.fromkeys(_listed(query, "status")))
    if "status" in query and not statuses:
        raise BadRequest(f"status is empty: give one or more of {', '.join(STATUSES)}")
    if unknown := [s for s in statuses if s not in STATUSES]:
        raise BadRequest(f"status {unknown[0]!r} is not one of {', '.join(STATUSES)}")
    name = query.get("name")
    if name is not None and len(name) > MAX_NAME:
        raise BadRequest(f"name is {len(name)} characters long; at most {MAX_NAME}")
    match = query.get("match", "exact")
    if match not in MATCHES:
        raise BadRequest(f"match {match!r} is not one of {', '.join(MATCHES)}")
    return Query(
        keys=tuple(dict.fromkeys(content_key(c) for c in cids)),
        name=name,
        match=match,  # type: ignore[arg-type]  # checked just above
        statuses=tuple(statuses) or ("pinned",),
        before_us=_time(query, "before"),
        after_us=_time(query, "after"),
        limit=_limit(query.get("limit")),
        meta=_meta_filter(query.get("meta")) or {},
    )


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    try:
        limit = int(text)
    except ValueError:
        raise BadRequest(f"limit {text!r} is not a whole number") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit is {limit}; it must be 1 to {MAX_LIMIT}")
    return limit


def _meta_filter(text: str | None) -> dict[str, str] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        raise BadRequest('meta is not JSON: give an object, e.g. meta={"app_id":"99"}') from None
    return _meta(value, "meta")


def _time(query: MultiMapping[str], key: str) -> int | None:
    text = query.get(key)
    if text is None:
        return None
    try:
        return parse_time(text)
    except ValueError:
        raise BadRequest(
            f"{key} {text!r} is not an RFC 3339 time, e.g. 2020-07-27T17:32:28.276Z"
        ) from None


def parse_time(text: str) -> int:
    """Microseconds since the epoch of an RFC 3339 time (any number of fraction digits)."""
    raw = text.strip()
    if "T" not in raw.upper():
        raise ValueError(text)
    date, _, rest = raw.replace("t", "T").partition("T")
    zone = ""
    for mark in ("Z", "z", "+", "-"):
        if mark in rest:
            at = rest.index(mark)
            rest, zone = rest[:at], rest[at:]
            break
    if not zone:
        raise ValueError(text)  # RFC 3339 requires the offset
    clock, _, fraction = rest.partition(".")
    if fraction and not fraction.isdigit():
        raise ValueError(text)
    micros = int((fraction + "000000")[:6]) if fraction else 0
    zone = "+00:00" if zone in ("Z", "z") else zone
    moment = datetime.fromisoformat(f"{date}T{clock}{zone}")
    return int(moment.timestamp()) * 1_000_000 + micros


def format_time(millis: int) -> str:
    """`created`: RFC 3339 in UTC with milliseconds, as the spec's example."""
    moment = datetime.fromtimestamp(millis / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis % 1000:03d}Z"


def failure(reason: str, details: str) -> dict[str, Any]:
    """The spec's `Failure` object."""
    return {"error": {"reason": reason, "details": details}}


def pin_object(pin: Pin) -> dict[str, Any]:
    """The `Pin` as the client sent it (a field it left out stays out)."""
    out: dict[str, Any] = {"cid": pin.cid}
    if pin.name is not None:
        out["name"] = pin.name
    if pin.origins:
        out["origins"] = list(pin.origins)
    if pin.meta is not None:
        out["meta"] = dict(pin.meta)
    return out


def pin_status(
    requestid: str,
    status: str,
    created_ms: int,
    pin: Pin,
    delegates: Sequence[str],
    details: str | None,
) -> dict[str, Any]:
    """A `PinStatus`: `info.status_details` says why a pin waits or failed."""
    return {
        "requestid": requestid,
        "status": status,
        "created": format_time(created_ms),
        "pin": pin_object(pin),
        "delegates": list(delegates),
        "info": {"status_details": details} if details else {},
    }
