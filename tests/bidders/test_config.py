"""The bidder config file, `run_bidder`, and the `auction bidder run` entry point."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path

import pytest
from websockets.http11 import Request, Response
from websockets.sync.server import ServerConnection, serve

from bidders.bidder_cli import add_arguments, run_from_args
from bidders.config import BidderConfigError, load_bidder_config, ws_url
from bidders.pricing import RandomWalk, StaticPrices, TimeOfDaySchedule, UtilizationPricing
from bidders.runtime import Backoff, run_bidder
from clearing.money import PriceMicros
from tests.bidders.runtime_kit import TOKEN, Market, start, wait_until

HOUR = 3_600_000
EXAMPLE = """
marketplace: http://127.0.0.1:8000
token_env: ACME_BIDDER_TOKEN
provider: acme
agent: acme-bidder/0.3
reprice_ms: 500
reconnect: {base_ms: 250, cap_ms: 10000}
offers:
  - offer_id: llama-70b-fast
    model: llama-3.1-70b-instruct
    upstream_model: meta-llama/Meta-Llama-3.1-70B-Instruct-Turbo
    cached_input_usd_per_mtok: "0.30"
    quantization: fp8
    capacity: {concurrency: 64, tokens_per_minute: 2000000}
    latency: {ttft_ms: 250, output_tokens_per_s: 180}
    region: us
    ttl_ms: 15000
    strategy: {kind: static, input: "0.59", output: "0.79"}
  - offer_id: llama-8b-night
    model: llama-3.1-8b-instruct
    capacity: {concurrency: 32}
    strategy:
      kind: time_of_day
      input: 0.05
      output: 0.08
      off_peak: {discount: 0.3, start_hour: 22, end_hour: 6}
  - offer_id: busy
    model: gpt-4o
    capacity: {concurrency: 8}
    strategy:
      kind: utilization
      floor: {input: "2.50", output: "10"}
      ceiling: {input: "5", output: "20"}
  - offer_id: walk
    model: gpt-4o-mini
    capacity: {concurrency: 8}
    strategy: {kind: random_walk, input: "0.15", output: "0.60", seed: 7}
"""


def write(tmp_path: Path, text: str, name: str = "bidder.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_documented_example_loads(tmp_path: Path) -> None:
    config = load_bidder_config(write(tmp_path, EXAMPLE), {"ACME_BIDDER_TOKEN": "bt_x"})
    assert config.url == "ws://127.0.0.1:8000/v1/bidders/ws"
    assert config.token.get_secret_value() == "bt_x" and config.provider == "acme"
    options = config.options()
    assert options.agent == "acme-bidder/0.3" and options.reprice_ms == 500
    assert options.backoff == Backoff(250, 10_000)
    plans = config.plans()
    kinds = [type(p.strategy) for p in plans]
    assert kinds == [StaticPrices, TimeOfDaySchedule, UtilizationPricing, RandomWalk]
    assert plans[0].offer(plans[0].strategy.prices(0)) == {
        "offer_id": "llama-70b-fast",
        "model": "llama-3.1-70b-instruct",
        "upstream_model": "meta-llama/Meta-Llama-3.1-70B-Instruct-Turbo",
        "cached_input_usd_per_mtok": "0.3",
        "quantization": "fp8",
        "capacity": {"concurrency": 64, "tokens_per_minute": 2000000},
        "latency": {"ttft_ms": 250, "output_tokens_per_s": 180},
        "region": "us",
        "ttl_ms": 15000,
        "input_usd_per_mtok": "0.59",
        "output_usd_per_mtok": "0.79",
    }
    night = plans[1].strategy
    assert night.prices(12 * HOUR) == (50_000, 80_000)
    assert night.prices(23 * HOUR) == (35_000, 56_000)
    assert plans[2].strategy.prices(0) == (2_500_000, 10_000_000)
    plans[2].strategy.on_load(8, 8, 0)
    assert plans[2].strategy.prices(0) == (5_000_000, 20_000_000)
    assert config.plans()[2].strategy.prices(0) == (2_500_000, 10_000_000)  # fresh state


def test_a_cached_price_above_a_moved_input_price_is_lowered(tmp_path: Path) -> None:
    config = load_bidder_config(write(tmp_path, EXAMPLE), {"ACME_BIDDER_TOKEN": "t"})
    fast = config.plans()[0]
    body = fast.offer((PriceMicros(200_000), PriceMicros(300_000)))
    assert body["cached_input_usd_per_mtok"] == "0.2"


def test_json_config_and_inline_token(tmp_path: Path) -> None:
    data = {
        "marketplace": "wss://market.example/custom/path",
        "token": "bt_inline",
        "provider": "acme",
        "offers": [
            {
                "offer_id": "o",
                "model": "gpt-4o",
                "capacity": {"concurrency": 1},
                "strategy": {
                    "kind": "time_of_day",
                    "input": "1",
                    "output": "2",
                    "hourly": ["1"] * 23 + ["1.5"],
                },
            }
        ],
    }
    config = load_bidder_config(write(tmp_path, json.dumps(data), "bidder.json"))
    assert config.url == "wss://market.example/custom/path"
    assert config.options().backoff == Backoff()
    assert config.plans()[0].strategy.prices(23 * HOUR) == (1_500_000, 3_000_000)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8000", "ws://127.0.0.1:8000/v1/bidders/ws"),
        ("https://market.example/", "wss://market.example/v1/bidders/ws"),
        ("ws://127.0.0.1:9/v1/bidders/ws", "ws://127.0.0.1:9/v1/bidders/ws"),
    ],
)
def test_ws_url(url: str, expected: str) -> None:
    assert ws_url(url) == expected


@pytest.mark.parametrize("url", ["ftp://x", "127.0.0.1:8000", "http://"])
def test_bad_marketplace_urls(url: str) -> None:
    with pytest.raises(BidderConfigError, match="marketplace"):
        ws_url(url)


def mutate(old: str, new: str) -> str:
    assert old in EXAMPLE
    return EXAMPLE.replace(old, new, 1)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (mutate('input: "0.59"', 'input: "0.5900001"'), "6 decimal places"),
        (mutate("kind: static", "kind: auction"), "strategy"),
        (mutate("region: us", 'region: us\n    input_usd_per_mtok: "1"'), "prices come from"),
        (mutate("offer_id: busy", "offer_id: walk"), "unique"),
        (mutate("    capacity: {concurrency: 32}\n", ""), "capacity"),
        (mutate("agent: acme-bidder/0.3", "agnet: x"), "agnet"),
        (mutate("off_peak:", "hourly: [1, 1]\n      off_peak:"), "hourly"),
        (mutate("discount: 0.3", "discount: 0.1234567"), "6 decimals"),
        (mutate("reprice_ms: 500", "reprice_ms: 1"), "reprice_ms"),
        ("- just\n- a list\n", "must be a mapping"),
        ("offers: [", "cannot read"),
        (mutate("provider: acme", "provider: ''"), "provider"),
        (mutate("http://127.0.0.1:8000", "ftp://127.0.0.1"), "marketplace"),
    ],
)
def test_config_mistakes_are_reported(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(BidderConfigError, match="(?s)" + fragment.replace("(", r"\(")):
        load_bidder_config(write(tmp_path, text), {"ACME_BIDDER_TOKEN": "t"})


def test_a_missing_token_is_reported(tmp_path: Path) -> None:
    with pytest.raises(BidderConfigError, match="ACME_BIDDER_TOKEN"):
        load_bidder_config(write(tmp_path, EXAMPLE), {})
    with pytest.raises(BidderConfigError, match="cannot read"):
        load_bidder_config(tmp_path / "missing.yaml")


async def test_run_bidder_quotes_the_configured_offers(tmp_path: Path) -> None:
    market = Market()
    server = await start(market)
    port = server.sockets[0].getsockname()[1]
    text = EXAMPLE.replace("http://127.0.0.1:8000", f"http://127.0.0.1:{port}").replace(
        "model: llama-3.1-70b-instruct", "model: gpt-4o"
    )
    config = load_bidder_config(write(tmp_path, text), {"ACME_BIDDER_TOKEN": TOKEN})
    task = asyncio.create_task(run_bidder(config))
    try:
        await wait_until(lambda: bool(market.frames and market.of_type(0, "quote")))
        quote = market.of_type(0, "quote")[0]
        offers = quote["offers"]
        assert isinstance(offers, list)
        assert [o["offer_id"] for o in offers] == [
            "llama-70b-fast",
            "llama-8b-night",
            "busy",
            "walk",
        ]
        assert set(market.book) == {"llama-70b-fast", "busy"}  # the test catalogue has gpt-4o only
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        server.close()
        await server.wait_closed()


@pytest.fixture
def refusing_server() -> Iterator[int]:
    """A WebSocket server in a thread that answers every upgrade with HTTP 401."""

    def refuse(connection: ServerConnection, request: Request) -> Response:
        return connection.respond(HTTPStatus.UNAUTHORIZED, "no\n")

    with serve(lambda ws: None, "127.0.0.1", 0, process_request=refuse) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield server.socket.getsockname()[1]
        server.shutdown()
        thread.join(5)


@pytest.fixture
def quiet_root_logger() -> Iterator[None]:
    """run_from_args configures logging; put the root logger back as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="auction bidder run")
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_exit_codes(
    tmp_path: Path,
    refusing_server: int,
    quiet_root_logger: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bad = write(tmp_path, "marketplace: x\n", "bad.yaml")
    assert run_from_args(parse(str(bad), "--log-level", "warning")) == 2
    assert "invalid bidder config" in capsys.readouterr().err
    monkeypatch.setenv("ACME_BIDDER_TOKEN", "bt_wrong")
    text = EXAMPLE.replace("http://127.0.0.1:8000", f"http://127.0.0.1:{refusing_server}")
    assert run_from_args(parse(str(write(tmp_path, text)))) == 1
    assert "401" in capsys.readouterr().err
