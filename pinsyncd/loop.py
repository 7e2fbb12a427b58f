"""How pinsyncd's commands run their event loop: uvloop when the `speed` extra installed it,
else asyncio's own. `PINSYNCD_EVENT_LOOP=asyncio` asks for asyncio's whatever is installed
(to compare, or to rule uvloop out when looking for a bug)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")


def run(main: Coroutine[Any, Any, _T]) -> _T:
    if os.environ.get("PINSYNCD_EVENT_LOOP", "").lower() != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)
