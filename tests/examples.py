"""The interface's example offer (§3) as the market holds it once a session took it (seq 0:
the book numbers it), shared by the tests of the session that takes it and the codec that
writes it."""

from __future__ import annotations

from clearing.money import PriceMicros
from clearing.types import Offer

EXAMPLE_OFFER = Offer(
    provider="acme",
    offer_id="llama-70b-fast",
    model="llama-3.1-70b-instruct",
    input_price=PriceMicros(590_000),
    output_price=PriceMicros(790_000),
    cached_input_price=PriceMicros(300_000),
    concurrency=64,
    quality=80,
    context_window=131_072,
    max_output_tokens=8192,
    features=frozenset({"tools", "json_mode", "streaming"}),
    seq=0,
    upstream_model="meta-llama/Meta-Llama-3.1-70B-Instruct-Turbo",
    quantization="fp8",
    tokens_per_minute=2_000_000,
    ttft_ms=250,
    output_tokens_per_s=180,
    region="us",
    ttl_ms=15_000,
)
