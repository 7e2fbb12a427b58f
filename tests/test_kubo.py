"""The Kubo RPC client against a real Kubo daemon, and against small servers that misbehave."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from pinsyncd.kubo import LocalNode, NodeRequestError, NodeUnavailable
from tests.fake_kubo import FakeKubo, StreamFault
from tests.peers import KuboNode
from tests.servers import Handler, serving

# --- against real Kubo -------------------------------------------------------------------------


async def test_version_and_identity(kubo: KuboNode) -> None:
    async with LocalNode(kubo.api_url) as node:
        assert await node.version() == "0.42.0"
        identity = await node.identity()
    assert identity.peer_id.startswith("12D3KooW")
    assert identity.agent_version.startswith("kubo/0.42.0")
    assert any(a.startswith("/ip4/127.0.0.1/tcp/") for a in identity.addresses)


async def test_streams_thousands_of_named_pins(kubo: KuboNode) -> None:
    async with LocalNode(kubo.api_url) as node:
        pins = [pin async for pin in node.iter_pins()]
        assert node.calls == {"pin/ls": 1}
    listed = {pin.cid: pin.name for pin in pins}
    assert len(listed) == len(pins), "each pin is listed once"
    assert len(kubo.seeded) == 3000
    assert {cid: listed.get(cid) for cid in kubo.seeded} == kubo.seeded
    assert {pin.type for pin in pins} == {"recursive"}


async def test_pin_without_name_has_empty_name(kubo: KuboNode) -> None:
    cid = kubo.cli("add", "-q", "--pin=true", stdin=b"unnamed content for pinsyncd")
    async with LocalNode(kubo.api_url) as node:
        names = {pin.cid: pin.name async for pin in node.iter_pins()}
    assert names[cid] == ""


async def test_swarm_connect_reports_each_address(
    kubo: KuboNode, kubo_factory: Callable[..., KuboNode]
) -> None:
    other = kubo_factory("other")
    async with LocalNode(other.api_url) as other_node:
        identity = await other_node.identity()
    good = next(a for a in identity.addresses if a.startswith("/ip4/127.0.0.1/tcp/"))
    good = f"{good}/p2p/{identity.peer_id}"
    # Another peer id: Kubo answers OK for any address of a peer it is already connected to.
    bad = "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
    async with LocalNode(kubo.api_url) as node:
        results = await node.swarm_connect([good, bad, "not-a-multiaddr", good])
    by_address = {r.address: r for r in results}
    assert len(results) == 3, "duplicates are dialled once"
    assert by_address[good].ok
    assert not by_address[bad].ok
    assert "connection refused" in (by_address[bad].error or "")
    assert not by_address["not-a-multiaddr"].ok
    peers = kubo.rpc("swarm/peers")["Peers"] or []
    assert identity.peer_id in {p["Peer"] for p in peers}


async def test_node_down_is_unreachable_not_a_crash(kubo_factory: Callable[..., KuboNode]) -> None:
    victim = kubo_factory("victim", online=False)
    async with LocalNode(victim.api_url, timeout=5) as node:
        assert await node.version() == "0.42.0"
        victim.stop()
        with pytest.raises(NodeUnavailable, match="node unreachable: cannot connect"):
            await node.version()
        with pytest.raises(NodeUnavailable, match="node unreachable"):
            [pin async for pin in node.iter_pins()]
        results = await node.swarm_connect(["/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWx"])
        assert not results[0].ok and "node unreachable" in (results[0].error or "")


# --- against servers that misbehave ------------------------------------------------------------


@pytest.fixture
async def fake_node() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Serve one handler for every path on 127.0.0.1; yields a function returning the URL."""
    async with contextlib.AsyncExitStack() as servers:

        async def serve(handler: Handler) -> str:
            return await servers.enter_async_context(serving(handler))

        yield serve


async def test_html_answer_is_not_kubo(fake_node: Callable[[Handler], Awaitable[str]]) -> None:
    async def html(request: web.Request) -> web.Response:
        return web.Response(text="<html>router login</html>", content_type="text/html")

    async with LocalNode(await fake_node(html)) as node:
        with pytest.raises(NodeUnavailable, match="does not look like a Kubo RPC API"):
            await node.version()
        with pytest.raises(NodeUnavailable, match="cut off or is not JSON"):
            [pin async for pin in node.iter_pins()]


async def test_404_is_not_kubo(fake_node: Callable[[Handler], Awaitable[str]]) -> None:
    async def missing(request: web.Request) -> web.Response:
        return web.Response(status=404, text="404 page not found")

    async with LocalNode(await fake_node(missing)) as node:
        with pytest.raises(NodeUnavailable, match=r"does not look like a Kubo RPC API \(id: HTTP"):
            await node.identity()


async def test_stream_cut_off_midway_is_an_error(
    fake_node: Callable[[Handler], Awaitable[str]],
) -> None:
    async def cut(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b'{"Cid":"bafkqaaa","Type":"recursive"}\n{"Cid":"baf')
        assert request.transport is not None
        request.transport.close()  # the node dies mid-stream
        return response

    async with LocalNode(await fake_node(cut)) as node:
        seen = []
        with pytest.raises(NodeUnavailable, match="node unreachable"):
            async for pin in node.iter_pins():
                seen.append(pin.cid)
    assert seen == ["bafkqaaa"]


async def test_error_line_in_stream(fake_node: Callable[[Handler], Awaitable[str]]) -> None:
    async def failing(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b'{"Cid":"bafkqaaa","Type":"recursive"}\n')
        await response.write(b'{"Message":"datastore closed","Code":0,"Type":"error"}\n')
        return response

    async with LocalNode(await fake_node(failing)) as node:
        with pytest.raises(NodeRequestError, match="datastore closed"):
            [pin async for pin in node.iter_pins()]


async def test_pins_arrive_while_the_stream_is_still_open(
    fake_node: Callable[[Handler], Awaitable[str]],
) -> None:
    """Streaming for real: the first pin is in hand before the node has finished listing."""
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b'{"Cid":"bafkqaaa","Name":"first","Type":"recursive"}\n')
        await release.wait()
        await response.write(b'{"Cid":"bafkqaab","Name":"second","Type":"recursive"}\n')
        return response

    async with LocalNode(await fake_node(slow)) as node:
        stream = node.iter_pins()
        first = await asyncio.wait_for(anext(stream), 5)
        assert (first.cid, first.name) == ("bafkqaaa", "first")
        release.set()
        rest = [pin.name async for pin in stream]
    assert rest == ["second"]


async def test_stalled_stream_times_out(fake_node: Callable[[Handler], Awaitable[str]]) -> None:
    async def stall(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b'{"Cid":"bafkqaaa","Type":"recursive"}\n')
        await asyncio.sleep(30)
        return response

    async with LocalNode(await fake_node(stall), timeout=0.5) as node:
        with pytest.raises(NodeUnavailable, match=r"stalled for more than 0\.5s"):
            [pin async for pin in node.iter_pins()]


async def test_falls_back_when_names_are_not_supported(
    fake_node: Callable[[Handler], Awaitable[str]],
) -> None:
    asked: list[dict[str, str]] = []

    async def old_kubo(request: web.Request) -> web.Response:
        asked.append(dict(request.query))
        if "names" in request.query:
            body = {"Message": 'unknown option "names"', "Code": 1, "Type": "error"}
            return web.json_response(body, status=500)
        lines = [{"Cid": "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG", "Type": "recursive"}]
        return web.Response(text="".join(json.dumps(line) + "\n" for line in lines))

    async with LocalNode(await fake_node(old_kubo)) as node:
        first = [pin async for pin in node.iter_pins()]
        second = [pin async for pin in node.iter_pins()]
    assert [(p.cid, p.name) for p in first] == [
        ("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG", "")
    ]
    assert first == second
    assert ["names" in q for q in asked] == [True, False, False], "asks once, then remembers"


async def test_an_error_in_the_trailer_fails_the_listing() -> None:
    """Kubo sends an error met once a stream has begun only in the `X-Stream-Error` trailer.
    aiohttp, which pinsyncd read the listing with before, sees a complete body."""
    fault = StreamFault("trailer", after=300)
    async with FakeKubo(pins=500, stream_faults=[fault, fault]) as kubo:
        async with aiohttp.ClientSession() as session:
            url = f"{kubo.url}/api/v0/pin/ls?type=recursive&stream=true"
            async with session.post(url) as response:
                assert (await response.read()).count(b"\n") == 300, "no error to be seen"
        async with LocalNode(kubo.url) as node:
            seen: list[str] = []
            with pytest.raises(NodeRequestError, match=r"broke off.*datastore closed"):
                async for pin in node.iter_pins():
                    seen.append(pin.cid)
            assert len(seen) == 300
            assert len([pin async for pin in node.iter_pins()]) == 500, "the next is whole"
