"""An HTTP client for one IPFS Pinning Service API v1.0.0 service: the five operations.

One connection pool (`pinsyncd.psa.wire`) per service. Bearer auth; the token is never logged,
never put in an error message, and never sent to another origin: redirects are followed by
hand, only to the same scheme, host and port.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Self, TypeVar, overload
from urllib.parse import quote

from multidict import CIMultiDictProxy
from pydantic import BaseModel, ValidationError
from yarl import URL

from pinsyncd import __version__, clock
from pinsyncd.cids import same_content
from pinsyncd.durations import format_duration
from pinsyncd.logs import register_secrets
from pinsyncd.psa.errors import (
    MAX_WAIT,
    MalformedResponse,
    NetworkError,
    NotSent,
    PinningServiceError,
    RateLimited,
    RedirectRefused,
    ServerError,
    TokenUnavailable,
    Unauthorized,
    error_class_for,
    retry_after_seconds,
)
from pinsyncd.psa.models import (
    MAX_CIDS_PER_QUERY,
    MAX_PAGE_SIZE,
    Failure,
    Pin,
    PinResults,
    PinStatus,
    Status,
    format_timestamp,
    parse_page,
)
from pinsyncd.psa.wire import Pool, TooLarge, WireError
from pinsyncd.throttle import INLINE_WAIT, Blocked, Interrupted, Throttle
from pinsyncd.tokens import Token, TokenError, TokenSource

_Model = TypeVar("_Model", bound=BaseModel)
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 5
MAX_ANSWER = 32 * 1024 * 1024
"""The largest answer read from a service: a page of 1,000 statuses is a few MB. A listing
asked for in one page (over the spec's limit) may be larger: `PER_PIN` bytes per pin asked."""
PER_PIN = 8 * 1024
MAX_LISTING_ANSWER = 256 * 1024 * 1024  # whatever `limit` was asked for
MAX_ERROR_BODY = 64 * 1024
"""An error's body is only for its message: the rest is not read."""
USER_AGENT = f"pinsyncd/{__version__}"


class PinningServiceClient:
    """Calls one service. The constructor does no I/O; `close()` may be called twice."""

    def __init__(
        self,
        name: str,
        endpoint: str,
        token: Token,
        *,
        timeout: float = 30.0,
        connections: int = 8,
        ssl_context: ssl.SSLContext | None = None,
        throttle: Throttle | None = None,
        read_retries: int = 2,
        max_inline_wait: float = INLINE_WAIT,
        max_wait: float = MAX_WAIT,
    ) -> None:
        self.name = name
        self.throttle = throttle or Throttle()
        self.on_rate_limited: Callable[[float], Awaitable[None]] | None = None
        """Called with the (Unix) time before which nothing may be sent, after every 429."""
        self.on_request: Callable[[str, BaseException | None], None] | None = None
        """Called after every request sent: (operation, the error or None); for metrics."""
        self.on_retry: Callable[[str], None] | None = None
        self._read_retries = read_retries
        self._max_inline_wait = max_inline_wait
        self._max_wait = max_wait
        self.endpoint = URL(endpoint.rstrip("/"))
        self._token = token
        self._timeout = timeout
        self._connections = connections
        self._ssl_context = ssl_context
        self._pool: Pool | None = None
        self._pins = self.endpoint.joinpath("pins")  # every add and list
        self.requests: Counter[str] = Counter()
        """Requests sent, by operation (`list`, `add`, `get`, `replace`, `delete`)."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
        self._pool = None

    # --- the five operations ----------------------------------------------------------------

    async def list_pins(
        self,
        *,
        cids: Sequence[str] | None = None,
        name: str | None = None,
        match: str | None = None,
        statuses: Iterable[Status] | None = None,
        before: datetime | None = None,
        after: datetime | None = None,
        limit: int | None = None,
        meta: Mapping[str, str] | None = None,
        over_spec_limit: bool = False,
    ) -> PinResults:
        """One page of `GET /pins`, exactly as asked (see `pinsyncd.psa.pager` for all pages).
        `over_spec_limit` allows a `limit` above the spec's 1000, for servers whose order
        defeats paging (ipfs-cluster accepts any limit)."""
        params: list[tuple[str, str]] = []
        if cids:
            if len(cids) > MAX_CIDS_PER_QUERY:
                raise ValueError(f"at most {MAX_CIDS_PER_QUERY} CIDs per query")
            params.append(("cid", ",".join(cids)))
        if name is not None:
            params.append(("name", name))
        if match is not None:
            params.append(("match", match))
        if statuses is not None:
            params.append(("status", ",".join(Status(s).value for s in statuses)))
        if before is not None:
            params.append(("before", format_timestamp(before)))
        if after is not None:
            params.append(("after", format_timestamp(after)))
        if limit is not None:
            if limit < 1 or (limit > MAX_PAGE_SIZE and not over_spec_limit):
                raise ValueError(f"limit must be 1..{MAX_PAGE_SIZE}")
            params.append(("limit", str(limit)))
        if meta:
            params.append(("meta", json.dumps(dict(meta), separators=(",", ":"))))
        most = min(max(MAX_ANSWER, (limit or 0) * PER_PIN), MAX_LISTING_ANSWER)
        return await self._call("list", "GET", ("pins",), PinResults, params=params, max_bytes=most)

    async def add_pin(self, pin: Pin) -> PinStatus:
        """`POST /pins`: ask the service to pin; it answers with a new request."""
        return await self._call("add", "POST", ("pins",), PinStatus, body=pin.to_json())

    async def get_pin(self, requestid: str) -> PinStatus:
        return await self._call("get", "GET", _request_path(requestid), PinStatus)

    async def replace_pin(self, requestid: str, pin: Pin) -> PinStatus:
        """`POST /pins/{requestid}`: atomically replace a request (new requestid).

        A service that uses the CID as the requestid (ipfs-cluster) cannot replace a request
        with one for the same content: it pins the new CID, then unpins the old one, which is
        the same pin, and answers `queued` for a pin that is gone (docs/cluster.md). Such a
        service keeps one request per CID, and `POST /pins` for a CID it has means "pin it
        again" (same requestid, the new name, origins and meta, a fresh attempt). So that is
        what a replace of a request by its own content sends."""
        if same_content(requestid, pin.cid):
            return await self._call("replace", "POST", ("pins",), PinStatus, body=pin.to_json())
        path = _request_path(requestid)
        return await self._call("replace", "POST", path, PinStatus, body=pin.to_json())

    async def delete_pin(self, requestid: str) -> None:
        await self._call("delete", "DELETE", _request_path(requestid), None)

    # --- plumbing ---------------------------------------------------------------------------

    def _pool_for_call(self) -> Pool:
        if self._pool is None:
            self._pool = Pool(
                self.endpoint,
                connections=self._connections,
                connect_timeout=min(self._timeout, 10.0),
                ssl_context=self._ssl_context,
            )
        return self._pool

    @overload
    async def _call(
        self,
        operation: str,
        method: str,
        path: tuple[str, ...],
        model: type[_Model],
        *,
        params: list[tuple[str, str]] | None = None,
        body: dict[str, Any] | None = None,
        max_bytes: int = MAX_ANSWER,
    ) -> _Model: ...

    @overload
    async def _call(
        self,
        operation: str,
        method: str,
        path: tuple[str, ...],
        model: None,
        *,
        params: list[tuple[str, str]] | None = None,
        body: dict[str, Any] | None = None,
        max_bytes: int = MAX_ANSWER,
    ) -> None: ...

    async def _call(
        self,
        operation: str,
        method: str,
        path: tuple[str, ...],
        model: type[_Model] | None,
        *,
        params: list[tuple[str, str]] | None = None,
        body: dict[str, Any] | None = None,
        max_bytes: int = MAX_ANSWER,
    ) -> Any:
        url = self._pins if path == ("pins",) else self.endpoint.joinpath(*path, encoded=True)
        if params:
            url = url.with_query(params)
        # Reads are idempotent: a transient failure is retried a couple of times at once.
        tries = 1 + (self._read_retries if method == "GET" else 0)
        for attempt in range(tries):
            try:
                return await self._call_once(operation, method, url, model, body, max_bytes)
            except (RateLimited, ServerError, NetworkError, MalformedResponse):
                if attempt + 1 >= tries:
                    raise
                if self.on_retry is not None:
                    self.on_retry(operation)
                await asyncio.sleep(random.uniform(0, 0.25 * 2**attempt))
        raise AssertionError("unreachable")

    async def _call_once(
        self,
        operation: str,
        method: str,
        url: URL,
        model: type[_Model] | None,
        body: dict[str, Any] | None,
        max_bytes: int,
    ) -> Any:
        try:
            await self.throttle.acquire(self._max_inline_wait)
        except Blocked as blocked:
            raise RateLimited(
                self.name,
                operation,
                f"not sent: the service asked to wait {blocked.seconds:.0f}s more",
                retry_after=blocked.seconds,
            ) from None
        except Interrupted:
            raise NotSent(self.name, operation, "not sent: stopping") from None
        self.requests[operation] += 1
        outcome: BaseException | None = None
        try:
            return await self._exchange(operation, method, url, model, body, max_bytes)
        except BaseException as exc:
            outcome = exc
            raise
        finally:
            if self.on_request is not None:
                self.on_request(operation, outcome)

    async def _exchange(
        self,
        operation: str,
        method: str,
        url: URL,
        model: type[_Model] | None,
        body: dict[str, Any] | None,
        max_bytes: int,
    ) -> Any:
        status, headers, payload = await self._send(operation, method, url, body, max_bytes)
        if not 200 <= status < 300:
            error = self._error(operation, status, headers, payload)
            if isinstance(error, RateLimited):
                self.throttle.on_rate_limited(error.retry_after)
                if self.on_rate_limited is not None:  # e.g. written to the state at once
                    await self.on_rate_limited(clock.now() + self.throttle.blocked_for())
            raise error
        self.throttle.on_success()
        if model is None:
            return None
        try:
            if model is PinResults:
                return parse_page(payload)
            return model.model_validate_json(payload)
        except ValidationError as exc:
            raise MalformedResponse(
                self.name, operation, _describe_invalid(exc, payload), status=status
            ) from None

    async def _send(
        self,
        operation: str,
        method: str,
        url: URL,
        body: dict[str, Any] | None,
        max_bytes: int,
    ) -> tuple[int, CIMultiDictProxy[str], bytes]:
        """The answer's status, headers and body: never more than `max_bytes` of a success's
        body (a larger one is refused as it arrives), the first `MAX_ERROR_BODY` bytes of an
        error's. Redirects are followed only within the endpoint's origin."""
        pool = self._pool_for_call()
        headers = [
            ("Authorization", f"Bearer {self._reveal_token(operation)}"),
            ("Accept", "application/json"),
            ("User-Agent", USER_AGENT),
        ]
        data = None
        if body is not None:
            headers.append(("Content-Type", "application/json"))
            data = json.dumps(body, separators=(",", ":")).encode()
        for _hop in range(_MAX_REDIRECTS + 1):
            try:
                answer = await pool.request(
                    method,
                    url,
                    headers,
                    data,
                    within=self._timeout,
                    limit=max_bytes,
                    error_limit=MAX_ERROR_BODY,
                )
            except TooLarge as exc:
                raise self._too_large(operation, exc.status, exc.size, max_bytes) from None
            except WireError as exc:
                raise NetworkError(
                    self.name, operation, exc.reason, maybe_applied=exc.sent
                ) from None
            if answer.status not in _REDIRECTS:
                return answer.status, answer.headers, answer.body
            url = self._follow(operation, method, url, answer.status, answer.headers)
        raise RedirectRefused(self.name, operation, f"more than {_MAX_REDIRECTS} redirects")

    def _too_large(self, operation: str, status: int, size: str, limit: int) -> MalformedResponse:
        return MalformedResponse(
            self.name,
            operation,
            f"the answer is too large ({size}; at most {limit // 2**20} MiB is read)",
            status=status,
        )

    def _reveal_token(self, operation: str) -> str:
        """The token, read from its file or variable the first time a request needs it."""
        token = self._token
        if isinstance(token, TokenSource) and not token.loaded:
            try:
                token.load()
            except TokenError as exc:
                raise TokenUnavailable(
                    self.name, operation, f"the token cannot be read: {exc}"
                ) from None
            register_secrets([token])
        return token.reveal()

    def _follow(
        self,
        operation: str,
        method: str,
        url: URL,
        status: int,
        headers: CIMultiDictProxy[str],
    ) -> URL:
        location = headers.get("Location")
        if not location:
            text = f"HTTP {status} without a Location header"
            raise MalformedResponse(self.name, operation, text)
        target = url.join(URL(location))
        if (target.scheme, target.host, target.port) != (url.scheme, url.host, url.port):
            raise RedirectRefused(
                self.name,
                operation,
                f"redirected to another origin ({target.scheme}://{target.host}:{target.port}); "
                "the token is not sent there. Fix the endpoint in the config",
                status=status,
            )
        if status in (301, 302, 303) and method != "GET":
            raise RedirectRefused(
                self.name,
                operation,
                f"HTTP {status} redirect for {method} (would become GET); "
                "fix the endpoint in the config",
                status=status,
            )
        return target

    def _error(
        self, operation: str, status: int, headers: CIMultiDictProxy[str], payload: bytes
    ) -> PinningServiceError:
        reason: str | None = None
        details: str | None = None
        try:
            failure = Failure.model_validate_json(payload)
            # A server may echo the header it got: the token never goes further than here.
            secret = self._token.reveal()
            reason = failure.error.reason.replace(secret, "***")
            details = _one_line(failure.error.details or "").replace(secret, "***")
        except ValidationError:
            pass
        text = f"HTTP {status}"
        if reason:
            text += f" {reason}"
        if details:
            text += f": {details}"
        elif reason is None and payload:
            text += " (the body is not a Failure JSON)"
        cls = error_class_for(status)
        kwargs: dict[str, Any] = {"status": status, "reason": reason, "details": details}
        if cls is Unauthorized:
            text = f"the token from {self._token.source} was refused ({text})"
        if cls is RateLimited:
            asked = retry_after_seconds(headers, cap=math.inf)
            if asked is not None and asked > self._max_wait:
                text += (
                    f" (it asks to wait {format_duration(asked)}: pinsyncd waits "
                    f"{format_duration(self._max_wait)}, then asks again)"
                )
                asked = self._max_wait
            kwargs["retry_after"] = asked
        return cls(self.name, operation, text, **kwargs)


def _request_path(requestid: str) -> tuple[str, str]:
    """`pins/{requestid}`, the id as one percent-encoded segment: a `/` or `%` in it stays
    inside, and `.` or `..` is sent as `%2E` or `%2E%2E`, which no URL library resolves as a
    dot segment (whether the server does is its own; see `addressable`)."""
    if not requestid:
        raise ValueError("empty requestid")
    segment = quote(requestid, safe="")
    if not segment.strip("."):
        segment = segment.replace(".", "%2E")
    return ("pins", segment)


_UNRESERVED = re.compile(r"[A-Za-z0-9._~-]+")


def addressable(requestid: str) -> bool:
    """Whether `pins/{requestid}` reaches the request on any server or proxy: only RFC 3986
    unreserved characters, and not a dot segment. UUIDs, CIDs and numbers are; an id with a
    `/`, a `%`, a space or only dots may be decoded or normalised on its way (so a 404 for
    it does not prove the request is gone)."""
    return bool(_UNRESERVED.fullmatch(requestid)) and bool(requestid.strip("."))


def _one_line(text: str, limit: int = 300) -> str:
    """The first line of a server's free text, bounded (the npm mock sends JS stack traces)."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _describe_invalid(exc: ValidationError, payload: bytes) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    if errors and errors[0]["type"] == "json_invalid":
        preview = _one_line(payload[:80].decode("utf-8", errors="replace"), 80)
        return f"the answer is not JSON ({preview!r})"
    parts = []
    for error in errors[:3]:
        loc = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{loc}: {error['msg']}")
    more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
    return "the answer does not match the spec: " + "; ".join(parts) + more
