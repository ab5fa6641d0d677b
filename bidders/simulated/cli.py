"""`auction simulate-provider`: the flags and the runner of a simulated provider process."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import cast

from bidders.simulated.behaviour import FAULT_ALIASES, FAULT_KINDS, SimConfig, parse_fault
from bidders.simulated.server import SimulatedProvider, run
from clearing.types import API_NAMES, ApiName

SUMMARY = "run a simulated LLM provider (OpenAI, Anthropic or Gemini wire format) on 127.0.0.1"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The simulate-provider flags, for `auction simulate-provider` and `python -m`."""
    add = parser.add_argument
    add("--api", required=True, choices=sorted(API_NAMES), help="wire format to speak")
    add("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    add("--port", type=int, default=0, help="port to listen on (default: any free port)")
    add("--ttft-ms", type=int, default=0, help="time to first token (default 0)")
    add("--tokens-per-s", type=float, default=0.0, help="output pace; 0 = unpaced (default)")
    add("--reply-tokens", type=int, default=48, help="natural reply length in tokens")
    add("--tokens-per-chunk", type=int, default=1, help="tokens per streamed event")
    add("--api-key", help="the only key accepted (default: any key, or none)")
    add("--models", nargs="+", default=[], metavar="MODEL", help="models served (default any)")
    add("--capacity", type=int, help="declared concurrency; excess is counted in /_sim/stats")
    add("--fault-rate", type=float, default=0.0, help="share of requests given a random fault")
    kinds = [*FAULT_KINDS, *FAULT_ALIASES]
    add("--fault-kinds", nargs="+", default=["rate_limit", "server_error"], choices=kinds)
    add("--seed", type=int, default=0, help="seed of the random faults")
    add("--max-hang-s", type=float, default=30.0, help="longest a timeout fault holds a request")
    add("--slow-first-byte-ms", type=int, default=2_000, help="delay of slow_first_byte faults")
    add("--retry-after-s", type=int, default=1, help="retry-after sent with 429 answers")
    add("--cache-min-tokens", type=int, default=1_024, help="shortest prefix the cache keeps")


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """Settings from parsed flags; ValueError when they do not make sense together."""
    return SimConfig(
        ttft_ms=args.ttft_ms,
        output_tokens_per_s=args.tokens_per_s,
        reply_tokens=args.reply_tokens,
        tokens_per_chunk=args.tokens_per_chunk,
        api_key=args.api_key,
        models=tuple(args.models),
        capacity=args.capacity,
        fault_rate=args.fault_rate,
        fault_kinds=tuple(parse_fault(kind) for kind in args.fault_kinds),
        seed=args.seed,
        max_hang_s=args.max_hang_s,
        slow_first_byte_ms=args.slow_first_byte_ms,
        retry_after_s=args.retry_after_s,
        cache_min_tokens=args.cache_min_tokens,
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C; 0 on a clean stop, 2 for bad flags, 1 when the port cannot be had."""
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"simulate-provider: {exc}", file=sys.stderr)
        return 2
    api = cast(ApiName, args.api)

    def ready(provider: SimulatedProvider) -> None:
        print(
            f"simulated {api} provider: base URL {provider.base_url}"
            f" (stats: {provider.url}/_sim/stats); Ctrl-C to stop",
            flush=True,
        )

    try:
        run(api, args.host, args.port, config, on_ready=ready)
    except OSError as exc:
        print(
            f"simulate-provider: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr
        )
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="simulate-provider", description=SUMMARY)
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))
