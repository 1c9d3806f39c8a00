"""Configuration helpers shared by the workflow and the library: provenance of options."""

from __future__ import annotations

import hashlib
from pathlib import Path

# Options that say where things are, not how they are processed.
LOCATION_KEYS = ("data", "out")


def flatten(cfg: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    flat = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def non_default(cfg: dict, defaults: dict) -> list[str]:
    """``"option: value"`` lines for every processing option that differs from its default.

    These become the integration's HISTORY cards, as AutoIntegrate writes changed options.
    """
    cur, ref = flatten(cfg), flatten(defaults)
    return [
        f"{k}: {cur[k]}"
        for k in sorted(cur)
        if k.split(".")[0] not in LOCATION_KEYS and (k not in ref or ref[k] != cur[k])
    ]


def source_hash() -> str:
    """Short hash of the library's source: put in rule ``params`` so code changes rerun jobs."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]
