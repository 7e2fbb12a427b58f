"""The commands run on uvloop when the `speed` extra installed it, and on asyncio's own loop
when asked (`PINSYNCD_EVENT_LOOP=asyncio`) or when uvloop is not there."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = (
    "import asyncio\n"
    "from pinsyncd import loop\n"
    "async def which():\n"
    "    return type(asyncio.get_running_loop()).__module__\n"
    "print(loop.run(which()))\n"
)


def loop_module(**env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout.strip()


def test_uvloop_when_installed_asyncio_when_asked() -> None:
    pytest.importorskip("uvloop")
    assert loop_module().startswith("uvloop")
    assert loop_module(PINSYNCD_EVENT_LOOP="asyncio").startswith("asyncio")


def test_asyncio_when_uvloop_is_missing() -> None:
    """`-c` with `uvloop` made unimportable, as on an install without the extra."""
    blocker = "import sys; sys.modules['uvloop'] = None\n"
    result = subprocess.run(
        [sys.executable, "-c", blocker + PROBE],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout.strip().startswith("asyncio")
