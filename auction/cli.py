"""The `auction` command: serve, demo, bench, admin commands, simulated providers and bidders."""

from __future__ import annotations

import argparse
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
    import os

    from auction.serve import configure_logging, serve

    settings = load_settings(args, dict(os.environ))
    configure_logging(settings.log_level)
    serve(settings)
    return 0


COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Handler]] = {
    "serve": ("run the marketplace (HTTP API and WebSockets)", _add_server_flags, _serve),
}


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser; every command has --help."""
    parser = argparse.ArgumentParser(
        prog="auction",
        description="A real-time auction marketplace for LLM inference.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (summary, add_arguments, handler) in COMMANDS.items():
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
