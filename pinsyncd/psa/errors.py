"""Typed errors for Pinning Service API calls, built from the HTTP answer or the network fault.

Callers decide by type: `Unauthorized` and `InsufficientFunds` pause a service, `RateLimited`
waits `retry_after`, `ServerError`/`NetworkError`/`MalformedResponse` are retried with backoff,
`NotFound` means the pin is gone. `NetworkError.maybe_applied` says whether the request may
have reached the service (an add whose answer was lost must be looked up before re-adding).
"""

from __future__ import annotations

import contextlib
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


def retry_after_seconds(headers: CIMultiDictProxy[str], now: float | None = None) -> float | None:
    """Seconds to wait from `Retry-After` (seconds or HTTP-date) or `X-RateLimit-Reset`
    (a Unix time, or seconds when small), whichever asks for the longer wait."""
    now = time.time() if now is None else now
    waits: list[float] = []
    retry_after = headers.get("Retry-After", "").strip()
    if retry_after:
        try:
            waits.append(float(retry_after))  # delta-seconds (decimals tolerated)
        except ValueError:
            with contextlib.suppress(TypeError, ValueError, IndexError):
                waits.append(parsedate_to_datetime(retry_after).timestamp() - now)
    reset = headers.get("X-RateLimit-Reset", "").strip()
    if reset:
        try:
            value = float(reset)
        except ValueError:
            value = None
        if value is not None:
            # Pinata sends a Unix time; some services send seconds from now.
            waits.append(value - now if value > 1_000_000_000 else value)
    if not waits:
        return None
    return max(0.0, max(waits))
