"""What is wrong with a config: each problem with its key path and line (`Problem`), all of
them at once (`ConfigError`), and pydantic's errors said that way."""

from __future__ import annotations

from dataclasses import dataclass

from pinsyncd.exits import EX_CONFIG as EX_CONFIG


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config: where (key path, line) and what."""

    path: str
    message: str
    line: int | None = None

    def render(self, filename: str) -> str:
        where = f"{filename}:{self.line}" if self.line else filename
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """The config cannot be used; `problems` lists every reason at once."""

    def __init__(self, filename: str, problems: list[Problem]) -> None:
        self.filename = filename
        self.problems = sorted(problems, key=lambda p: (p.line is None, p.line or 0))
        super().__init__("\n".join(p.render(filename) for p in self.problems))


def render_loc(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


Lines = dict[tuple[str | int, ...], int]


def line_for(loc: tuple[str | int, ...], lines: Lines) -> int | None:
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return lines.get(())
