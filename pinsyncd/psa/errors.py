"""Typed errors for Pinning Service API calls, built from the HTTP answer or the network fault.

Callers decide by type: `Unauthorized` and `InsufficientFunds` pause a service, `RateLimited`
waits `retry_after`, `ServerError`/`NetworkError`/`MalformedResponse` are retried with backoff,
`NotFound` means the pin is gone. `NetworkError.maybe_applied` says whether the request may
have reached the service (an add whose answer was lost must be looked up before re-adding).
"""

from __future__ import annotations

import contextlib
import math
import time
from email.utils import parsedate_to_datetime
from typing import ClassVar

from multidict import CIMultiDictProxy


class PinningServiceError(Exception):
    """A call to a pinning service failed."""

    transient: ClassVar[bool] = False

    def __init__(
        self,
        service: str,
        operation: str,
        message: str,
        *,
        status: int | None = None,
        reason: str | None = None,
        details: str | None = None,
    ) -> None:
        self.service = service
        self.operation = operation
        self.status = status
        self.reason = reason
        self.details = details
        super().__init__(f"{service}: {operation}: {message}")


class Unauthorized(PinningServiceError):
    """401/403: the token is missing, wrong or revoked."""


class TokenUnavailable(Unauthorized):
    """The token could not be read (its file or variable is missing): nothing was sent."""


class NotFound(PinningServiceError):
    """404: no such pin request (it was removed, replaced or never existed)."""


class InsufficientFunds(PinningServiceError):
    """409 INSUFFICIENT_FUNDS: the account cannot pay for more pins."""


class BadRequest(PinningServiceError):
    """400: the service rejected the request as malformed."""


class ClientError(PinningServiceError):
    """Another 4xx (the spec's CustomServiceError)."""


class RateLimited(PinningServiceError):
    """429: slow down; `retry_after` is the seconds to wait, if the service said."""

    transient = True

    def __init__(self, *args: object, retry_after: float | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after


class ServerError(PinningServiceError):
    """5xx: the service failed."""

    transient = True


class NetworkError(PinningServiceError):
    """No usable answer: refused, reset, timed out. `maybe_applied` is False only when the
    request cannot have reached the service (the connection was never made)."""

    transient = True

    def __init__(self, *args: object, maybe_applied: bool = True, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.maybe_applied = maybe_applied


class MalformedResponse(PinningServiceError):
    """The answer is not what the spec says (bad JSON, missing or wrong fields)."""

    transient = True


class NotSent(PinningServiceError):
    """The request was abandoned before it was sent (the daemon is stopping)."""


class RedirectRefused(PinningServiceError):
    """A redirect to another origin: the token is never sent there."""


_BY_STATUS: dict[int, type[PinningServiceError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Unauthorized,
    404: NotFound,
    409: InsufficientFunds,
    429: RateLimited,
}


def error_class_for(status: int) -> type[PinningServiceError]:
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    return ServerError if status >= 500 else ClientError


MAX_WAIT = 3600.0
"""The longest wait a server can impose at once (the daemon passes `retry.cap`): past it,
pinsyncd asks again, and a server that still wants a wait says so then."""


def retry_after_seconds(
    headers: CIMultiDictProxy[str], now: float | None = None, *, cap: float = MAX_WAIT
) -> float | None:
    """Seconds to wait from `Retry-After` (seconds or HTTP-date) or `X-RateLimit-Reset` (a
    Unix time in seconds or milliseconds, or seconds from now when small), whichever asks
    for the longer wait, at most `cap`. A value that is not a finite number or a date (NaN,
    infinity) is ignored, as if the header were absent."""
    now = time.time() if now is None else now
    waits: list[float] = []
    retry_after = headers.get("Retry-After", "").strip()
    if retry_after:
        seconds = _number(retry_after)
        if seconds is None:
            with contextlib.suppress(TypeError, ValueError, IndexError, OverflowError):
                seconds = parsedate_to_datetime(retry_after).timestamp() - now
        if seconds is not None:
            waits.append(seconds)
    reset = _number(headers.get("X-RateLimit-Reset", "").strip())
    if reset is not None:
        if reset > 1e12:  # a Unix time in milliseconds
            reset = reset / 1000 - now
        elif reset > 1e9:  # a Unix time in seconds (Pinata)
            reset -= now
        waits.append(reset)  # else seconds from now
    if not waits:
        return None
    return min(cap, max(0.0, max(waits)))


def _number(text: str) -> float | None:
    """A finite decimal number, or None (NaN, infinity, garbage, nothing)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
