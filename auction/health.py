"""Passive health: offers that keep failing cool down, and observed latency replaces declared.

No health-check calls are made (they would be billed): every client request's outcome is the
signal. After `failures_to_cool_down` failures in a row an offer is skipped for `cool_down_ms`,
except that a `probe_share` of the requests that would skip it still try it, so a recovered
provider is noticed. A success ends the cool-down. Streams measure time to first token and
output speed; once an offer has `observed_after_requests` of them, their moving averages
replace the figures its bidder declared.

The state lives in Redis (`Keys.health`), changed by one Lua script per outcome, so every
process shares it. Each process keeps a copy for clearing (which reads no Redis): its own
outcomes apply at once, the other processes' within one `refresh` (polled by `run`).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from auction.book_stream import text
from auction.commands import Cmd, Script, send_one
from auction.keys import Keys
from auction.resp import Arg
from auction.settings import Settings
from clearing.types import Offer, OfferLive

log = logging.getLogger(__name__)

EWMA_WEIGHT = "0.2"  # a new observation's weight: about the last ten count
KEEP_MS = 86_400_000  # an offer's record is forgotten after a day without calls
HEALTH_RECORD = Script("health_record")
_IDLE = OfferLive()


@dataclass(frozen=True, slots=True)
class HealthState:
    """One offer's health: failures in a row, cool-down end, and what was observed."""

    fails: int = 0
    cool_until_ms: int = 0
    observations: int = 0
    ttft_ms: float | None = None
    output_tokens_per_s: float | None = None


def _state(fields: Iterable[object]) -> HealthState:
    fails, cool, n, ttft, tps = (text(v) if v is not None else "" for v in fields)
    return HealthState(
        fails=int(fails or 0),
        cool_until_ms=int(cool or 0),
        observations=int(n or 0),
        ttft_ms=float(ttft) if ttft else None,
        output_tokens_per_s=float(tps) if tps else None,
    )


class LiveView(Mapping[str, OfferLive]):
    """The replica's live state with health laid over it, for one clearing.

    A cooling offer's probe is drawn once per view, so a clearing and its explanation agree.
    """

    __slots__ = ("_after", "_base", "_now", "_probe", "_probes", "_states")

    def __init__(
        self,
        base: Mapping[str, OfferLive],
        states: Mapping[str, HealthState],
        now_ms: int,
        observed_after: int,
        probe: Callable[[], bool],
    ) -> None:
        self._base = base
        self._states = states
        self._now = now_ms
        self._after = observed_after
        self._probe = probe
        self._probes: dict[str, bool] = {}

    def get(self, ref: str, default: OfferLive | None = None) -> OfferLive | None:  # type: ignore[override]  # narrower than Mapping.get's overloads, same behaviour
        live = self._base.get(ref)
        state = self._states.get(ref)
        if state is None:
            return default if live is None else live
        cooling = state.cool_until_ms > self._now and not self._probing(ref)
        observed = state.observations >= self._after
        if not cooling and not observed:
            return default if live is None else live
        return replace(
            _IDLE if live is None else live,
            cooling_down=cooling,
            observed_ttft_ms=_rounded(state.ttft_ms) if observed else None,
            observed_output_tokens_per_s=_rounded(state.output_tokens_per_s) if observed else None,
        )

    def _probing(self, ref: str) -> bool:
        probe = self._probes.get(ref)
        if probe is None:
            probe = self._probes[ref] = self._probe()
        return probe

    def __getitem__(self, ref: str) -> OfferLive:
        value = self.get(ref)
        if value is None:
            raise KeyError(ref)
        return value

    def __iter__(self) -> Iterator[str]:
        yield from self._base
        yield from (ref for ref in self._states if ref not in self._base)

    def __len__(self) -> int:
        return len(self._base) + sum(1 for ref in self._states if ref not in self._base)


def _rounded(value: float | None) -> int | None:
    return None if value is None else max(0, round(value))


class Health:
    """Passive health of every offer, shared through Redis (see the module docstring).

    `rng` draws the probes (inject a seeded one in tests).
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        settings: Settings,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._settings = settings
        self._rng = rng or random.Random()
        self._states: dict[str, HealthState] = {}
        self._seen: dict[str, int] = {}  # model -> last health change number read

    def state(self, ref: str) -> HealthState | None:
        """This process's copy of an offer's health, if it has any."""
        return self._states.get(ref)

    def view(self, base: Mapping[str, OfferLive], now_ms: int) -> LiveView:
        """`base` (the replica's live state) with cool-downs and observed figures applied."""
        share = self._settings.probe_share
        rng = self._rng
        return LiveView(
            base,
            self._states,
            now_ms,
            self._settings.observed_after_requests,
            lambda: rng.random() < share,
        )

    def success(
        self,
        offer: Offer,
        now_ms: int,
        *,
        ttft_ms: int | None = None,
        output_tokens_per_s: float | None = None,
    ) -> Cmd | None:
        """The command recording a call that answered (a stream passes what it measured).

        None when there is nothing to record: no observation, and no failure streak or
        cool-down to end as far as this process knows (other processes' failures reach it
        within one `refresh`). Most calls succeed, so this spares a script per request.
        """
        if ttft_ms is None and output_tokens_per_s is None:
            state = self._states.get(offer.ref)
            if state is None or (state.fails == 0 and state.cool_until_ms == 0):
                return None
        speed = "" if output_tokens_per_s is None else f"{output_tokens_per_s:.3f}"
        return self._command(offer, now_ms, "ok", "" if ttft_ms is None else str(ttft_ms), speed)

    def failure(self, offer: Offer, now_ms: int) -> Cmd:
        """The command recording a call that failed for the provider's reasons."""
        return self._command(offer, now_ms, "fail", "", "")

    def absorb(self, offer: Offer, reply: object) -> None:
        """Take in the state a recording command answered (this process sees it at once)."""
        if isinstance(reply, list):
            self._states[offer.ref] = _state(reply[:5])

    async def succeeded(
        self,
        offer: Offer,
        now_ms: int,
        *,
        ttft_ms: int | None = None,
        output_tokens_per_s: float | None = None,
    ) -> None:
        """Record a call that answered, on its own round trip."""
        cmd = self.success(offer, now_ms, ttft_ms=ttft_ms, output_tokens_per_s=output_tokens_per_s)
        if cmd is not None:
            await self._send(offer, cmd)

    async def failed(self, offer: Offer, now_ms: int) -> None:
        """Record a call that failed for the provider's reasons, on its own round trip."""
        await self._send(offer, self.failure(offer, now_ms))

    async def _send(self, offer: Offer, cmd: Cmd) -> None:
        self.absorb(offer, await send_one(self._redis, cmd))

    def _command(self, offer: Offer, now_ms: int, outcome: str, ttft: str, tps: str) -> Cmd:
        s = self._settings
        args: list[Arg] = [
            now_ms, outcome, s.failures_to_cool_down, s.cool_down_ms, ttft, tps, EWMA_WEIGHT,
            KEEP_MS,
        ]  # fmt: skip
        k = self._keys
        keys = [k.health(offer.model, offer.ref), k.health_changes(offer.model),
                k.health_version(offer.model)]  # fmt: skip
        return HEALTH_RECORD.command(keys, [offer.ref, *args])

    async def refresh(self, models: Iterable[str]) -> int:
        """Read the health changes other processes made since the last refresh; returns how many."""
        models = list(models)
        async with self._redis.pipeline(transaction=False) as pipe:
            for model in models:
                since = self._seen.get(model, 0)
                pipe.zrangebyscore(
                    self._keys.health_changes(model), f"({since}", "+inf", withscores=True
                )
            changed = await pipe.execute()
        todo: list[tuple[str, str]] = []
        for model, rows in zip(models, changed, strict=True):
            for member, score in rows:
                todo.append((model, text(member)))
                self._seen[model] = max(self._seen.get(model, 0), int(score))
        if not todo:
            return 0
        async with self._redis.pipeline(transaction=False) as pipe:
            for model, ref in todo:
                pipe.hmget(self._keys.health(model, ref), "fails", "cool_until", "n", "ttft", "tps")
            rows = await pipe.execute()
        for (_, ref), fields in zip(todo, rows, strict=True):
            if all(v is None for v in fields):
                self._states.pop(ref, None)  # forgotten after a long idle spell
            else:
                self._states[ref] = _state(fields)
        return len(todo)

    async def run(self, models: Callable[[], Iterable[str]], interval_s: float = 0.5) -> None:
        """Refresh every `interval_s` until cancelled; a Redis error waits for the next round."""
        while True:
            try:
                await self.refresh(models())
            except RedisError:
                log.warning("health refresh failed; retrying", exc_info=True)
            await asyncio.sleep(interval_s)
