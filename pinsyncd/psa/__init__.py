"""The IPFS Pinning Service API v1.0.0: wire types, typed errors, the client and the pager."""

from pinsyncd.cids import same_content
from pinsyncd.psa.client import PinningServiceClient, addressable
from pinsyncd.psa.errors import (
    BadRequest,
    ClientError,
    InsufficientFunds,
    MalformedResponse,
    NetworkError,
    NotFound,
    NotSent,
    PinningServiceError,
    RateLimited,
    RedirectRefused,
    ServerError,
    TokenUnavailable,
    Unauthorized,
)
from pinsyncd.psa.models import (
    ALL_STATUSES,
    PENDING_STATUSES,
    Pin,
    PinResults,
    PinStatus,
    Status,
    clip_name,
)
from pinsyncd.psa.pager import ListingReport, find_pins, iter_pins

__all__ = [
    "ALL_STATUSES",
    "PENDING_STATUSES",
    "BadRequest",
    "ClientError",
    "InsufficientFunds",
    "ListingReport",
    "MalformedResponse",
    "NetworkError",
    "NotFound",
    "NotSent",
    "Pin",
    "PinResults",
    "PinStatus",
    "PinningServiceClient",
    "PinningServiceError",
    "RateLimited",
    "RedirectRefused",
    "ServerError",
    "Status",
    "TokenUnavailable",
    "Unauthorized",
    "addressable",
    "clip_name",
    "find_pins",
    "iter_pins",
    "same_content",
]
