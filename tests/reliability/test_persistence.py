"""Persistence: the embedded Redis keeps its data across restarts (append-only file).

Settle and ledger idempotency per clearing id are proved in tests/auction/test_ledger.py and
tests/auction/test_accounts_holds.py (a repeated append or settle changes nothing).
"""

from __future__ import annotations

from pathlib import Path

import redis

from auction.embedded import EmbeddedRedis


def test_embedded_redis_keeps_data_across_restarts(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path)
    server.start()
    try:
        client = redis.Redis(unix_socket_path=str(server.socket))
        client.set("kept", "yes")
        client.xadd("ledger", {"clearing_id": "clr_1"})
        client.close()
    finally:
        server.stop()
    assert (tmp_path / "appendonly.aof").exists() or (tmp_path / "appendonlydir").exists()
    server.start()
    try:
        client = redis.Redis(unix_socket_path=str(server.socket))
        assert client.get("kept") == b"yes"
        assert client.xlen("ledger") == 1
        client.close()
    finally:
        server.stop()
