"""How a simulated provider behaves: its settings, its faults, its prompt cache, its stats."""

from __future__ import annotations

import random
from collections import OrderedDict, deque
from dataclasses import asdict, dataclass, field
from typing import Literal, get_args

from bidders.simulated.generation import Prompt

FaultKind = Literal[
    "rate_limit",  # 429 with retry-after
    "server_error",  # 500
    "overloaded",  # 503 (Anthropic: 529)
    "timeout",  # read the request, answer nothing until the client gives up (bounded)
    "disconnect",  # read the request, then close the connection without an answer
    "slow_first_byte",  # wait slow_first_byte_ms before the status line, then answer normally
    "drop_stream",  # send part of the answer, then cut the connection
    "stream_error",  # a stream that ends with the vendor's in-stream error event
    "malformed_json",  # 200 with a body (or one stream event) that is not JSON
    "empty_content",  # 200, well formed, with no content at all
]
FAULT_KINDS: tuple[FaultKind, ...] = get_args(FaultKind)
# Status codes are accepted as names too: `x-sim-fault: 429` reads naturally in a test.
FAULT_ALIASES: dict[str, FaultKind] = {
    "429": "rate_limit",
    "500": "server_error",
    "503": "overloaded",
    "529": "overloaded",
}
MAX_PLANNED_FAULTS = 1_000_000


def parse_fault(text: str) -> FaultKind:
    """A fault kind from its name or status-code alias; ValueError for anything else."""
    name = text.strip().lower()
    if name in FAULT_ALIASES:
        return FAULT_ALIASES[name]
    for kind in FAULT_KINDS:
        if kind == name:
            return kind
    raise ValueError(f"unknown fault {text!r}; expected one of {', '.join(FAULT_KINDS)}")


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Everything a simulated provider can be told; zero delays make it as fast as it can be."""

    ttft_ms: int = 0
    output_tokens_per_s: float = 0.0  # 0: no pacing; not money, so a float is fine
    reply_tokens: int = 48  # the natural reply length; the request's max tokens may cut it
    tokens_per_chunk: int = 1
    api_key: str | None = None  # None: any key, or none, is accepted
    models: tuple[str, ...] = ()  # empty: every model name is served
    capacity: int | None = None  # declared concurrency; exceeding it is counted, not refused
    fault_rate: float = 0.0  # share of requests that get a random fault from fault_kinds
    fault_kinds: tuple[FaultKind, ...] = ("rate_limit", "server_error")
    seed: int = 0
    max_hang_s: float = 30.0  # the longest a timeout fault holds a request
    slow_first_byte_ms: int = 2_000
    retry_after_s: int = 1
    cache_min_tokens: int = 1_024  # shorter prefixes are never cached (OpenAI's threshold)
    max_body_bytes: int = 32 * 1024 * 1024

    def __post_init__(self) -> None:
        problems = [
            name
            for name, ok in (
                ("ttft_ms", self.ttft_ms >= 0),
                ("output_tokens_per_s", self.output_tokens_per_s >= 0),
                ("reply_tokens", self.reply_tokens >= 1),
                ("tokens_per_chunk", self.tokens_per_chunk >= 1),
                ("capacity", self.capacity is None or self.capacity >= 1),
                ("fault_rate", 0 <= self.fault_rate <= 1),
                ("fault_kinds", bool(self.fault_kinds) and set(self.fault_kinds) <= {*FAULT_KINDS}),
                ("max_hang_s", 0 <= self.max_hang_s <= 3_600),
                ("slow_first_byte_ms", 0 <= self.slow_first_byte_ms <= 3_600_000),
                ("retry_after_s", self.retry_after_s >= 0),
                ("cache_min_tokens", self.cache_min_tokens >= 0),
                ("max_body_bytes", self.max_body_bytes >= 1024),
            )
            if not ok
        ]
        if problems:
            raise ValueError(f"invalid simulated provider settings: {', '.join(problems)}")


@dataclass(slots=True)
class _Planned:
    kind: FaultKind
    left: int


class FaultPlan:
    """Which fault, if any, the next request gets: asked for > planned (FIFO) > random draw."""

    def __init__(self, rate: float = 0.0, kinds: tuple[FaultKind, ...] = (), seed: int = 0) -> None:
        self._queue: deque[_Planned] = deque()
        self.set_rate(rate, kinds or ("rate_limit", "server_error"), seed)

    def add(self, kind: FaultKind, count: int = 1) -> None:
        """The next `count` requests (after those already planned) get `kind`."""
        if not 1 <= count <= MAX_PLANNED_FAULTS:
            raise ValueError(f"count must be between 1 and {MAX_PLANNED_FAULTS}")
        self._queue.append(_Planned(kind, count))

    def set_rate(self, rate: float, kinds: tuple[FaultKind, ...], seed: int) -> None:
        """Give each request a `rate` chance of a fault drawn from `kinds` (seeded, repeatable)."""
        if not 0 <= rate <= 1 or not kinds:
            raise ValueError("rate must be within [0, 1] and kinds must not be empty")
        self.rate, self.kinds, self.seed = rate, kinds, seed
        self._rng = random.Random(seed)

    def clear(self) -> None:
        self._queue.clear()
        self.set_rate(0.0, self.kinds, self.seed)

    def next(self, requested: FaultKind | None = None) -> FaultKind | None:
        if requested is not None:
            return requested
        if self._queue:
            planned = self._queue[0]
            planned.left -= 1
            if planned.left == 0:
                self._queue.popleft()
            return planned.kind
        if self.rate and self._rng.random() < self.rate:
            return self._rng.choice(self.kinds)
        return None

    def describe(self) -> dict[str, object]:
        return {
            "planned": [{"kind": p.kind, "count": p.left} for p in self._queue],
            "rate": self.rate,
            "kinds": list(self.kinds),
            "seed": self.seed,
        }


class PromptCache:
    """Prefixes seen before (LRU, bounded): their tokens come back as cached on the next request."""

    def __init__(self, min_tokens: int, capacity: int = 4_096) -> None:
        self.min_tokens = min_tokens
        self._capacity = capacity
        self._seen: OrderedDict[str, None] = OrderedDict()

    def lookup(self, prompt: Prompt) -> tuple[int, int]:
        """(tokens read from the cache, tokens written to it) for this prompt."""
        if not prompt.cache_marked or prompt.prefix_tokens < max(self.min_tokens, 1):
            return 0, 0
        if prompt.prefix_key in self._seen:
            self._seen.move_to_end(prompt.prefix_key)
            return prompt.prefix_tokens, 0
        self._seen[prompt.prefix_key] = None
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return 0, prompt.prefix_tokens

    def clear(self) -> None:
        self._seen.clear()


@dataclass(slots=True)
class Stats:
    """Counters for GET /_sim/stats; the capacity self-check reads max_in_flight."""

    capacity: int | None = field(default=None, repr=False)
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    over_capacity_events: int = 0
    faults_injected: int = 0
    tokens_in: int = 0
    tokens_out: int = 0

    def enter(self) -> None:
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        if self.capacity is not None and self.in_flight > self.capacity:
            self.over_capacity_events += 1

    def leave(self) -> None:
        self.in_flight -= 1

    def reset(self) -> None:
        """Zero the counters; requests still running stay counted as in flight."""
        self.requests = self.over_capacity_events = self.faults_injected = 0
        self.tokens_in = self.tokens_out = 0
        self.max_in_flight = self.in_flight

    def as_dict(self) -> dict[str, int]:
        out = asdict(self)
        del out["capacity"]
        return out
