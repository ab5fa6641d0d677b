"""Loading the model catalogue: the shipped default, replaced or extended by an operator file."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Literal

from clearing.catalogue import Catalogue, CatalogueError, parse_catalogue


def default_catalogue() -> Catalogue:
    """The catalogue shipped with the package (auction/data/catalogue.json)."""
    text = resources.files("auction").joinpath("data/catalogue.json").read_text()
    return parse_catalogue(json.loads(text))


def load_catalogue(
    path: Path | None = None, mode: Literal["extend", "replace"] = "extend"
) -> Catalogue:
    """The default catalogue, extended (same ids replaced) or replaced by the file at `path`.

    Raises:
        CatalogueError: the file cannot be read or has a bad entry.
    """
    base = default_catalogue()
    if path is None:
        return base
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CatalogueError(f"cannot read catalogue {path}: {exc}") from None
    extra = parse_catalogue(data)
    return extra if mode == "replace" else base.merged(extra)
