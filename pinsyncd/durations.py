"""Durations as users write them in the config: `30s`, `10m`, `2h`, `1d`, `1h30m`, `500ms`."""

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str) -> float:
    """Return the number of seconds `text` stands for; raise ValueError with a readable reason."""
    compact = text.strip().replace(" ", "")
    if not compact:
        raise ValueError("empty duration; write e.g. 30s, 10m, 2h or 1d")
    position = 0
    seconds = 0.0
    for match in _PART.finditer(compact):
        if match.start() != position:
            break
        seconds += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if position != len(compact):
        if re.fullmatch(r"\d+(\.\d+)?", compact):
            raise ValueError(f"{text!r} has no unit; write e.g. {compact}s or {compact}m")
        raise ValueError(f"{text!r} is not a duration; write e.g. 30s, 10m, 2h, 1d or 1h30m")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest readable form of `seconds`, e.g. 5400 -> '1h30m'."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    remaining = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if remaining >= size:
            count, remaining = divmod(remaining, size)
            parts.append(f"{count}{unit}")
    return "".join(parts)
