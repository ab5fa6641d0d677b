"""Every wire API has an adapter, replayable fixtures of each kind, and a simulated provider."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from bidders.registry import APIS
from clearing.types import API_NAMES

FIXTURES = Path(__file__).parent / "fixtures"
# The cases every API must show, by file name (supplemental names may carry a suffix).
EXEMPLARY = {
    "plain",
    "system-prompt",
    "multi-turn",
    "tool-call",
    "tool-result",
    "images",
    "json-mode",
    "stream-text",
    "stream-tool-call",
}
SUPPLEMENTAL = (
    "error-4",
    "error-429",
    "error-5",
    "malformed-json",
    "empty-content",
    "stream-cut-short",
)


def test_every_api_name_has_an_adapter() -> None:
    assert set(APIS) == API_NAMES


def test_fixture_folders_are_only_for_registered_apis() -> None:
    assert {path.name for path in FIXTURES.iterdir() if path.is_dir()} == set(APIS)


@pytest.mark.parametrize("api", sorted(APIS))
def test_every_api_has_the_exemplary_cases(api: str) -> None:
    names = {path.stem for path in (FIXTURES / api / "exemplary").glob("*.json")}
    assert names >= EXEMPLARY, f"{api} lacks {sorted(EXEMPLARY - names)}"


@pytest.mark.parametrize("api", sorted(APIS))
def test_every_api_has_the_supplemental_cases(api: str) -> None:
    names = [path.stem for path in (FIXTURES / api / "supplemental").glob("*.json")]
    missing = [prefix for prefix in SUPPLEMENTAL if not any(n.startswith(prefix) for n in names)]
    assert not missing, f"{api} lacks supplemental cases starting {missing}"
    assert any(n.startswith("error-4") and not n.startswith("error-429") for n in names)


@pytest.mark.parametrize("api", sorted(APIS))
def test_every_api_has_a_simulated_provider(api: str) -> None:
    assert importlib.util.find_spec(f"bidders.simulated.{api}_api") is not None
