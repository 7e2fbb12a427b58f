"""HTTP/1.1 to one pinning service: a few keep-alive connections, one request at a time on each.

An initial sync is tens of thousands of small POSTs, and on a fast link (loopback, the LAN to
one's own node) the client's CPU per request is what limits it. Measured here, a POST through
aiohttp's client costs about 116 µs of CPU, this about 40: the request is written as one
preformatted block and the answer is read by a parser that does only what this API needs.

What it speaks: `http` and `https` (the system's certificate authorities), answers framed by
`Content-Length`, by the chunked coding (`pinsyncd.chunked`) or by the end of the connection,
`1xx` interim answers skipped, keep-alive as RFC 9112 section 9.3 says. What it leaves out, on
purpose: proxies (the aiohttp client it replaces did not use them either), compression (no
`Accept-Encoding` is sent, so none comes), cookies, HTTP/2.

Every limit is enforced as bytes arrive: the head (`MAX_HEAD`), the body of a success and the
body of an error. A connection is reused only after an answer read exactly to its end; one
idle for `KEEP_IDLE` seconds is closed rather than reused, before any server's own keep-alive
timeout (Node's is 5 s) can close it under a request.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from pinsyncd.chunked import ChunkedDecoder, ChunkError

MAX_HEAD = 64 * 1024
"""Bytes an answer's status line and headers may take."""
KEEP_IDLE = 4.0
"""Seconds an idle connection is kept for the next request."""

_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([1-9][0-9]{2})(?: [^\r\n]*)?")
_BREAKS = re.compile(r"[\r\n\0]")
_NO_BODY = frozenset({204, 304})


class WireError(Exception):
    """No usable answer. `sent` is False only when the request cannot have reached the
    server (no connection was made)."""

    def __init__(self, reason: str, *, sent: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sent = sent


class TooLarge(WireError):
    """A success's body over the limit: not read further, the connection is dropped."""

    def __init__(self, status: int, size: str) -> None:
        super().__init__(f"the answer is too large ({size})")
        self.status = status
        self.size = size


class WireTimeout(WireError):
    """No (whole) answer within the request's time."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


class _Exchange:
    """The answer being read on a connection: head, then body, within the limits."""

    __slots__ = ("body", "done", "error_limit", "headers", "keep", "limit", "no_body", "status")

    def __init__(self, limit: int, error_limit: int, no_body: bool) -> None:
        self.done: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self.limit = limit
        self.error_limit = error_limit
        self.no_body = no_body
        self.status = 0
        self.headers: CIMultiDictProxy[str] | None = None
        self.keep = False
        self.body = bytearray()


class _Connection(asyncio.Protocol):
    """One socket. Bytes arrive in `data_received`; an answer is complete when its framing
    says so, and the connection is `reusable` only if nothing is left over or unread."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reusable = False
        self.idle_since = 0.0
        self._exchange: _Exchange | None = None
        self._buffer = bytearray()  # the head being read (or bytes nobody asked for)
        self._received = False  # any byte of the current answer
        self._length: int | None = None  # body bytes still to come (Content-Length)
        self._chunked: ChunkedDecoder | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        exchange = self._exchange
        if exchange is None or exchange.done.done():
            self.reusable = False  # bytes nobody asked for: this connection is not trusted
            return
        self._received = True
        try:
            if exchange.headers is None:
                self._buffer += data
                data = self._read_head(exchange)
                if exchange.done.done() and data:
                    self.reusable = False  # bytes after an answer without a body
                if exchange.headers is None or exchange.done.done():
                    return
            self._read_body(exchange, data)
        except WireError as error:
            self._fail(error)

    def eof_received(self) -> bool:
        exchange = self._exchange
        if exchange is not None and not exchange.done.done() and self._ends_with_close(exchange):
            self._finish(exchange, keep=False)  # the body ends with the connection
        return False  # close

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        exchange = self._exchange
        if exchange is not None and not exchange.done.done():
            if self._ends_with_close(exchange):
                self._finish(exchange, keep=False)
            elif self._received:
                self._fail(WireError("the answer was cut off"))
            else:
                self._fail(WireError("the connection was closed before an answer came"))

    def _ends_with_close(self, exchange: _Exchange) -> bool:
        return exchange.headers is not None and self._length is None and self._chunked is None

    # --- one request --------------------------------------------------------------------

    def start(self, request: bytes, limit: int, error_limit: int, no_body: bool) -> _Exchange:
        assert self.transport is not None
        self.reusable = False
        self._exchange = exchange = _Exchange(limit, error_limit, no_body)
        self._buffer.clear()
        self._received = False
        self._length = None
        self._chunked = None
        self.transport.write(request)
        return exchange

    def expire(self, exchange: _Exchange, within: float) -> None:
        """The request's time is up: its connection is closed, whatever comes later."""
        if self._exchange is exchange and not exchange.done.done():
            self._fail(WireTimeout(f"no answer within {within:g}s"))

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()

    # --- reading ------------------------------------------------------------------------

    def _read_head(self, exchange: _Exchange) -> bytes:
        """Parses heads from the buffer, skipping `1xx` ones; returns the bytes after the
        final head (the start of the body)."""
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD:
                    raise WireError(f"the answer's head is over {MAX_HEAD // 1024} KiB")
                return b""
            head = bytes(self._buffer[:end])
            del self._buffer[: end + 4]
            status, minor, headers = _parse_head(head)
            if 100 <= status < 200:
                if status == 101:
                    raise WireError("the server switched protocols (HTTP 101)")
                continue
            exchange.status = status
            exchange.headers = headers
            rest = bytes(self._buffer)
            self._buffer.clear()
            self._frame(exchange, minor, headers)
            return rest

    def _frame(self, exchange: _Exchange, minor: int, headers: CIMultiDictProxy[str]) -> None:
        """How the body ends (RFC 9112 section 6.3) and whether the connection may be
        reused after it."""
        tokens = {t.strip().lower() for v in headers.getall("Connection", []) for t in v.split(",")}
        keep = "close" not in tokens and (minor == 1 or "keep-alive" in tokens)
        exchange.keep = keep
        if exchange.no_body or exchange.status in _NO_BODY:
            self._length = 0
        elif "Transfer-Encoding" in headers:
            codings = ",".join(headers.getall("Transfer-Encoding")).split(",")
            if codings[-1].strip().lower() == "chunked":
                self._chunked = ChunkedDecoder()
            # else: the body ends with the connection
        elif "Content-Length" in headers:
            self._length = _content_length(headers.getall("Content-Length"))
            limit = exchange.limit if 200 <= exchange.status < 300 else None
            if limit is not None and self._length > limit:
                raise TooLarge(exchange.status, f"{self._length:,} bytes")
        if self._length == 0:
            self._finish(exchange, keep=keep)

    def _read_body(self, exchange: _Exchange, data: bytes) -> None:
        if self._chunked is not None:
            try:
                payload = self._chunked.feed(data)
            except ChunkError as exc:
                raise WireError(f"the answer's chunked coding is broken: {exc}") from None
            exchange.body += payload
            if self._chunked.done:
                self._finish(exchange, keep=exchange.keep and not self._chunked.rest)
                return
        elif self._length is not None:
            exchange.body += data[: self._length]
            extra = len(data) > self._length
            self._length -= min(len(data), self._length)
            if not self._length:
                self._finish(exchange, keep=exchange.keep and not extra)
                return
        else:
            exchange.body += data
        self._check_size(exchange)

    def _check_size(self, exchange: _Exchange) -> None:
        if 200 <= exchange.status < 300:
            if len(exchange.body) > exchange.limit:
                raise TooLarge(exchange.status, f"over {exchange.limit:,} bytes")
        elif len(exchange.body) >= exchange.error_limit:
            del exchange.body[exchange.error_limit :]  # enough for a message: the rest is dropped
            self._finish(exchange, keep=False)

    def _finish(self, exchange: _Exchange, *, keep: bool) -> None:
        assert exchange.headers is not None
        self.reusable = keep and not self.closed
        body = exchange.body
        if not 200 <= exchange.status < 300:
            del body[exchange.error_limit :]
        exchange.done.set_result(Answer(exchange.status, exchange.headers, bytes(body)))

    def _fail(self, error: WireError) -> None:
        exchange = self._exchange
        self.close()
        if exchange is not None and not exchange.done.done():
            exchange.done.set_exception(error)


def _parse_head(head: bytes) -> tuple[int, int, CIMultiDictProxy[str]]:
    lines = head.split(b"\r\n")
    match = _STATUS_LINE.fullmatch(lines[0])
    if match is None:
        shown = lines[0][:40].decode("latin-1")
        raise WireError(f"not an HTTP/1.x answer ({shown!r})")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or line[:1] in (b" ", b"\t"):
            shown = line[:40].decode("latin-1")
            raise WireError(f"the answer has a malformed header line ({shown!r})")
        headers.add(name.decode("latin-1"), value.strip(b" \t").decode("latin-1"))
    return int(match[2]), int(match[1]), CIMultiDictProxy(headers)


def _content_length(values: Sequence[str]) -> int:
    """One length, however often it is repeated (`5, 5` is allowed); anything else is an
    answer whose end cannot be known."""
    found = {v.strip() for value in values for v in value.split(",")}
    if len(found) != 1 or not next(iter(found)).isdigit():
        raise WireError(f"the answer has an invalid Content-Length ({', '.join(values)[:40]})")
    return int(next(iter(found)))


class Pool:
    """Connections to one origin (scheme, host, port), at most `connections` at a time.
    `request` is safe to call from many tasks at once; `close()` may be called twice."""

    def __init__(
        self,
        origin: URL,
        *,
        connections: int,
        connect_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if origin.scheme not in ("http", "https") or not origin.host:
            raise ValueError(f"not an http(s) URL: {origin.scheme}://…")
        self.origin = origin.origin()
        self._origin_key = (origin.scheme, origin.raw_host, origin.port)
        self._tls = origin.scheme == "https"
        self._ssl = ssl_context  # made when the first connection needs it (it reads the CAs)
        self._host = origin.host
        self._port = origin.port or (443 if self._tls else 80)
        self._host_header = origin.host_port_subcomponent
        self._connect_timeout = connect_timeout
        self._slots = asyncio.Semaphore(connections)
        self._idle: list[_Connection] = []
        self._closed = False
        self._monotonic = monotonic
        self.opened = 0
        """Connections made so far (a measure of reuse)."""

    async def request(
        self,
        method: str,
        target: URL,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
        *,
        within: float,
        limit: int,
        error_limit: int,
    ) -> Answer:
        """Sends one request and reads its answer: the whole body of a success (at most
        `limit` bytes, else `TooLarge`), the first `error_limit` bytes of any other."""
        if (target.scheme, target.raw_host, target.port) != self._origin_key:
            raise ValueError("a request for another origin")
        request = self._format(method, target, headers, body)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        await self._acquire(deadline, within)
        connection: _Connection | None = None
        try:
            connection = self._idle_connection() or await self._connect(deadline, within)
            exchange = connection.start(request, limit, error_limit, method == "HEAD")
            # A timer rather than asyncio.timeout: this is every request's path.
            timer = loop.call_at(deadline, connection.expire, exchange, within)
            try:
                return await exchange.done
            finally:
                timer.cancel()
        finally:
            self._slots.release()
            if connection is not None:
                self._release(connection)

    async def close(self) -> None:
        """Closes the idle connections now, and each busy one when its request ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _format(
        self, method: str, target: URL, headers: Sequence[tuple[str, str]], body: bytes | None
    ) -> bytes:
        lines = [f"{method} {target.raw_path_qs or '/'} HTTP/1.1", f"Host: {self._host_header}"]
        for name, value in headers:
            if _BREAKS.search(name) or _BREAKS.search(value):
                raise ValueError(f"the {name} header holds a line break")  # never sent
            lines.append(f"{name}: {value}")
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body or b'')}")
        lines.append("\r\n")
        return "\r\n".join(lines).encode("latin-1") + (body or b"")

    async def _acquire(self, deadline: float, within: float) -> None:
        if not self._slots.locked():
            await self._slots.acquire()  # at once
            return
        try:
            async with asyncio.timeout_at(deadline):
                await self._slots.acquire()
        except TimeoutError:
            text = f"not sent within {within:g}s (no free connection)"
            raise WireTimeout(text, sent=False) from None

    def _idle_connection(self) -> _Connection | None:
        now = self._monotonic()
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable and now - connection.idle_since < KEEP_IDLE:
                return connection
            connection.close()
        return None

    async def _connect(self, deadline: float, within: float) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(min(deadline, loop.time() + self._connect_timeout)):
                _, protocol = await loop.create_connection(
                    _Connection,
                    self._host,
                    self._port,
                    ssl=self._tls_context() if self._tls else None,
                    server_hostname=self._host if self._tls else None,
                )
        except TimeoutError:
            if loop.time() >= deadline:
                raise WireTimeout(
                    f"not sent within {within:g}s (no connection)", sent=False
                ) from None
            raise WireError("connection timed out", sent=False) from None
        except ssl.SSLError as exc:
            raise WireError(f"cannot connect: TLS: {exc.reason or exc}", sent=False) from None
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise WireError(f"cannot connect: {reason}", sent=False) from None
        self.opened += 1
        return protocol

    def _tls_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    def _release(self, connection: _Connection) -> None:
        if connection.reusable and not self._closed:
            connection.idle_since = self._monotonic()
            self._idle.append(connection)
        else:
            connection.close()
