"""Shared inputs for the bidder session tests: the invalid-offer table and offer strategies."""

from __future__ import annotations

from hypothesis import strategies as st

from tests.bidders.session_kit import DELETE, offer

# -- invalid offers and the reason each is rejected for ----------------------------------------

INVALID_OFFERS: list[tuple[dict[str, object], str]] = [
    (offer(offer_id=DELETE), "offer_id"),
    (offer(offer_id=""), "offer_id"),
    (offer(offer_id="has space"), "offer_id"),
    (offer(offer_id="a/b"), "offer_id"),
    (offer(offer_id="x" * 129), "offer_id"),
    (offer(offer_id=12), "offer_id"),
    (offer(model="gpt-99"), "not in the catalogue"),
    (offer(model=DELETE), "model"),
    (offer(model=["gpt-4o"]), "model"),
    (offer(input_usd_per_mtok=DELETE), "input_usd_per_mtok is required"),
    (offer(output_usd_per_mtok=DELETE), "output_usd_per_mtok is required"),
    (offer(input_usd_per_mtok="0"), "greater than 0"),
    (offer(output_usd_per_mtok="-1"), "greater than 0"),
    (offer(input_usd_per_mtok="0.1234567"), "6 decimal places"),
    (offer(input_usd_per_mtok="NaN"), "finite"),
    (offer(input_usd_per_mtok="Infinity"), "finite"),
    (offer(input_usd_per_mtok="cheap"), "not a decimal"),
    (offer(input_usd_per_mtok=True), "boolean"),
    (offer(output_usd_per_mtok="1e12"), "implausibly large"),
    (offer(cached_input_usd_per_mtok="0.60"), "must not exceed"),
    (offer(cached_input_usd_per_mtok="0"), "greater than 0"),
    (offer(quantization="q4_k_m"), "quantization"),
    (offer(capacity=DELETE), "capacity"),
    (offer(capacity=64), "capacity"),
    (offer(capacity={}), "capacity.concurrency"),
    (offer(capacity={"concurrency": 0}), "capacity.concurrency"),
    (offer(capacity={"concurrency": 100_001}), "capacity.concurrency"),
    (offer(capacity={"concurrency": 1.5}), "capacity.concurrency"),
    (offer(capacity={"concurrency": True}), "capacity.concurrency"),
    (offer(capacity={"concurrency": "8"}), "capacity.concurrency"),
    (offer(capacity={"concurrency": 8, "tokens_per_minute": 0}), "tokens_per_minute"),
    (offer(capacity={"concurrency": 8, "burst": 2}), "'burst'"),
    (offer(latency="fast"), "latency"),
    (offer(latency={"ttft_ms": 0}), "latency.ttft_ms"),
    (offer(latency={"ttft_ms": 250.5}), "latency.ttft_ms"),
    (offer(latency={"output_tokens_per_s": -3}), "latency.output_tokens_per_s"),
    (offer(latency={"p99_ms": 3}), "'p99_ms'"),
    (offer(context_window=131073), "never widen"),
    (offer(context_window=0), "context_window"),
    (offer(max_output_tokens=8193), "never widen"),
    (offer(max_output_tokens="8192"), "max_output_tokens"),
    (offer(features=["vision"]), "lacks feature"),
    (offer(features=["telepathy"]), "unknown feature"),
    (offer(features="tools"), "features"),
    (offer(features=["tools", 3]), "features"),
    (offer(region=""), "region"),
    (offer(region="x" * 33), "region"),
    (offer(region="us east"), "region"),
    (offer(region=1), "region"),
    (offer(ttl_ms=999), "ttl_ms"),
    (offer(ttl_ms=60_001), "ttl_ms"),
    (offer(ttl_ms=15000.0), "ttl_ms"),
    (offer(upstream_model=""), "upstream_model"),
    (offer(upstream_model="bad\nname"), "upstream_model"),
    (offer(upstream_model="x" * 257), "upstream_model"),
    (offer(color="blue", price=1), "unknown field(s): 'color', 'price'"),
]


# -- offer-ish JSON for the hypothesis properties ---------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=8,
)
FIELD_NAMES = st.sampled_from([*sorted(offer()), "junk"])
# Mostly near-valid offers (the example with one field replaced by any JSON value), so that the
# property reaches the book path often, plus some arbitrary objects.
NEAR_VALID = st.builds(
    lambda offer_id, model, extra: {**offer(offer_id=offer_id, model=model), **extra},
    st.sampled_from(["a", "b", "c", "bad id"]),
    st.sampled_from(["gpt-4o", "llama-3.1-70b-instruct"]),
    st.dictionaries(FIELD_NAMES, JSON_VALUES, max_size=1),
)
OFFERISH = NEAR_VALID | NEAR_VALID | st.dictionaries(FIELD_NAMES, JSON_VALUES, max_size=8)
