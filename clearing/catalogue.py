"""The model catalogue: the facts about each tradable model that bidders cannot overstate."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from clearing.money import PriceMicros
from clearing.types import FEATURES, Offer


class CatalogueError(ValueError):
    """A catalogue entry that is missing a field or has a bad value."""


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One catalogue model: quality 0–100, context window, output limit and features."""

    id: str
    quality: int
    context_window: int
    max_output_tokens: int
    features: frozenset[str]
    vendor: str = ""
    family: str = ""

    def offer(
        self,
        provider: str,
        offer_id: str,
        input_price: PriceMicros,
        output_price: PriceMicros,
        cached_input_price: PriceMicros,
        *,
        concurrency: int,
        ttl_ms: int,
    ) -> Offer:
        """An offer of this model with the catalogue's facts as they stand (seq 0: the book
        numbers it), for benchmarks and tests; a bidder's own offers go through
        `bidders.offers`, which lets them narrow the facts."""
        return Offer(
            provider=provider,
            offer_id=offer_id,
            model=self.id,
            input_price=input_price,
            output_price=output_price,
            cached_input_price=cached_input_price,
            concurrency=concurrency,
            quality=self.quality,
            context_window=self.context_window,
            max_output_tokens=self.max_output_tokens,
            features=self.features,
            seq=0,
            ttl_ms=ttl_ms,
        )


class Catalogue(Mapping[str, ModelInfo]):
    """An immutable mapping of model id to `ModelInfo`."""

    def __init__(self, models: Mapping[str, ModelInfo]) -> None:
        self._models = dict(models)

    def __getitem__(self, model: str) -> ModelInfo:
        return self._models[model]

    def __iter__(self) -> Iterator[str]:
        return iter(self._models)

    def __len__(self) -> int:
        return len(self._models)

    def merged(self, other: Catalogue) -> Catalogue:
        """This catalogue with `other`'s entries added, replacing same-id entries."""
        return Catalogue({**self._models, **other._models})


def _int(entry: Mapping[str, object], name: str, lo: int, hi: int) -> int:
    value = entry.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise CatalogueError(f"{entry.get('id')!r}: {name} must be an integer in {lo}..{hi}")
    return value


def parse_model(entry: Mapping[str, object]) -> ModelInfo:
    """Build one `ModelInfo` from a JSON object, checking every field."""
    model_id = entry.get("id")
    if not isinstance(model_id, str) or not model_id or model_id == "auto" or len(model_id) > 128:
        raise CatalogueError(f"model id {model_id!r} must be a non-empty string other than 'auto'")
    if any(c in model_id for c in "{}/ \t\n"):
        raise CatalogueError(f"model id {model_id!r} may not contain braces, slashes or spaces")
    features = entry.get("features", [])
    if not isinstance(features, list) or not set(features) <= FEATURES:
        raise CatalogueError(f"{model_id!r}: features must be a subset of {sorted(FEATURES)}")
    return ModelInfo(
        id=model_id,
        quality=_int(entry, "quality", 0, 100),
        context_window=_int(entry, "context_window", 1, 100_000_000),
        max_output_tokens=_int(entry, "max_output_tokens", 1, 100_000_000),
        features=frozenset(features),
        vendor=str(entry.get("vendor", "")),
        family=str(entry.get("family", "")),
    )


def parse_catalogue(data: object) -> Catalogue:
    """Parse {"models": [...]} (or a bare list) into a `Catalogue`."""
    entries = data.get("models") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise CatalogueError('a catalogue is {"models": [ {...}, ... ]}')
    models: dict[str, ModelInfo] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            raise CatalogueError("each catalogue entry must be an object")
        info = parse_model(entry)
        if info.id in models:
            raise CatalogueError(f"model {info.id!r} appears twice")
        models[info.id] = info
    return Catalogue(models)
