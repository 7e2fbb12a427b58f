"""`pinsyncd.psa.wire` against raw servers on 127.0.0.1 that answer with exactly the bytes a
test gives: every framing, keep-alive and its end, broken answers, limits, timeouts, TLS."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
import trustme
from yarl import URL

from pinsyncd.psa.wire import KEEP_IDLE, MAX_HEAD, Pool, TooLarge, WireError, WireTimeout

Reply = Callable[[bytes], bytes | None]
"""The bytes to answer a request with (its head and body as received); None: hang up."""


@dataclass
class RawServer:
    """Answers each request on a connection in turn; counts connections and requests."""

    replies: list[bytes | None]
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    close_after: bool = False
    url: URL = field(default_factory=URL)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                self.requests.append(head + body)
                reply = self.replies.pop(0) if self.replies else None
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def serving(
    *replies: bytes | None, tls: ssl.SSLContext | None = None, close_after: bool = False
) -> AsyncIterator[RawServer]:
    server = RawServer(list(replies), close_after=close_after)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=tls)
    port = listener.sockets[0].getsockname()[1]
    server.url = URL(f"{'https' if tls else 'http'}://127.0.0.1:{port}/psa")
    async with listener:
        try:
            yield server
        finally:  # since Python 3.12.1 a server's close waits for its open connections
            while _POOLS:
                await _POOLS.pop().close()


def ok(body: bytes = b'{"ok":1}', *headers: str, status: str = "200 OK") -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def ask(
    pool: Pool, path: str = "/psa/pins", *, body: bytes | None = None, limit: int = 1 << 20
) -> tuple[int, bytes]:
    target = pool.origin.join(URL(path))
    answer = await pool.request(
        "POST" if body is not None else "GET",
        target,
        [("Authorization", "Bearer secret")],
        body,
        within=5,
        limit=limit,
        error_limit=100,
    )
    return answer.status, answer.body


_POOLS: list[Pool] = []


@pytest.fixture(autouse=True)
async def _close_pools() -> AsyncIterator[None]:
    yield
    while _POOLS:
        await _POOLS.pop().close()
    await asyncio.sleep(0)  # the transports close


def pool_for(server: RawServer | URL, **kwargs: object) -> Pool:
    url = server if isinstance(server, URL) else server.url
    pool = Pool(url, connections=2, connect_timeout=5, **kwargs)  # type: ignore[arg-type]
    _POOLS.append(pool)
    return pool


async def test_a_request_is_one_block_with_host_length_and_headers() -> None:
    async with serving(ok()) as server:
        pool = pool_for(server)
        assert await ask(pool, "/psa/pins?cid=a,b", body=b'{"cid":"x"}') == (200, b'{"ok":1}')
        await pool.close()
    request = server.requests[0]
    port = server.url.port
    assert request == (
        b"POST /psa/pins?cid=a,b HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
        b"Authorization: Bearer secret\r\nContent-Length: 11\r\n\r\n"
        b'{"cid":"x"}' % port
    )


async def test_keep_alive_reuses_one_connection_and_close_ends_it() -> None:
    async with serving(ok(), ok(), ok(b"", "Connection: close"), ok()) as server:
        pool = pool_for(server)
        for _ in range(4):
            assert (await ask(pool))[0] == 200
        await pool.close()
    assert server.connections == 2, "three on the first, then a new one after `close`"
    assert pool.opened == 2


async def test_chunked_answer_with_extensions_and_trailers() -> None:
    chunked = (
        b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'3;ext=1\r\n{"a\r\n4\r\n":1}\r\n0\r\nX-Trailer: t\r\n\r\n'
    )
    async with serving(chunked, ok()) as server:
        pool = pool_for(server)
        assert await ask(pool) == (202, b'{"a":1}')
        assert (await ask(pool))[0] == 200
        await pool.close()
    assert server.connections == 1


async def test_an_answer_ended_by_the_connection_and_an_http_1_0_one() -> None:
    async with serving(b"HTTP/1.1 200 OK\r\n\r\nuntil the end", close_after=True) as server:
        assert await ask(pool_for(server)) == (200, b"until the end")
    async with serving(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", ok()) as server:
        pool = pool_for(server)
        assert await ask(pool) == (200, b"ok")
        assert (await ask(pool))[0] == 200
    assert server.connections == 2, "HTTP/1.0 without keep-alive is not reused"


async def test_interim_answers_are_skipped_and_no_body_statuses_have_none() -> None:
    replies = (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n" + ok(),
        b"HTTP/1.1 204 No Content\r\n\r\n",
        ok(b"after"),
    )
    async with serving(*replies) as server:
        pool = pool_for(server)
        assert await ask(pool) == (200, b'{"ok":1}')
        assert await ask(pool) == (204, b"")
        assert await ask(pool) == (200, b"after")
    assert server.connections == 1


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x answer"),
        (b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunked coding"),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "switched protocols"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * (MAX_HEAD + 10), "head is over 64 KiB"),
    ],
)
async def test_a_broken_answer_is_an_error_and_its_connection_is_dropped(
    reply: bytes, reason: str
) -> None:
    async with serving(reply, ok()) as server:
        pool = pool_for(server)
        with pytest.raises(WireError, match=reason) as caught:
            await ask(pool)
        assert caught.value.sent
        assert (await ask(pool))[0] == 200 or server.connections == 2


async def test_cut_off_and_closed_before_an_answer() -> None:
    async with serving(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", close_after=True) as s:
        with pytest.raises(WireError, match="cut off"):
            await ask(pool_for(s))
    async with serving(None) as server:
        with pytest.raises(WireError, match="closed before an answer came") as caught:
            await ask(pool_for(server))
    assert caught.value.sent, "the request went out: it may have been applied"


async def test_limits_a_success_is_refused_an_error_is_cut_to_its_start() -> None:
    big = ok(b"x" * 5000)
    chunk = b"3e8\r\n" + b"y" * 1000 + b"\r\n"
    chunked_big = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 5
    error = ok(b"e" * 2**20, status="500 Internal Server Error")  # more than one read
    async with serving(big, chunked_big, error, ok()) as server:
        pool = pool_for(server)
        with pytest.raises(TooLarge, match="5,000 bytes"):
            await ask(pool, limit=1000)
        with pytest.raises(TooLarge, match="over 1,000 bytes"):
            await ask(pool, limit=1000)
        assert await ask(pool, limit=1000) == (500, b"e" * 100)
        assert (await ask(pool))[0] == 200
    assert server.connections == 4, "none of the three is reused: their rest is unread"


async def test_an_idle_connection_closed_by_the_server_or_kept_too_long_is_not_reused() -> None:
    now = [0.0]
    async with serving(ok(), ok(), ok(), close_after=True) as server:
        pool = pool_for(server, monotonic=lambda: now[0])
        await ask(pool)
        await asyncio.sleep(0.05)  # the server's FIN arrives
        await ask(pool)
        assert server.connections == 2
    async with serving(ok(), ok(), ok()) as server:
        pool = pool_for(server, monotonic=lambda: now[0])
        await ask(pool)
        now[0] += KEEP_IDLE - 0.1
        await ask(pool)
        now[0] += KEEP_IDLE + 0.1
        await ask(pool)
        await pool.close()
    assert server.connections == 2


async def test_timeouts_say_whether_the_request_went_out() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read()  # never answers
        finally:
            writer.close()

    listener = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    async with listener:
        pool = pool_for(URL(f"http://127.0.0.1:{port}"))
        with pytest.raises(WireTimeout, match=r"no answer within 0\.2s") as caught:
            await pool.request(
                "GET",
                URL(f"http://127.0.0.1:{port}/"),
                [],
                None,
                within=0.2,
                limit=10,
                error_limit=10,
            )
        assert caught.value.sent
        await pool.close()
    gone = pool_for(URL(f"http://127.0.0.1:{port}"))
    with pytest.raises(WireError, match="cannot connect") as refused:
        await gone.request(
            "GET", URL(f"http://127.0.0.1:{port}/"), [], None, within=5, limit=10, error_limit=10
        )
    assert not refused.value.sent


async def test_a_line_break_in_a_header_is_never_sent() -> None:
    async with serving(ok()) as server:
        pool = pool_for(server)
        with pytest.raises(ValueError, match="Authorization header holds a line break"):
            await pool.request(
                "GET",
                server.url,
                [("Authorization", "Bearer a\r\nX-Evil: 1")],
                None,
                within=5,
                limit=10,
                error_limit=10,
            )
    assert server.requests == []
    with pytest.raises(ValueError, match="another origin"):
        await pool.request(
            "GET", URL("http://127.0.0.2:1/"), [], None, within=5, limit=10, error_limit=10
        )


async def test_tls_with_a_trusted_and_an_untrusted_certificate() -> None:
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    trusted = ssl.create_default_context()
    authority.configure_trust(trusted)
    async with serving(ok(), ok(), tls=server_context) as server:
        pool = pool_for(server, ssl_context=trusted)
        assert await ask(pool) == (200, b'{"ok":1}')
        assert await ask(pool) == (200, b'{"ok":1}')
        await pool.close()
        assert server.connections == 1
        with pytest.raises(WireError, match="cannot connect: TLS") as caught:
            await ask(pool_for(server))  # the system's authorities do not know this one
        assert not caught.value.sent


async def test_a_connection_busy_when_the_pool_closes_is_closed_after_its_request() -> None:
    async with serving(ok(), ok()) as server:
        pool = pool_for(server)
        busy = asyncio.create_task(ask(pool))
        await asyncio.sleep(0)  # the request is on its way
        await pool.close()
        assert (await busy)[0] == 200
        assert (await ask(pool))[0] == 200
    assert server.connections == 2, "the first connection was not kept"


async def test_bytes_after_an_answer_without_a_body_end_its_connection() -> None:
    async with serving(b"HTTP/1.1 204 No Content\r\n\r\nstray bytes", ok()) as server:
        pool = pool_for(server)
        assert await ask(pool) == (204, b"")
        assert await ask(pool) == (200, b'{"ok":1}')
    assert server.connections == 2, "the connection with stray bytes was not reused"
