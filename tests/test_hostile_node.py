"""A node that misbehaves on purpose, over real sockets, with the real CLI and daemon: names
that are not Unicode, lines that are not pins, CIDs that do not parse, one CID in two
spellings, a line that never ends, a listing that trickles while the daemon is stopped."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import signal
from pathlib import Path

import pytest

from pinsyncd.cids import cid_forms, multihash_of
from pinsyncd.kubo import MAX_LINE, LocalNode, NodeUnavailable, PinListing
from pinsyncd.logs import printable
from tests.daemon_helpers import ServiceSpec, acli, daemon_for
from tests.fake_kubo import FakeKubo, StreamFault, generated_cid
from tests.fake_psa import FakePinningService, Fault
from tests.test_devices import MIRROR, Device
from tests.test_hostile_state import wait_for

TOKEN = "hostile-node-token"


def dag_pb_pair(seed: str) -> tuple[str, str]:
    """CIDv0 and CIDv1 (dag-pb, base32) of one multihash."""
    digest = hashlib.sha256(seed.encode()).digest()
    v1 = "b" + base64.b32encode(b"\x01\x70\x12\x20" + digest).decode().lower().rstrip("=")
    v0 = cid_forms(v1)[-1]
    assert v0.startswith("Qm") and multihash_of(v0) == multihash_of(v1)
    return v0, v1


async def test_names_that_are_not_unicode_or_hold_escapes_do_not_stop_the_daemon(
    tmp_path: Path,
) -> None:
    """Before: a lone surrogate in a pin's name ended the daemon with a traceback."""
    good = {generated_cid(i, "named"): f"pin-{i}" for i in range(20)}
    odd = {
        generated_cid(0, "odd"): "lone \ud800 surrogate",
        generated_cid(1, "odd"): "\x1b[2J\x1b[31mred\x07",
        generated_cid(2, "odd"): "pair \U0001f600 fine",
    }
    async with (
        FakeKubo(extra={**good, **odd, "bafy\ud800bad": "a CID that is not one"}) as node,
        FakePinningService(token=TOKEN, transition_after=0.1) as svc,
    ):
        run = await daemon_for(tmp_path, node.url, [ServiceSpec("a", svc.url, TOKEN)])
        config, env, log, daemon = run.config, run.env, run.log, run.process
        try:
            await wait_for(
                lambda: all(
                    any(p["status"] == "pinned" for p in svc.pins_for_cid(c))
                    for c in {**good, **odd}
                ),
                60,
                "every pin that is one pinned",
            )
            assert daemon.returncode is None, "the daemon still runs"
            code, out, err = await acli(["status", "-c", str(config)], env)
            assert code == 0, err
            names = {p["pin"]["cid"]: p["pin"].get("name") for p in svc.pins}
        finally:
            daemon.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(daemon.wait(), 30) == 0
    assert names[generated_cid(0, "odd")] == "lone \ufffd surrogate"
    assert names[generated_cid(2, "odd")] == "pair \U0001f600 fine"
    assert len(svc.pins) == 23, "the CID that does not parse was never sent"
    assert "\x1b" not in out and "0 lines that are not a pin and 1 CIDs that do not parse" in out
    assert "Traceback" not in log.read_text()
    assert printable("\x1b[31mred\x07\ud800\n") == "\\x1b[31mred\\x07\\ud800\n"


@pytest.mark.slow
async def test_lines_that_are_not_pins_are_skipped_and_hold_back_unpinning(
    tmp_path: Path,
) -> None:
    """Lines that are not pins are left out and counted, and the other pins are backed up;
    while the listing has them, a pin missing from it is not unpinned (one may be behind a
    bad line). Two spellings of one CID are one request on the service."""
    v0, v1 = dag_pb_pair("spelled twice")
    pins = {generated_cid(i, "lines"): f"p{i}" for i in range(20)}
    garbage = [b"not json at all\n", b"[1, 2]\n", b'{"Type": "recursive"}\n', b"[" * 5000 + b"\n"]
    async with (
        FakeKubo(extra={**pins, v0: "v0", v1: "v1", "Qm-not-a-cid": ""}, raw_lines=garbage) as node,
        FakePinningService(token=TOKEN, transition_after=0.0) as svc,
    ):
        device = Device(tmp_path / "d", node, [ServiceSpec("a", svc.url, TOKEN)], MIRROR)
        await device.sync("--wait")
        assert all(len(svc.pins_for_cid(c)) == 1 for c in pins)
        assert len([p for p in svc.pins if multihash_of(p["pin"]["cid"]) == multihash_of(v0)]) == 1
        assert len(svc.pins) == 21
        code, out, err = await acli(["status", "--json", "-c", str(device.config)], device.env)
        assert code == 0, err
        assert json.loads(out)["local"]["skipped"] == {"lines": 4, "unparsable": 1, "spellings": 1}

        gone = list(pins)[:5]
        for cid in gone:
            del node.extra[cid]
        await device.sync()
        await asyncio.sleep(1.1)  # past unpin_grace (1s): the real config, not a timing claim
        events = await device.sync()
        assert not [e for e in events if e["event"] == "deleted pins"]
        assert all(len(svc.pins_for_cid(c)) == 1 for c in gone), "held while lines are bad"

        node.raw_lines.clear()
        del node.extra["Qm-not-a-cid"]
        await device.sync()
        await asyncio.sleep(1.1)
        events = await device.sync()
        deleted = [e for e in events if e["event"] == "deleted pins"]
        assert deleted and deleted[0]["unpinned_locally"] == 5
        assert all(svc.pins_for_cid(c) == [] for c in gone)
        assert len(svc.pins) == 16


async def test_an_endless_line_from_the_node_is_cut_off() -> None:
    """Before: one endless `pin/ls` line took 8.5 GiB, until the daemon was killed."""
    fault = StreamFault("endless_line", after=5)
    async with FakeKubo(pins=10, stream_faults=[fault]) as node, LocalNode(node.url) as client:
        listing = PinListing()
        with pytest.raises(NodeUnavailable, match="longer than 1 MiB"):
            [pin async for batch in client.iter_pin_batches(listing=listing) for pin in batch]
        assert listing.bad_lines == 0
        assert MAX_LINE < node.streamed < MAX_LINE + 8 * 2**20, "it stopped reading"
        assert len([pin async for pin in client.iter_pins()]) == 10  # the next is fine


async def test_sigterm_while_the_node_trickles_its_listing(tmp_path: Path) -> None:
    """Before: the daemon did not exit within 120 s. Now the listing is abandoned at once:
    the exit comes without waiting out the stop grace."""
    async with (
        FakeKubo(pins=10, stream_faults=[StreamFault("trickle", after=5, interval=0.2)]) as node,
        FakePinningService(token=TOKEN) as svc,
    ):
        run = await daemon_for(tmp_path, node.url, [ServiceSpec("a", svc.url, TOKEN)])
        daemon = run.process
        await wait_for(lambda: node.calls["pin/ls"] >= 1, 30, "the listing started")
        await asyncio.sleep(1.0)  # a few trickled lines in
        daemon.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(daemon.wait(), 60) == 0
    events = run.events()
    assert any(e["event"] == "pinsyncd stopped" for e in events)
    assert not any("abandoned" in e["event"] for e in events), "no need for the grace"


@pytest.mark.slow
async def test_sigterm_with_requests_hung_ends_after_the_grace_and_keeps_the_intents(
    tmp_path: Path,
) -> None:
    """Every add hangs (the service never answers, the timeout is a minute): the daemon
    stops after its grace, exit 0, and what was under way stays recorded as intents, which
    the next start looks up as after a crash (tests/test_crash.py) instead of adding."""
    pins = {generated_cid(i, "hung"): f"h{i}" for i in range(8)}
    async with (
        FakeKubo(extra=pins) as node,
        FakePinningService(token=TOKEN, transition_after=0.0) as svc,
    ):
        svc.inject(Fault("hang", after_apply=True), method="POST", path="/pins", times=None)
        spec = ServiceSpec("a", svc.url, TOKEN, concurrency=4, timeout="1m")
        run = await daemon_for(tmp_path, node.url, [spec])
        await wait_for(lambda: len(svc.pins) >= 4, 30, "adds under way")
        run.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(run.process.wait(), 60) == 0
        code, out, err = await acli(["status", "--json", "-c", str(run.config)], run.env)
    events = run.events()
    assert any("were abandoned" in e["event"] for e in events)
    assert any(e["event"] == "pinsyncd stopped" for e in events)
    assert code == 0, err
    assert len(svc.pins) == 4, "four under way; the others waited for a turn, never sent"
    assert json.loads(out)["services"]["a"]["sending"] == 8, "every one still an intent"


@pytest.mark.slow
async def test_a_listing_that_ends_with_an_error_trailer_unpins_nothing(tmp_path: Path) -> None:
    """Kubo reports an error met once a stream has begun only in the `X-Stream-Error`
    trailer; the body ends cleanly. Before: the 30 pins listed before the error were taken
    for the whole pinset, and with `unpin: mirror` the other 20 were deleted from the
    service once the grace was over. Now the listing is a failed one: nothing is unpinned,
    and the run says why."""
    pins = {generated_cid(i, "trailer"): f"t{i}" for i in range(50)}
    async with (
        FakeKubo(extra=pins) as node,
        FakePinningService(token=TOKEN, transition_after=0.0) as svc,
    ):
        device = Device(tmp_path / "d", node, [ServiceSpec("a", svc.url, TOKEN)], MIRROR)
        await device.sync("--wait")
        assert all(len(svc.pins_for_cid(c)) == 1 for c in pins)
        node.stream_faults = [StreamFault("trailer", after=30) for _ in range(2)]
        outputs, codes = [], []
        for _ in range(2):
            code, out, err = await acli(["sync", "--once", "-c", str(device.config)], device.env)
            outputs.append(out + err)
            codes.append(code)
            await asyncio.sleep(1.1)  # past unpin_grace (1s): the real config, not a timing claim
        assert node.stream_faults == [], "both listings broke off"
        events = await device.sync()
        assert not [e for e in events if e["event"] == "deleted pins"]
        assert all(len(svc.pins_for_cid(c)) == 1 for c in pins), "nothing unpinned"
    assert codes == [69, 69], (
        "a one-shot sync with a broken listing fails: the node could not be used"
    )
    assert all("the listing broke off): fake: datastore closed" in text for text in outputs)
    assert "Traceback" not in "".join(outputs)
