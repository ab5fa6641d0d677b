"""The `auction` command: serve, demo, bench, admin commands, simulated providers and bidders."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from auction.settings import Settings, SettingsError

Handler = Callable[[argparse.Namespace], int]


def _add_server_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8000)")
    parser.add_argument("--redis-url", help="Redis to use (default: REDIS_URL, else embedded)")
    parser.add_argument("--workers", type=int, help="server processes sharing one Redis")
    parser.add_argument("--data-dir", type=Path, help="embedded Redis data folder (./.auction)")
    parser.add_argument("--catalogue", type=Path, help="operator catalogue file (JSON)")
    parser.add_argument("--config", type=Path, help="YAML settings file")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])


def load_settings(args: argparse.Namespace, environ: dict[str, str]) -> Settings:
    """Settings from the parsed flags, the environment and the optional --config file."""
    flags = {
        name: getattr(args, name, None)
        for name in ("host", "port", "redis_url", "workers", "data_dir", "catalogue", "log_level")
    }
    return Settings.load(flags, environ, getattr(args, "config", None))


def _serve(args: argparse.Namespace) -> int:
    from auction.serve import configure_logging, serve

    settings = load_settings(args, dict(os.environ))
    configure_logging(settings.log_level)
    serve(settings)
    return 0


def _add_demo_flags(parser: argparse.ArgumentParser) -> None:
    _add_server_flags(parser)
    parser.add_argument(
        "--traffic", type=float, default=2.0, help="demo client requests per second (0: none)"
    )
    parser.add_argument("--no-live", action="store_true", help="log lines instead of a live view")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")


def _demo(args: argparse.Namespace) -> int:
    from auction.demo import run_demo
    from auction.serve import configure_logging, redis_for, settle_heap

    settings = load_settings(args, dict(os.environ))
    configure_logging("warning" if not args.no_live else settings.log_level)
    live = not args.no_live and sys.stdout.isatty()
    with redis_for(settings) as resolved:
        settle_heap()  # everything imported is start-up state, as in `auction serve`
        asyncio.run(run_demo(resolved, rate=args.traffic, live=live, duration_s=args.duration))
    return 0


def _add_bench_flags(parser: argparse.ArgumentParser) -> None:
    from auction.bench import add_arguments

    add_arguments(parser)


def _bench(args: argparse.Namespace) -> int:
    from auction.bench import run_from_args

    return run_from_args(args, dict(os.environ))


def _add_bidder_flags(parser: argparse.ArgumentParser) -> None:
    from bidders.bidder_cli import add_arguments

    sub = parser.add_subparsers(dest="bidder_command", required=True, metavar="ACTION")
    add_arguments(sub.add_parser("run", help="run a bidder from a config file"))


def _bidder(args: argparse.Namespace) -> int:
    from bidders.bidder_cli import run_from_args

    return run_from_args(args)


def _add_simulate_flags(parser: argparse.ArgumentParser) -> None:
    from bidders.simulated.cli import add_arguments

    add_arguments(parser)


def _simulate(args: argparse.Namespace) -> int:
    from bidders.simulated.cli import run_from_args

    return run_from_args(args)


def _commands() -> dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Handler]]:
    from auction import admin_cli

    return {
        "serve": ("run the marketplace (HTTP API and WebSockets)", _add_server_flags, _serve),
        "demo": (
            "run a whole market on this machine with a live view (Ctrl-C stops it)",
            _add_demo_flags,
            _demo,
        ),
        "bench": ("run benchmarks and print their figures", _add_bench_flags, _bench),
        **admin_cli.COMMANDS,
        "bidder": (
            "run a provider's bidder: auction bidder run CONFIG",
            _add_bidder_flags,
            _bidder,
        ),
        "simulate-provider": (
            "serve a simulated OpenAI, Anthropic or Gemini provider on 127.0.0.1",
            _add_simulate_flags,
            _simulate,
        ),
    }


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser; every command has --help."""
    parser = argparse.ArgumentParser(
        prog="auction",
        description="A real-time auction marketplace for LLM inference.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (summary, add_arguments, handler) in _commands().items():
        command = sub.add_parser(name, help=summary, description=summary)
        add_arguments(command)
        command.set_defaults(handler=handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `auction` console script."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except SettingsError as exc:
        print(f"auction: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
