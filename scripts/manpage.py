"""Writes the man page, man/pinsyncd.1, from the command line's own parser (with
argparse-manpage) and the sections in man/pinsyncd.1.include, so that it says what
`pinsyncd --help` says: `.venv/bin/python -m scripts.manpage`. tests/test_manpage.py fails
when the committed page is stale."""

from __future__ import annotations

import argparse
import platform
import tomllib
from importlib.metadata import version
from pathlib import Path

from argparse_manpage.manpage import Manpage

from pinsyncd import cli

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "man" / "pinsyncd.1"
SECTIONS = ROOT / "man" / "pinsyncd.1.include"
REGENERATE = ".venv/bin/python -m scripts.manpage"


def generator() -> str:
    """What made the page: argparse's help text differs between Python versions (3.13 shows
    `-c, --config FILE`), and the layout between argparse-manpage versions."""
    python = ".".join(platform.python_version_tuple()[:2])
    return f"argparse-manpage {version('argparse-manpage')}, Python {python}"


def render(date: str | None = None) -> str:
    """The page's text, dated `date` (YYYY-MM-DD; default today, or $SOURCE_DATE_EPOCH)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    data: dict[str, object] = {
        "project_name": "pinsyncd",
        "version": project["version"],
        "description": "keep a local IPFS node's pins backed up on remote pinning services",
        "url": project["urls"]["Homepage"],
        "manual_title": "pinsyncd manual",
        "include": str(SECTIONS),
    }
    if date is not None:
        data["date"] = date
    page = str(Manpage(cli._parser(), _data=data))
    return f'.\\" Made by scripts/manpage.py ({generator()}); do not edit.\n{page}'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=PAGE, help=f"default: {PAGE}")
    args = parser.parse_args()
    args.output.write_text(render(), encoding="utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
