"""Sizes as people read them: `9.0 KiB`, `1.2 GiB`, `512 B`."""

from __future__ import annotations


def human_bytes(size: float) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size:.0f} B"
