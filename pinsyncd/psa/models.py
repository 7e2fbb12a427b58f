"""The wire types of the IPFS Pinning Service API v1.0.0 (spec/ipfs-pinning-service.yaml)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

MAX_NAME_BYTES = 255  # Pin.name maxLength; Kubo enforces the same limit in bytes
MAX_ORIGINS = 20
MAX_CIDS_PER_QUERY = 10  # GET /pins `cid` maxItems
MAX_PAGE_SIZE = 1000  # GET /pins `limit` maximum


class Status(StrEnum):
    QUEUED = "queued"
    PINNING = "pinning"
    PINNED = "pinned"
    FAILED = "failed"


ALL_STATUSES: tuple[Status, ...] = tuple(Status)
PENDING_STATUSES: tuple[Status, ...] = (Status.QUEUED, Status.PINNING)


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _strings(value: Any) -> Any:
    """Spec says string values; some servers send numbers. Keep them, as strings."""
    if isinstance(value, dict):
        return {str(k): v if isinstance(v, str) else str(v) for k, v in value.items()}
    return value


def _none_as_empty_list(value: Any) -> Any:
    return [] if value is None else value


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]
StringMap = Annotated[dict[str, str], BeforeValidator(_strings)]


class _Wire(BaseModel):
    # Unknown fields are ignored: servers add their own, and the spec allows it.
    model_config = ConfigDict(extra="ignore", frozen=True)


class Pin(_Wire):
    """What to pin: `cid` plus optional name, origins (provider hints) and meta."""

    cid: str = Field(min_length=1)
    name: str | None = None
    # default_factory, not `= []`: pydantic deep-copies a mutable default for every instance,
    # which was half the cost of validating a page of 1000 pin statuses.
    origins: Annotated[list[str], BeforeValidator(_none_as_empty_list)] = Field(
        default_factory=list
    )
    meta: Annotated[StringMap, BeforeValidator(lambda v: {} if v is None else v)] = Field(
        default_factory=dict
    )

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

    requestid: str = Field(min_length=1)
    status: Status
    created: UtcDatetime
    pin: Pin
    # Required by the spec (minItems 1), but ipfs-cluster and others may send [] or omit it.
    delegates: Annotated[list[str], BeforeValidator(_none_as_empty_list)] = Field(
        default_factory=list
    )
    info: Annotated[StringMap, BeforeValidator(lambda v: {} if v is None else v)] = Field(
        default_factory=dict
    )


class PinResults(_Wire):
    """One page of `GET /pins`."""

    count: int = Field(ge=0)
    results: list[PinStatus]


class FailureError(_Wire):
    reason: str
    details: str | None = None


class Failure(_Wire):
    """The error body every operation may answer with."""

    error: FailureError


def clip_name(name: str, limit: int = MAX_NAME_BYTES) -> str:
    """`name` cut to at most `limit` UTF-8 bytes, never in the middle of a character."""
    encoded = name.encode("utf-8")
    if len(encoded) <= limit:
        return name
    return encoded[:limit].decode("utf-8", errors="ignore")


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 with microseconds and `Z`, as `before`/`after` query values."""
    return _as_utc(moment).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
