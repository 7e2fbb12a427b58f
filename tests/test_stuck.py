"""Why a pin is stuck: the node cannot dial the service's delegates, and no origins went with
the pins, so neither side can reach the other. Said in `status` and, once per service and
cause, at info level. Real Kubo dials a delegate that is a real Kubo, stopped."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import structlog

from pinsyncd.delegates import DelegateDialer, cause_of
from pinsyncd.kubo import LocalNode
from pinsyncd.status import render_table
from pinsyncd.store.readonly import read_status
from tests.fake_psa import FakePinningService
from tests.peers import KuboNode
from tests.test_policy import TOKEN, Engine, Svc, make_config

DIAL_EVENT = "your node cannot dial a service's delegates"


def stopped_delegate(kubo_factory: Callable[..., KuboNode], name: str) -> str:
    """The address of a real Kubo that has stopped: dialling it is refused."""
    gone = kubo_factory(name)
    identity = gone.rpc("id")
    address = next(a for a in identity["Addresses"] if a.startswith("/ip4/127.0.0.1/tcp/"))
    gone.stop()
    return address


async def test_a_pin_stuck_on_delegates_that_cannot_be_dialled_says_why(
    tmp_path: Path, kubo_factory: Callable[..., KuboNode]
) -> None:
    node = kubo_factory("stuck")
    cid = node.cli("add", "-Q", "--pin=false", stdin=b"a pin that cannot leave this node")
    node.cli("pin", "add", "--name", "stuck", cid)
    delegate = stopped_delegate(kubo_factory, "gone")
    async with FakePinningService(token=TOKEN, delegates=[delegate]) as svc:  # stays queued
        config = make_config(tmp_path, node.api_url, [Svc("s", svc.url)], origins="public")
        async with Engine(config) as run:
            with structlog.testing.capture_logs() as logs:
                for _ in range(4):
                    await run.cycle()
                    await run.engine.dialer.drain(within=30)
    told = [e for e in logs if e["event"].startswith(DIAL_EVENT)]
    assert len(told) == 1, "once per service and cause, not once per cycle or pin"
    assert told[0]["service"] == "s" and told[0]["delegate"] == delegate
    assert told[0]["error"] == "connection refused" and told[0]["origins_sent"] == 0
    assert "no origins were sent" in told[0]["hint"]
    assert told[0]["log_level"] == "info"

    status = read_status(config.state_path, ["s"])
    dials = status["services"]["s"]["delegates_unreachable"]
    assert dials["delegates"] == [delegate] and dials["cause"] == "connection refused"
    assert dials["origins_sent"] == 0 and "connection refused" in dials["error"]
    table = render_table(status)
    assert f"your node cannot dial its delegates ({delegate}): connection refused" in table
    assert "no origins were sent, so it cannot reach your node either" in table


async def test_dial_trouble_clears_when_a_dial_works_and_is_said_again_after(
    kubo_factory: Callable[..., KuboNode],
) -> None:
    node = kubo_factory("dialler")
    up = kubo_factory("up")
    reachable = next(a for a in up.rpc("id")["Addresses"] if a.startswith("/ip4/127.0.0.1/"))
    refused = stopped_delegate(kubo_factory, "down")
    async with LocalNode(node.api_url) as local:
        dialer = DelegateDialer(local, ttl=0)
        with structlog.testing.capture_logs() as logs:
            for addresses in ([refused], [refused], [reachable], [refused]):
                dialer.submit(addresses, service="s", origins=2, within=0)
                await dialer.drain(within=30)
                trouble = dialer.trouble("s")
                if addresses == [refused]:
                    assert trouble is not None and trouble.addresses == (refused,)
                    assert trouble.origins == 2
                else:  # the service now gives a delegate that works
                    assert trouble is None
    told = [e for e in logs if e["event"].startswith(DIAL_EVENT)]
    assert len(told) == 2, "said once, then again after every delegate worked in between"
    assert all("hint" not in e for e in told), "origins were sent"
    assert dialer.trouble("other") is None


def test_the_cause_of_a_dial_error_is_its_last_words() -> None:
    error = (
        "failed to dial 12D3KooWAbc: all dials failed\n"
        "  * [/ip4/127.0.0.1/tcp/4001] dial tcp4 127.0.0.1:4001: connect: connection refused"
    )
    assert cause_of(error) == "connection refused"
    assert cause_of("dial backoff") == "dial backoff"
    assert cause_of("") == ""
