"""How a command says it cannot go on: one line on stderr, exit 1; and the check of the
services and CIDs named on the command line."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pinsyncd import journal
from pinsyncd.config import Config
from pinsyncd.logs import printable, redact_text


def fail(message: str) -> int:
    line = f"pinsyncd: {printable(redact_text(message))}"
    print(journal.for_stream(line, "error", sys.stderr), file=sys.stderr)
    return 1


def unknown_argument(config: Config, services: Sequence[str], cids: Sequence[str]) -> int | None:
    """Exit 1 with one line when a service named on the command line is not in the config
    or a CID given is not a CID; None when all are fine."""
    known = [s.name for s in config.services]
    if unknown := [name for name in services if name not in known]:
        return fail(
            f"no service named {unknown[0]!r} in {config.source} (have: {', '.join(known)})"
        )
    from pinsyncd.cids import InvalidCIDError, parse_cid  # multiformats: only when needed

    for cid in cids:
        try:
            parse_cid(cid)
        except InvalidCIDError as exc:
            return fail(str(exc))
    return None
