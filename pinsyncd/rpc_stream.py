"""One streamed `POST` to the node's RPC API, read with its trailers.

Kubo (and ipfs-cluster's IPFS proxy) report an error met after a streamed answer began only
in the `X-Stream-Error` trailer: the body itself ends cleanly. aiohttp reads and drops
trailers, so a pin listing that broke off halfway would look complete, and every pin after
the break would look unpinned. So streamed calls are read here: h11 (the HTTP/1.1 state
machine under httpx) reads the answer's head, and `chunked` its body and trailers (h11 would
too, but at a cost per chunk that Kubo's one-chunk-a-line streams make the largest part of a
listing). Every other RPC call stays on aiohttp.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Self, cast

import h11
from yarl import URL

from pinsyncd.chunked import ChunkedDecoder, ChunkError

READ_SIZE = 256 * 1024
"""Bytes asked of the socket at a time."""
SMALL_READ = 64 * 1024
"""A read that brought less than this is followed by a short pause (`GATHER`) in which the
socket is not read, so that the kernel gathers what comes and the next read brings more:
Kubo writes every line of a stream on its own, and waking up for each as it came cost more
CPU than everything else about an unchanged listing (13,000 reads and 0.7 s of CPU for
100,000 pins)."""
GATHER = 0.02
"""Seconds to let a slow stream gather before the next read."""


class StreamDropped(Exception):
    """The node closed the connection, or broke the HTTP framing, before the answer ended."""


class StreamedPost:
    """`async with StreamedPost(url, ...) as answer`: `answer.status` and `answer.headers`
    once the head has come, then `answer.chunks()` (the body as it arrives) or
    `answer.read()`, then `answer.trailers`. Connect failures raise `OSError`; no data for
    `read_timeout` seconds raises `TimeoutError`; a cut answer `StreamDropped`."""

    def __init__(
        self,
        url: URL,
        *,
        headers: dict[str, str],
        unix_socket: str | None = None,
        connect_timeout: float,
        read_timeout: float,
    ) -> None:
        self.url = url
        self._headers = headers
        self._unix_socket = unix_socket
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._conn = h11.Connection(h11.CLIENT)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.status = 0
        self.headers: dict[str, str] = {}  # names in lower case, as h11 gives them
        self.trailers: dict[str, str] = {}

    async def __aenter__(self) -> Self:
        url = self.url
        tls = ssl.create_default_context() if url.scheme == "https" else None
        host = url.host or "127.0.0.1"
        port = url.port or (443 if tls else 80)
        opening = (
            asyncio.open_unix_connection(self._unix_socket, limit=READ_SIZE)
            if self._unix_socket is not None
            else asyncio.open_connection(host, port, ssl=tls, limit=READ_SIZE)
        )
        async with asyncio.timeout(self._connect_timeout):  # not wait_for: see `_read`
            self._reader, writer = await opening
        self._writer = writer
        try:
            return await self._send_and_read_head(writer, url, host)
        except BaseException:  # cancelled or failed before `async with` owns the connection
            writer.close()
            raise

    async def _send_and_read_head(self, writer: asyncio.StreamWriter, url: URL, host: str) -> Self:
        headers = [
            ("Host", url.raw_authority or host),
            ("Content-Length", "0"),
            ("Connection", "close"),
            *self._headers.items(),
        ]
        target = url.raw_path_qs or "/"
        writer.write(self._conn.send(h11.Request(method="POST", target=target, headers=headers)))
        writer.write(self._conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()
        while True:
            event = await self._next()
            if isinstance(event, h11.Response):
                self.status = event.status_code
                self.headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in event.headers}
                return self
            # h11.InformationalResponse (100 Continue and the like): wait for the real head

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await self._writer.wait_closed()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, a block at a time (what one read of the socket brought,
        without the chunked coding's framing); `trailers` is set once it has ended."""
        data, closed = self._conn.trailing_data  # what came with the head
        framing = self.headers.get("transfer-encoding", "").lower()
        if framing.rsplit(",", 1)[-1].strip() == "chunked":
            decoder = ChunkedDecoder()
            while True:
                try:
                    payload = decoder.feed(data)
                except ChunkError as exc:
                    raise StreamDropped(f"the chunked body is broken: {exc}") from None
                if payload:
                    yield payload
                if decoder.done:
                    self.trailers = decoder.trailers
                    return
                if closed:
                    raise StreamDropped("the connection was closed before the answer ended")
                data = await self._read(gather=len(data) < SMALL_READ)
                closed = not data
        elif framing:
            raise StreamDropped(f"unknown transfer coding {framing!r}")
        else:
            length = self.headers.get("content-length")
            left = int(length) if length is not None and length.isdigit() else None
            while True:
                if left is not None:
                    data = data[:left]
                    left -= len(data)
                if data:
                    yield data
                if left == 0:
                    return
                if closed:
                    if left is None:  # the body ends with the connection
                        return
                    raise StreamDropped("the connection was closed before the answer ended")
                data = await self._read(gather=len(data) < SMALL_READ)
                closed = not data

    async def read(self, limit: int) -> bytes:
        """The body (of an error answer), up to `limit` bytes."""
        parts: list[bytes] = []
        size = 0
        async for chunk in self.chunks():
            parts.append(chunk[: limit - size])
            size += len(parts[-1])
            if size >= limit:
                break
        return b"".join(parts)

    async def _next(self) -> h11.Event:
        """The next event, reading from the socket as h11 needs."""
        while (event := self._event()) is h11.NEED_DATA:
            await self._receive()
        assert isinstance(event, h11.Event)  # PAUSED comes only after the answer has ended
        return event

    def _event(self) -> object:
        """What h11 has parsed next, NEED_DATA if nothing; a broken answer or a closed
        connection is `StreamDropped`."""
        try:
            event = self._conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise StreamDropped(str(exc)) from None
        if isinstance(event, h11.ConnectionClosed):
            raise StreamDropped("the connection was closed before the answer ended")
        return event  # an h11.Event, or the NEED_DATA or PAUSED sentinel

    async def _read(self, *, gather: bool = False) -> bytes:
        """What the socket has next (b"" at its end), waiting `read_timeout` at most; with
        `gather`, after a pause of `GATHER` seconds for more to arrive."""
        assert self._reader is not None and self._writer is not None
        if gather:  # the kernel gathers meanwhile: no wake-up for every line that comes
            # A socket's transport reads too (uvloop's is not an asyncio.Transport subclass).
            transport = cast(asyncio.ReadTransport, self._writer.transport)
            transport.pause_reading()
            try:
                await asyncio.sleep(GATHER)
            finally:
                transport.resume_reading()
        # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancellation that
        # comes as the read completes, and a stream that never ends (a `pin/add` of data
        # nobody has) would then never stop.
        async with asyncio.timeout(self._read_timeout):
            return await self._reader.read(READ_SIZE)

    async def _receive(self) -> None:
        """Feed h11 what the socket has next (b"" at its end)."""
        data = await self._read()
        try:
            self._conn.receive_data(data)
        except h11.RemoteProtocolError as exc:
            raise StreamDropped(str(exc)) from None
