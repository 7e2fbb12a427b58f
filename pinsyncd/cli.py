"""The `pinsyncd` command line: parses arguments, loads the config, runs one command, and
returns its exit code (78 for a config error, 1 for any other failure, with one line why)."""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pinsyncd import exits, health_check, journal
from pinsyncd.config import EX_CONFIG, Config, ConfigError, default_config_path, load_config
from pinsyncd.config.schema import peer_id
from pinsyncd.durations import format_duration, parse_duration
from pinsyncd.logs import CurrentStream, configure_logging
from pinsyncd.store.errors import StateError, sqlite_problem
from pinsyncd.store.readonly import REQUEST_STATUSES

if TYPE_CHECKING:
    from pinsyncd.restore.run import RestoreOptions


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _peer_id(text: str) -> str:
    try:
        return peer_id(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _statuses(text: str) -> list[str]:
    wanted = [part.strip() for part in text.split(",") if part.strip()]
    if unknown := [s for s in wanted if s not in REQUEST_STATUSES]:
        raise argparse.ArgumentTypeError(
            f"unknown status {unknown[0]!r} (have: {', '.join(REQUEST_STATUSES)})"
        )
    return wanted


class _Version(argparse.Action):
    """`--version`, the version read only when it is asked for."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_args: Any, **_kwargs: Any) -> None:
        from pinsyncd import __version__

        print(f"pinsyncd {__version__}")
        parser.exit()


def _global_options(parser: argparse.ArgumentParser, *, after: bool) -> None:
    """The options every command takes, before the command (`pinsyncd -c FILE status`, as
    `ipfs --api`, `restic -r`) or after it (`pinsyncd status -c FILE`). Given after the
    command, they win; not given there, they leave what was given before it alone."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if after else value

    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=default(None),
        metavar="FILE",
        help="config file (default: $PINSYNCD_CONFIG, then ~/.config/pinsyncd/config.yaml if "
        "it exists, then /etc/pinsyncd/config.yaml)",
    )
    parser.add_argument(
        "--log-level", default=default(None), choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument(
        "--log-format",
        default=default("auto"),
        choices=["auto", "json", "console"],
        help="auto: console on a terminal, JSON lines otherwise",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", default=default(False), help="log warnings only"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=default(False), help="log debug lines"
    )


def _log_level(args: argparse.Namespace) -> str:
    if args.log_level:
        return str(args.log_level)
    return "debug" if args.verbose else "warning" if args.quiet else "info"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pinsyncd",
        description="Keep a local IPFS node's pins backed up on remote pinning services.",
        epilog=exits.epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_Version, help="show the version and exit")
    _global_options(parser, after=False)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, after=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser(
        "run", parents=[common], help="run the daemon (a sync cycle every sync.interval)"
    )

    commands.add_parser(
        "serve",
        parents=[common],
        help="be a pinning service for your other devices (the serve: section): Kubo at "
        "node.api pins what they ask for",
    )

    sync = commands.add_parser(
        "sync",
        parents=[common],
        help="run one sync cycle (for timers and cron)",
        epilog=exits.epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sync.add_argument(
        "--once", action="store_true", help="one cycle, then exit (what sync always does)"
    )
    sync.add_argument(
        "--now",
        action="store_true",
        help="ignore saved backoff: failed pins and paused services are tried once more",
    )
    sync.add_argument(
        "--wait", action="store_true", help="then wait until every pin is pinned or failed"
    )
    sync.add_argument(
        "--timeout",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="with --wait: give up after this long (e.g. 30m); exit 3 if pins are pending",
    )
    sync.add_argument(
        "--dry-run", action="store_true", help="print what would be done; call no service"
    )
    sync.add_argument(
        "--json", action="store_true", help="print the outcome (or the dry run) as JSON"
    )

    status = commands.add_parser(
        "status",
        parents=[common],
        help="show what is pinned where",
        epilog=exits.epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument(
        "--failed", action="store_true", help="list the failed pins with the services' reasons"
    )
    status.add_argument(
        "--check",
        action="store_true",
        help="for monitoring: one line per problem (a service paused, failing or not synced "
        "for --max-age, pins stuck or failed for good), exit 69 or 3; exit 0 when none",
    )
    status.add_argument(
        "--max-age",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="with --check: how long a service may go without a good cycle "
        "(default: 2 x sync.interval, at least 10m)",
    )

    ls = commands.add_parser(
        "ls",
        parents=[common],
        help="list the requests on the services, from the state (like ipfs pin remote ls)",
    )
    ls.add_argument(
        "--service", action="append", default=[], metavar="NAME", help="only this service"
    )
    ls.add_argument(
        "--status",
        type=_statuses,
        default=list(REQUEST_STATUSES),
        metavar="S[,S...]",
        help=f"only these statuses (of {','.join(REQUEST_STATUSES)}; default: all)",
    )
    ls.add_argument("--cid", action="append", default=[], metavar="CID", help="only this CID")
    ls.add_argument(
        "--name", action="append", default=[], metavar="GLOB", help="only names matching this"
    )
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    show = commands.add_parser(
        "show", parents=[common], help="where one CID is: the node, and each service's request"
    )
    show.add_argument("cid", metavar="CID")
    show.add_argument("--json", action="store_true", help="machine-readable output")

    adopt = commands.add_parser(
        "adopt",
        parents=[common],
        help="list a service once and take over the pins it already has for the node's CIDs",
    )
    adopt.add_argument("--service", required=True, metavar="NAME")

    retry = commands.add_parser(
        "retry",
        parents=[common],
        help="retry failed pins (and paused services) at the next cycle, without backoff",
    )
    retry.add_argument("--service", metavar="NAME", help="only this service")
    retry.add_argument("cids", nargs="*", metavar="CID", help="only these CIDs (default: all)")

    _restore_parser(commands, common)

    completion = commands.add_parser(
        "completion",
        help="print a shell completion script, e.g. `pinsyncd completion bash > "
        "/etc/bash_completion.d/pinsyncd`",
    )
    completion.add_argument("shell", choices=["bash", "zsh", "fish", "tcsh"])
    _check_parser(commands, common)

    commands.add_parser(
        "check-config",
        parents=[common],
        help="validate the config file and print every problem found",
    )
    _setup_parsers(commands, common)
    return parser


def _setup_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    init = commands.add_parser(
        "init",
        parents=[common],
        help="write a commented config for this machine's Kubo node and the pinning services "
        "it knows (keys go to token files, mode 0600)",
    )
    init.add_argument(
        "--output",
        "-o",
        type=Path,
        metavar="FILE",
        help="where to write it (default: $PINSYNCD_CONFIG; /etc/pinsyncd/config.yaml for "
        "root; else ~/.config/pinsyncd/config.yaml)",
    )
    init.add_argument("--force", action="store_true", help="replace an existing config")
    imports = commands.add_parser(
        "import-kubo",
        parents=[common],
        help="add the pinning services Kubo knows (ipfs pin remote service ls) to the config",
    )
    imports.add_argument(
        "--dry-run", action="store_true", help="print what would be added; write nothing"
    )
    imports.add_argument(
        "--force", action="store_true", help="replace token files that hold something else"
    )
    for parser in (init, imports):
        parser.add_argument(
            "--ipfs-path",
            type=Path,
            metavar="DIR",
            help="the Kubo repo (default: $IPFS_PATH, else ~/.ipfs)",
        )


def _check_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    check = commands.add_parser(
        "check",
        parents=[common],
        help="restore drill: fetch a sample of pinned CIDs from each service, without this node",
    )
    check.add_argument(
        "--retrieval", action="store_true", required=True, help="fetch through a throwaway node"
    )
    check.add_argument("--sample", type=int, default=3, metavar="N", help="CIDs per service")
    check.add_argument("--cid", action="append", default=[], help="check this CID (repeatable)")
    check.add_argument("--service", metavar="NAME", help="only this service")
    check.add_argument(
        "--timeout", type=_duration, default=60.0, metavar="DURATION", help="no-progress limit"
    )
    check.add_argument("--ipfs-binary", metavar="PATH", help="default: $PINSYNCD_IPFS_BINARY, ipfs")
    check.add_argument(
        "--ipfs-config",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="a Kubo setting for the throwaway node (repeatable)",
    )
    check.add_argument("--json", action="store_true", help="machine-readable output")


def _restore_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    restore = commands.add_parser(
        "restore",
        parents=[common],
        help="bring the backed-up pins back onto the node (a new or an existing one)",
        description="Pin on the node, fetching from the services, what pinsyncd backed up: "
        "by default this node's own requests. Nothing is deleted, on the node or a service. "
        "Exit codes: 0 all restored, 3 some missing (the summary says which and why), "
        "1 could not run, 75 a daemon runs on the state file, 78 config error.",
    )
    whose = restore.add_mutually_exclusive_group()
    whose.add_argument(
        "--from-peer",
        action="append",
        default=[],
        type=_peer_id,
        metavar="PEERID",
        help="the pins of the node with this peer id (the old laptop's), which this node "
        "then owns, as with node.previous_peer_ids (repeatable)",
    )
    whose.add_argument(
        "--all", action="store_true", help="every pinsyncd request, whichever node made it"
    )
    restore.add_argument(
        "--service",
        action="append",
        default=[],
        metavar="NAME",
        help="restore from this service (repeatable, tried in this order; default: every "
        "configured service, in config order)",
    )
    restore.add_argument(
        "--cid", action="append", default=[], metavar="CID", help="only this CID (repeatable)"
    )
    restore.add_argument(
        "--name",
        action="append",
        default=[],
        metavar="GLOB",
        help="only pins whose name matches this glob, e.g. 'photos/*' (repeatable)",
    )
    restore.add_argument(
        "--parallel", type=int, default=8, metavar="N", help="CIDs fetched at a time (8)"
    )
    restore.add_argument(
        "--stall-timeout",
        type=_duration,
        default=120.0,
        metavar="DURATION",
        help="give up a CID when no new block came for this long (2m); no total limit",
    )
    restore.add_argument(
        "--dry-run", action="store_true", help="print what would be restored, and from where"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "completion":  # needs no config
        import shtab

        print(shtab.complete(parser, args.shell))
        return 0
    if args.command == "init":  # writes the config
        from pinsyncd.kubo_setup import command as setup

        output = args.output or args.config
        return setup.init(output, args.ipfs_path, force=args.force, env=os.environ)
    if args.command == "sync" and args.timeout is not None and not args.wait:
        parser.error("sync: --timeout needs --wait (it limits how long the wait lasts)")
    if args.command == "status" and args.max_age is not None and not args.check:
        parser.error("status: --max-age needs --check")
    json_logs = {"auto": None, "json": True, "console": False}[args.log_format]
    # The daemon under systemd (JOURNAL_STREAM set) logs JSON lines to stdout, the journal.
    under_systemd = args.command == "run" and bool(os.environ.get("JOURNAL_STREAM"))
    stream = CurrentStream("stdout") if under_systemd else None
    configure_logging(level=_log_level(args), json=json_logs, stream=stream)  # type: ignore[arg-type]
    config_path: Path = args.config or default_config_path()
    try:
        # Tokens are read later, by the commands that send requests: `status` and
        # `sync --dry-run` need none, nor does a command the running daemon carries out.
        config = load_config(config_path, tokens=False)
        return _dispatch(args, config)
    except ConfigError as exc:
        for problem in exc.problems:
            _error(problem.render(exc.filename))
        count = len(exc.problems)
        _error(f"pinsyncd: {config_path}: {count} problem{'s' * (count != 1)}, nothing was started")
        return EX_CONFIG
    except StateError as exc:
        _error(f"pinsyncd: {exc}")
        return 1
    except sqlite3.DatabaseError as exc:  # the state file failed under a one-shot command
        _error(f"pinsyncd: {sqlite_problem(config.state_path, exc, writing=True)}")
        return 1
    except KeyboardInterrupt:
        print("pinsyncd: interrupted", file=sys.stderr)
        return 130


def _error(text: str) -> None:
    """One line on stderr, at error priority when stderr is the journal."""
    print(journal.for_stream(text, "error", sys.stderr), file=sys.stderr)


def _dispatch(args: argparse.Namespace, config: Config) -> int:
    if args.command == "check-config":
        return _check_config(config.load_tokens())
    if args.command == "import-kubo":
        from pinsyncd.kubo_setup import command as setup

        return setup.import_kubo(
            config, args.ipfs_path, dry_run=args.dry_run, force=args.force, env=os.environ
        )
    if args.command == "serve":
        return _serve(config)
    serve_status = args.command == "status" and not (args.check or args.failed)
    if not config.services and not (serve_status and config.serve is not None):
        _error(
            f"pinsyncd: {config.source}: lists no services, only a serve: section; "
            f"`pinsyncd serve` uses it (to back this node up too, add services:)"
        )
        return EX_CONFIG
    if args.command in ("status", "ls", "show"):
        return _read(args, config)
    from pinsyncd import commands  # the writers' imports: aiohttp, the sync layer

    if args.command == "sync":
        if args.dry_run:
            from pinsyncd import dry_run

            return dry_run.dry_run(config, as_json=args.json)
        return commands.sync_once(
            config, wait=args.wait, timeout=args.timeout, now=args.now, as_json=args.json
        )
    if args.command == "adopt":
        return commands.adopt(config, service=args.service)
    if args.command == "retry":
        return commands.retry(config, service=args.service, cids=args.cids)
    if args.command == "run":
        return commands.run_daemon(config)
    if args.command == "restore":
        return commands.restore(config, _restore_options(args, config))
    if args.command == "check":  # the restore drill: pinsyncd/drill/
        from pinsyncd.drill.command import from_args

        return from_args(config, args)
    raise AssertionError(f"unhandled command {args.command}")  # argparse guards this


def _serve(config: Config) -> int:
    if config.serve is None:
        _error(
            f"pinsyncd: {config.source}: has no serve: section; add one with at least one "
            "user (see `Your own backup node` in the README)"
        )
        return EX_CONFIG
    problems = config.serve.token_problems()
    if problems:
        raise ConfigError(str(config.source), problems)
    from pinsyncd.serve.run import serve

    return serve(config)


def _read(args: argparse.Namespace, config: Config) -> int:
    """The commands that only read the state: quick to start (`pinsyncd.read_commands`)."""
    from pinsyncd import read_commands

    if args.command == "ls":
        return read_commands.list_requests(
            config,
            services=args.service,
            statuses=args.status,
            cids=args.cid,
            names=args.name,
            as_json=args.json,
        )
    if args.command == "show":
        return read_commands.show_pin(config, args.cid, as_json=args.json)
    if args.check:
        max_age = args.max_age or health_check.default_max_age(config.sync.interval)
        return read_commands.check_status(config, max_age=max_age)
    return read_commands.show_status(config, as_json=args.json, failed=args.failed)


def _restore_options(args: argparse.Namespace, config: Config) -> RestoreOptions:
    from pinsyncd.restore.run import RestoreOptions

    return RestoreOptions(
        services=tuple(dict.fromkeys(args.service)) or tuple(s.name for s in config.services),
        from_peers=tuple(args.from_peer),
        everyone=args.all,
        cids=tuple(args.cid),
        names=tuple(args.name),
        parallel=max(1, args.parallel),
        stall=args.stall_timeout,
        dry_run=args.dry_run,
    )


def _kubo_warnings(config: Config) -> list[str]:
    """What the node's own settings say against the config (Kubo's MFS policy on a service
    that `sync.mfs` also pins to). Asked only when `sync.mfs` is on; a node that cannot be
    reached now is no problem of the config."""
    if not config.sync.mfs:
        return []  # nothing to ask the node
    from pinsyncd import loop
    from pinsyncd.kubo import LocalNode, NodeError
    from pinsyncd.kubo_setup.overlap import mfs_warnings

    async def ask() -> list[str]:
        async with LocalNode.for_config(config, timeout=5.0) as node:
            return await mfs_warnings(config, node)

    try:
        return loop.run(ask())
    except NodeError:
        return []


def _check_config(config: Config) -> int:
    for warning in (*config.warnings, *_kubo_warnings(config)):
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{config.source}: OK")
    secret = f" (RPC secret from {config.node_token.source})" if config.node_token else ""
    print(f"  node     {config.node.api}{secret}")
    print(f"  interval {format_duration(config.sync.interval)}")
    print(f"  state    {config.state_path}")
    for service in config.services:
        print(
            f"  service  {service.name}: {service.endpoint} "
            f"(token from {service.token.source}, concurrency {service.concurrency})"
        )
    if config.serve is not None:
        settings = config.serve.settings
        scheme = "https" if config.serve.tls else "http"
        print(f"  serve    {scheme}://{settings.listen} (state {config.serve.state_path})")
        for account in config.serve.accounts:
            limit = f", at most {account.max_pins} pins" if account.max_pins else ""
            print(f"  user     {account.name} (token from {account.token.source}{limit})")
    return 0
