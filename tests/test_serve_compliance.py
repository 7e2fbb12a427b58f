"""`pinsyncd serve` judged by the official compliance suite
(`@ipfs-shipyard/pinning-service-compliance`, tests/compliance.py), pinning into a real Kubo."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.compliance import run_compliance
from tests.peers import KuboNode
from tests.serve_process import serve_process

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(400),
]

MATCH_CHECK = "Can create a pin with name='<name>'"
# The only expectations a spec-faithful server fails, and why. The suite's matchPin
# (src/checks/get/matchPin.ts) creates a pin named with a fresh UUID, then lists
# `GET /pins?name=...&match=exact|iexact|partial|ipartial` WITHOUT a status filter and expects
# that pin back (count 1, the same name). The spec's `status` filter defaults to `pinned`, and
# the pin is of random data that exists nowhere, so it is never `pinned` (here the node is
# offline: the pin fails at once instead of hanging): every one of those four listings rightly
# finds nothing. Anything else failing is a regression.
MATCH_LISTING_FAILURES = {
    f"{MATCH_CHECK} > Can retrieve pin with name '<name>' via the '{match}' "
    f"TextMatchingStrategy > {expectation}"
    for match in ("exact", "iexact", "partial", "ipartial")
    for expectation in ("Count is equal to 1", "Name matches name provided during creation")
}


def test_pinsyncd_serve_passes_the_compliance_suite(
    kubo_factory: Callable[..., KuboNode], tmp_path: Path
) -> None:
    node = kubo_factory("node", online=False)
    # An offline node listens on no swarm address, so it has none to hand out as delegates
    # (and serve answers 503 without any): name one, on loopback, with the node's real peer ID.
    delegate = f"/ip4/127.0.0.1/tcp/4001/p2p/{node.rpc('id')['ID']}"
    token = secrets.token_urlsafe(32)
    extra = f"delegates:\n  - {delegate}"
    with serve_process(tmp_path, node.api_url, {"judge": token}, extra=extra) as serve:
        report = run_compliance(serve.url, token, timeout=300)
        log = serve.tail()
    explained = f"{report.explain()}\n--- pinsyncd serve's log:\n{log}"

    assert report.complete, explained
    assert report.summary["checks"] == len(report.checks) == 9, explained
    assert report.failing_expectations == MATCH_LISTING_FAILURES, explained
    assert report.failing_checks == {MATCH_CHECK}, explained
