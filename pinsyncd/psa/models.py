"""The wire types of the IPFS Pinning Service API v1.0.0 (spec/ipfs-pinning-service.yaml)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
)

from pinsyncd.spec_limits import MAX_NAME_BYTES as MAX_NAME_BYTES  # re-exported
from pinsyncd.spec_limits import MAX_ORIGINS as MAX_ORIGINS  # re-exported
from pinsyncd.spec_limits import clip_name as clip_name  # re-exported

MAX_CIDS_PER_QUERY = 10  # GET /pins `cid` maxItems
MAX_PAGE_SIZE = 1000  # GET /pins `limit` maximum
MAX_REQUESTID_BYTES = 1024  # longer is no id a service means to be addressed by
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)
"""`created` outside [EARLIEST, LATEST) is no clock's reading: the record is a bad one."""


class Status(StrEnum):
    QUEUED = "queued"
    PINNING = "pinning"
    PINNED = "pinned"
    FAILED = "failed"


ALL_STATUSES: tuple[Status, ...] = tuple(Status)
PENDING_STATUSES: tuple[Status, ...] = (Status.QUEUED, Status.PINNING)


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _in_range(value: datetime) -> datetime:
    value = _as_utc(value)
    if not EARLIEST <= value < LATEST:
        raise ValueError(f"{value.isoformat()} is before 1970 or after 2999")
    return value


def _requestid(value: str) -> str:
    if not value:
        raise ValueError("empty requestid")
    if len(value.encode("utf-8", errors="surrogatepass")) > MAX_REQUESTID_BYTES:
        raise ValueError(f"requestid longer than {MAX_REQUESTID_BYTES} bytes")
    return value


def _strings(value: Any) -> Any:
    """Spec says string values; some servers send numbers (or worse). Keep them, as text."""
    if isinstance(value, dict):
        return {str(k): v if isinstance(v, str) else str(v) for k, v in value.items()}
    return value


def _string_items(value: Any) -> Any:
    """A list of addresses (origins, delegates) pinsyncd only passes on: items that are not
    strings are dropped, and anything but a list is none at all. A server may echo junk that
    another client sent; it is no reason to skip the record."""
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, str)]


def _loose_name(value: Any) -> Any:
    """A name that is a number is kept as text; one that is neither is no name."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _loose_map(value: Any) -> Any:
    return _strings(value) if isinstance(value, dict) else {}


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]
Created = Annotated[datetime, AfterValidator(_in_range)]
RequestId = Annotated[str, AfterValidator(_requestid)]
StringMap = Annotated[dict[str, str], BeforeValidator(_strings)]

# What servers send as the spec says is checked by pydantic's core alone; only a value that
# fails that goes through the Python validators that keep what can be kept (`left_to_right`
# tries the union's members in order). Validating an add's answer: 10.6 -> 4 µs.
_FIRST_AS_SPECIFIED = Field(union_mode="left_to_right")
LooseName = Annotated[
    str | Annotated[str | None, BeforeValidator(_loose_name)] | None, _FIRST_AS_SPECIFIED
]
LooseStrings = Annotated[
    list[str] | Annotated[list[str], BeforeValidator(_string_items)], _FIRST_AS_SPECIFIED
]
LooseMap = Annotated[
    dict[str, str] | Annotated[StringMap, BeforeValidator(_loose_map)], _FIRST_AS_SPECIFIED
]


class _Wire(BaseModel):
    # Unknown fields are ignored: servers add their own, and the spec allows it.
    model_config = ConfigDict(extra="ignore", frozen=True)


class Pin(_Wire):
    """What to pin: `cid` plus optional name, origins (provider hints) and meta."""

    cid: str = Field(min_length=1)
    name: LooseName = None
    # default_factory, not `= []`: pydantic deep-copies a mutable default for every instance,
    # which was half the cost of validating a page of 1000 pin statuses.
    origins: LooseStrings = Field(default_factory=list)
    meta: LooseMap = Field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"cid": self.cid}
        if self.name is not None:
            body["name"] = self.name
        if self.origins:
            body["origins"] = self.origins[:MAX_ORIGINS]
        if self.meta:
            body["meta"] = self.meta
        return body


class PinStatus(_Wire):
    """A pin request as the service tracks it."""

    requestid: RequestId
    status: Status
    created: Created
    pin: Pin
    # Required by the spec (minItems 1), but ipfs-cluster and others may send [] or omit it.
    delegates: LooseStrings = Field(default_factory=list)
    info: LooseMap = Field(default_factory=dict)


class PinResults(_Wire):
    """One page of `GET /pins`. `skipped` counts records left out because they do not match
    the spec (see `parse_page`), and `skipped_cids` holds the `pin.cid` of each that has one
    (a request may exist for it); neither is on the wire."""

    count: int = Field(ge=0)
    results: list[PinStatus]
    _skipped: int = PrivateAttr(default=0)
    _skipped_cids: tuple[str, ...] = PrivateAttr(default=())
    _skipped_reason: str | None = PrivateAttr(default=None)

    @property
    def skipped(self) -> int:
        return self._skipped

    @property
    def skipped_cids(self) -> tuple[str, ...]:
        return self._skipped_cids

    @property
    def skipped_reason(self) -> str | None:
        """Why the first skipped record was skipped, in the validator's words."""
        return self._skipped_reason


class _RawPage(_Wire):
    count: int = Field(ge=0)
    results: list[Any]


def parse_page(payload: bytes) -> PinResults:
    """A page of `GET /pins`. A record that does not match the spec (an empty or absurd
    requestid, a `created` out of range, a missing field) is skipped and counted, so one bad
    record does not cost the whole listing. A page whose frame is wrong raises
    `ValidationError`."""
    try:
        return PinResults.model_validate_json(payload)
    except ValidationError:
        raw = _RawPage.model_validate_json(payload)  # the frame itself is wrong: raise
    good: list[PinStatus] = []
    cids: list[str] = []
    reason: str | None = None
    for index, record in enumerate(raw.results):
        try:
            good.append(PinStatus.model_validate(record))
        except ValidationError as exc:
            if reason is None:
                first = exc.errors()[0]
                where = ".".join(str(part) for part in first["loc"])
                reason = f"results.{index}.{where}: {first['msg']}"[:200]
            pin = record.get("pin") if isinstance(record, dict) else None
            cid = pin.get("cid") if isinstance(pin, dict) else None
            if isinstance(cid, str) and cid:
                cids.append(cid)
    page = PinResults(count=raw.count, results=good)
    page._skipped = len(raw.results) - len(good)
    page._skipped_cids = tuple(cids)
    page._skipped_reason = reason
    return page


class FailureError(_Wire):
    reason: str
    details: str | None = None


class Failure(_Wire):
    """The error body every operation may answer with."""

    error: FailureError


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 with microseconds and `Z`, as `before`/`after` query values."""
    return _as_utc(moment).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
