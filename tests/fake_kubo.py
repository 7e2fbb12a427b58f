"""A small Kubo RPC server for fault cases that real Kubo cannot be made to show on demand:
a node that goes offline and comes back on the same port, a pinset of any size (a million
pins cost nothing to serve), a stream that breaks, stalls or carries an error.

    async with FakeKubo(pins=1000) as node:    # node.url = http://127.0.0.1:PORT
        await node.go_offline(); await node.come_back()

Also runnable alone: `python -m tests.fake_kubo --port 0 --pins N` prints {"port": N}.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import signal
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from aiohttp import web

PEER_ID = "12D3KooWFakeKuboNodeForPinsyncdTests1111111111111111"
_RAW_SHA256_PREFIX = bytes([0x01, 0x55, 0x12, 0x20])  # CIDv1, raw, sha2-256, 32 bytes


def generated_cid(index: int, seed: str = "") -> str:
    """A valid CIDv1 (raw, sha2-256, base32) for pin number `index`, cheap to make."""
    digest = hashlib.sha256(f"{seed}:{index}".encode()).digest()
    return "b" + base64.b32encode(_RAW_SHA256_PREFIX + digest).decode().lower().rstrip("=")


@dataclass
class StreamFault:
    """How the next pin/ls stream misbehaves: after `after` lines, `kind` is one of `cut`
    (the connection drops), `error` (an error line), `trailer` (Kubo's way: the body ends
    cleanly, and the error is in the `X-Stream-Error` trailer), `stall` (nothing more, ever),
    `trickle` (one more pin line every `interval` seconds, forever) or `endless_line` (one
    line that never ends, until the client hangs up)."""

    kind: str
    after: int = 0
    interval: float = 0.5


@dataclass
class FakeKubo:
    pins: int = 0
    seed: str = "fake"
    names: bool = True
    extra: dict[str, str] = field(default_factory=dict)  # more pins: cid -> name
    addresses: list[str] = field(
        default_factory=lambda: ["/ip4/127.0.0.1/tcp/4001", "/ip4/203.0.113.7/tcp/4001"]
    )
    port: int = 0
    peer_id: str = PEER_ID  # another one makes another device
    calls: Counter[str] = field(default_factory=Counter)
    dials: list[str] = field(default_factory=list)
    stream_faults: list[StreamFault] = field(default_factory=list)
    raw_lines: list[bytes] = field(default_factory=list)
    """Sent as they are after the pins (garbage a broken node or proxy might send)."""
    streamed: int = 0
    """Bytes of `endless_line` sent so far."""
    unfetchable: set[str] = field(default_factory=set)
    """CIDs whose `pin/add` never gets a block: Kubo's reports keep coming, unchanged."""
    drop_pin_add: bool = False
    """`pin/add` drops the connection (the node going away in the middle of a restore)."""
    direct: dict[str, str] = field(default_factory=dict)
    """Direct pins: cid -> name. Only `pin/ls?arg=` shows them; a `pin/add` makes one
    recursive (as Kubo does)."""
    added: list[tuple[str, str]] = field(default_factory=list)
    """(cid, name) of every `pin/add` asked for."""
    removed: list[str] = field(default_factory=list)
    """The CID of every `pin/rm` asked for."""
    listings: list[bool] = field(default_factory=list)
    """For every `pin/ls`, whether it was asked with names."""
    mfs_root: str = "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"
    """What `files/stat /` answers (the empty folder until changed)."""
    _runner: web.AppRunner | None = None
    # The encoded pin/ls stream, kept while the pinset is unchanged (a million pins cost
    # seconds to encode, so benchmarks would measure this server instead of pinsyncd).
    _stream_cache: tuple[object, list[bytes]] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def online(self) -> bool:
        return self._runner is not None

    def pinset(self) -> dict[str, str]:
        out = {generated_cid(i, self.seed): f"pin-{i}" for i in range(self.pins)}
        out.update(self.extra)
        return out

    async def __aenter__(self) -> FakeKubo:
        await self.come_back()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.go_offline()

    async def come_back(self) -> None:
        """Listen (again, on the same port once one was chosen)."""
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_post("/api/v0/version", self._version)
        app.router.add_post("/api/v0/id", self._id)
        app.router.add_post("/api/v0/pin/ls", self._pin_ls)
        app.router.add_post("/api/v0/swarm/connect", self._swarm_connect)
        app.router.add_post("/api/v0/pin/add", self._pin_add)
        app.router.add_post("/api/v0/pin/rm", self._pin_rm)
        app.router.add_post("/api/v0/files/stat", self._files_stat)
        runner = web.AppRunner(app, shutdown_timeout=0.1, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = runner.addresses[0][1]
        self._runner = runner

    async def go_offline(self) -> None:
        """Stop listening: connections are refused until `come_back()`."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _version(self, request: web.Request) -> web.Response:
        self.calls["version"] += 1
        return web.json_response({"Version": "0.42.0-fake", "System": "fake"})

    async def _id(self, request: web.Request) -> web.Response:
        self.calls["id"] += 1
        return web.json_response(
            {
                "ID": self.peer_id,
                "Addresses": [f"{a}/p2p/{self.peer_id}" for a in self.addresses],
                "AgentVersion": "kubo/0.42.0-fake",
            }
        )

    async def _swarm_connect(self, request: web.Request) -> web.Response:
        self.calls["swarm/connect"] += 1
        address = request.query.get("arg", "")
        self.dials.append(address)
        return web.json_response({"Strings": [f"connect {address} success"]})

    async def _pin_add(self, request: web.Request) -> web.StreamResponse:
        """Kubo's `pin/add?progress=true`: a report line every 50 ms (Kubo: 500 ms) and
        `{"Pins": [cid]}` at the end; the pin then shows in `pin/ls` with its name."""
        self.calls["pin/add"] += 1
        cid, name = request.query.get("arg", ""), request.query.get("name", "")
        self.added.append((cid, name))
        if self.drop_pin_add:
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        try:
            if cid in self.unfetchable:
                while True:  # until the client gives up and hangs up
                    await response.write(b"{}\n")
                    await asyncio.sleep(0.05)
            for blocks in (1, 2, 3):
                report = {"Progress": blocks, "Bytes": blocks * 1000}
                await response.write(json.dumps(report).encode() + b"\n")
                await asyncio.sleep(0.01)
            self.direct.pop(cid, None)
            self.extra[cid] = name
            await response.write(json.dumps({"Pins": [cid]}).encode() + b"\n")
            await response.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass
        return response

    async def _pin_rm(self, request: web.Request) -> web.Response:
        """Kubo's `pin/rm`: `{"Pins": [cid]}`, or an error when the CID is not pinned."""
        self.calls["pin/rm"] += 1
        cid = request.query.get("arg", "")
        self.removed.append(cid)
        if self.extra.pop(cid, None) is None:
            message = "not pinned or pinned indirectly"
            return web.json_response({"Message": message, "Code": 0, "Type": "error"}, status=500)
        self._stream_cache = None
        return web.json_response({"Pins": [cid]})

    async def _files_stat(self, request: web.Request) -> web.Response:
        self.calls["files/stat"] += 1
        return web.json_response({"Hash": self.mfs_root, "Type": "directory"})

    async def _pin_ls(self, request: web.Request) -> web.StreamResponse:
        self.calls["pin/ls"] += 1
        if "arg" in request.query:  # one CID: Kubo answers at once, with an error if unpinned
            cid = request.query["arg"]
            pinset = self.pinset()
            if cid in self.direct and request.query.get("type") in ("all", "direct"):
                entry = {"Type": "direct", "Name": self.direct[cid]}
            elif cid in pinset:
                entry = {"Type": "recursive", "Name": pinset[cid]}
            else:
                error = {"Message": f"path '{cid}' is not pinned", "Code": 0, "Type": "error"}
                return web.json_response(error, status=500)
            return web.json_response({"Keys": {cid: entry}})
        fault = self.stream_faults.pop(0) if self.stream_faults else None
        with_names = self.names and request.query.get("names") == "true"
        self.listings.append(with_names)
        if fault is not None and fault.kind == "trailer":
            return await self._pin_ls_with_trailer(request, fault.after, with_names)
        if fault is None:
            return await self._pin_ls_as_kubo(request, with_names)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        chunk: list[bytes] = []
        pinset = list(self._iter_pinset())
        for sent in range(len(pinset) + 1):  # the fault may come after the last pin too
            if sent == fault.after:
                await response.write(b"".join(chunk))
                chunk.clear()
                if fault.kind == "cut":
                    assert request.transport is not None
                    request.transport.close()
                    return response
                if fault.kind == "error":
                    await response.write(b'{"Message":"fake: datastore closed","Type":"error"}\n')
                    return response
                if fault.kind == "trickle":
                    for n in range(10**9):
                        await response.write(_pin_line(generated_cid(n, "trickle"), "", False))
                        await asyncio.sleep(fault.interval)
                if fault.kind == "endless_line":
                    await response.write(b'{"Cid":"')
                    block = b"x" * 2**16
                    while True:
                        await response.write(block)
                        self.streamed += len(block)
                await asyncio.sleep(3600)  # stall
            if sent < len(pinset):
                chunk.append(_pin_line(*pinset[sent], with_names))
        await response.write(b"".join(chunk))
        await response.write_eof()
        return response

    async def _pin_ls_as_kubo(self, request: web.Request, with_names: bool) -> web.StreamResponse:
        """The whole listing framed as Kubo frames it: every line its own chunk (Kubo
        flushes after each), then the trailer section, empty."""
        response = web.StreamResponse(headers=_CHUNKED)
        response._length_check = False  # no framing by aiohttp: the chunks below are raw
        await response.prepare(request)
        for block in self.encoded_stream(with_names):
            await response.write(block)
        await response.write(b"".join(_chunk(line) for line in self.raw_lines))
        await response.write(b"0\r\n\r\n")
        await response.write_eof()
        return response

    async def _pin_ls_with_trailer(
        self, request: web.Request, after: int, with_names: bool
    ) -> web.StreamResponse:
        """`after` pins, then the end of the body with an `X-Stream-Error` trailer, as Kubo
        ends a stream that failed once it had begun. aiohttp cannot send trailers, so this
        answer frames its own chunks."""
        response = web.StreamResponse(headers=_CHUNKED)
        response._length_check = False  # no framing by aiohttp: the chunks below are raw
        await response.prepare(request)
        pins = zip(range(after), self._iter_pinset(), strict=False)
        body = b"".join(_pin_line(cid, name, with_names) for _, (cid, name) in pins)
        if body:
            await response.write(b"%x\r\n%s\r\n" % (len(body), body))
        await response.write(b"0\r\nX-Stream-Error: fake: datastore closed\r\n\r\n")
        await response.write_eof()
        return response

    def encoded_stream(self, with_names: bool) -> list[bytes]:
        """The whole pin/ls stream in blocks of 1000 lines, each line its own chunk, encoded
        once per pinset."""
        key = (self.pins, self.seed, with_names, tuple(self.extra.items()))
        if self._stream_cache is None or self._stream_cache[0] != key:
            blocks: list[bytes] = []
            chunk: list[bytes] = []
            for cid, name in self._iter_pinset():
                chunk.append(_chunk(_pin_line(cid, name, with_names)))
                if len(chunk) >= 1000:
                    blocks.append(b"".join(chunk))
                    chunk.clear()
            blocks.append(b"".join(chunk))
            self._stream_cache = (key, blocks)
        return self._stream_cache[1]

    def _iter_pinset(self) -> Iterator[tuple[str, str]]:
        for i in range(self.pins):
            yield generated_cid(i, self.seed), f"pin-{i}"
        yield from self.extra.items()


_CHUNKED = {
    "Content-Type": "application/json",
    "Transfer-Encoding": "chunked",
    "Trailer": "X-Stream-Error",
    "Connection": "close",
}


def _chunk(data: bytes) -> bytes:
    """`data` as one chunk of the chunked transfer coding."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def _pin_line(cid: str, name: str, with_names: bool) -> bytes:
    """One line as Kubo writes it: compact JSON, `Name` only when asked for and not empty."""
    entry = {"Cid": cid, "Name": name, "Type": "recursive"}
    if not (with_names and name):
        del entry["Name"]
    return json.dumps(entry, separators=(",", ":")).encode() + b"\n"


async def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--pins", type=int, default=0)
    parser.add_argument("--seed", default="fake")
    args = parser.parse_args()
    node = FakeKubo(pins=args.pins, seed=args.seed, port=args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with node:
        print(json.dumps({"port": node.port}), flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(_main())
