"""`auction bidder run CONFIG`: run one provider's bidder from a config file until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from bidders.config import BidderConfig, BidderConfigError, load_bidder_config
from bidders.runtime import BidderGaveUp, BidderRefused, build_bidder

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `bidder run` arguments to a (sub)parser."""
    parser.add_argument("config", type=Path, help="bidder config file (YAML or JSON)")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Run the bidder named by `args.config`; returns the process exit status.

    The token is in the file (`token`) or in an environment variable the file names
    (`token_env`). SIGINT and SIGTERM close the connection cleanly (the marketplace then
    cancels the session's offers) and exit 0; a refused token or provider exits 1, a bad
    config 2.
    """
    logging.basicConfig(
        level=str(getattr(args, "log_level", "info")).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_bidder_config(args.config, environ=os.environ)
    except BidderConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        asyncio.run(_run(config))
    except (BidderRefused, BidderGaveUp) as exc:
        print(f"bidder stopped: {exc}", file=sys.stderr)
        return 1
    return 0


async def _run(config: BidderConfig) -> None:
    bidder = build_bidder(config)
    loop = asyncio.get_running_loop()
    for sig in _SIGNALS:
        loop.add_signal_handler(sig, bidder.stop)
    try:
        await bidder.run()
    finally:
        for sig in _SIGNALS:
            loop.remove_signal_handler(sig)
