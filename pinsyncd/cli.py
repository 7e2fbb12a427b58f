"""The `pinsyncd` command line: parses arguments, runs one command, returns its exit code."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pinsyncd import __version__
from pinsyncd.config import EX_CONFIG, Config, ConfigError, default_config_path, load_config
from pinsyncd.durations import format_duration


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pinsyncd",
        description="Keep a local IPFS node's pins backed up on remote pinning services.",
    )
    parser.add_argument("--version", action="version", version=f"pinsyncd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser(
        "check-config", help="validate the config file and print every problem found"
    )
    _add_config_option(check)
    return parser


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="config file (default: $PINSYNCD_CONFIG, then /etc/pinsyncd/config.yaml)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config_path: Path = args.config or default_config_path()
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem.render(exc.filename), file=sys.stderr)
        count = len(exc.problems)
        print(
            f"pinsyncd: {config_path}: {count} problem{'s' * (count != 1)}, nothing was started",
            file=sys.stderr,
        )
        return EX_CONFIG
    if args.command == "check-config":
        return _check_config(config)
    raise AssertionError(f"unhandled command {args.command}")  # argparse guards this


def _check_config(config: Config) -> int:
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{config.source}: OK")
    print(f"  node     {config.node.api}")
    print(f"  interval {format_duration(config.sync.interval)}")
    print(f"  state    {config.state_path}")
    for service in config.services:
        print(
            f"  service  {service.name}: {service.endpoint} "
            f"(token from {service.token.source}, concurrency {service.concurrency})"
        )
    return 0
