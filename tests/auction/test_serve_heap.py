"""`settle_heap`: a server process's start-up objects frozen, later cycles still collected.

Run in a child process: it changes the collector of the process it runs in.
"""

from __future__ import annotations

import subprocess
import sys

CHILD = """
import gc
from auction.app import create_app
from auction.serve import settle_heap
from auction.settings import Settings

create_app(Settings(redis_url="redis://127.0.0.1:1/0"))  # built, never started
settle_heap()
frozen = gc.get_freeze_count()
assert frozen > 10_000, frozen  # the modules and the app's start-up objects

class Node:
    pass

a, b = Node(), Node()
a.other, b.other = b, a  # a cycle made after start-up: still garbage the collector finds
del a, b
assert gc.collect() >= 2
print("ok", frozen)
"""


def test_settle_heap_freezes_start_up_state_and_still_collects_cycles() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok ")
