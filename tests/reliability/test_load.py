"""Load with faults (CI size): two server processes, 30% provider faults, every promise kept."""

from __future__ import annotations

from auction.reliability_bench import LoadSize, run_load


async def test_load_with_faults_keeps_every_promise(redis_url: str, key_prefix: str) -> None:
    figures = await run_load(redis_url, key_prefix, LoadSize(requests=100, keys=5, offers=8))
    assert figures["violations"] == []
    statuses = figures["statuses"]
    assert isinstance(statuses, dict)
    assert statuses.get("200", 0) >= 90, figures  # 402s for the tight key, rare 502s only
    assert statuses.get("402", 0) >= 1, figures  # the tight budget did bind
    assert isinstance(figures["faults_injected"], int) and figures["faults_injected"] >= 10
    assert figures["charged_nanos"] == figures["ledger_nanos"] != 0
