"""What a target's integrations become: the final images to make and their files.

Decided at DAG-build time (the workflow imports this module when it parses), so it needs
nothing heavier than the palette rules: the image processing lives in :mod:`astroflow.finish`.
"""

from __future__ import annotations

from . import palettes
from .combine import NB_RGB_AUTO

RGB_FILTERS = ("R", "G", "B")
NARROWBAND = ("H", "S", "O")


def products(filters: list[str], cfg: dict) -> tuple[dict[str, dict], list[str]]:
    """Final images for a target with integrations of ``filters``: (name -> spec, problems).

    A spec has ``kind`` (lrgb, rgb, osc, mono, palette), ``channels`` (integrations used) and,
    for palettes, ``palette``. A palette that cannot be made (unknown name, missing channel, bad
    custom expression) is left out and described in ``problems``; the others still are made.
    """
    f = set(filters)
    out: dict[str, dict] = {}
    problems: list[str] = []
    if "RGB" in f:
        out["AutoRGB"] = {"kind": "osc", "channels": ["RGB"]}
    elif set(RGB_FILTERS) <= f:
        if "L" in f:
            out["AutoLRGB"] = {"kind": "lrgb", "channels": ["L", "R", "G", "B"]}
        else:
            out["AutoRGB"] = {"kind": "rgb", "channels": ["R", "G", "B"]}
        spec = next(iter(out.values()))
        mapping = nb_rgb_mapping(cfg["narrowband_rgb"]["mapping"], f)
        if mapping:
            spec["nb_rgb"] = mapping
            spec["channels"] += sorted({n for nbs in mapping.values() for n in nbs})
    nb = cfg["narrowband"]
    mono_channels = f - {"RGB"}
    custom = {}
    for name, spec in nb["custom"].items():
        try:
            palettes.resolve([], mono_channels, {name: spec})
            custom[name] = spec
        except palettes.ExpressionError as e:
            problems.append(str(e))
    selection = nb["palettes"]
    wanted = (
        palettes.resolve(selection, mono_channels, custom)
        if selection in ("auto", "all")
        else [p for name in selection for p in _try_palette(name, mono_channels, custom, problems)]
    )
    if f & set(NARROWBAND):
        for p in wanted:
            out[f"Auto_{p.name}"] = {"kind": "palette", "palette": p.name, "channels": sorted(p.channels())}
    if not out:
        best = "L" if "L" in f else sorted(mono_channels or f)[0]
        out["AutoMono"] = {"kind": "mono", "channels": [best]}
    return out, problems


def nb_rgb_mapping(setting, filters: set[str]) -> dict[str, list[str]]:
    """Broadband -> narrowband channels for ``narrowband_rgb.mapping``, limited to ``filters``."""
    if setting == "none":
        return {}
    wanted = NB_RGB_AUTO if setting == "auto" else setting
    mapping = {c: [n for n in nbs if n in filters] for c, nbs in wanted.items() if c in filters}
    return {c: nbs for c, nbs in mapping.items() if nbs}


def _try_palette(name, channels, custom, problems):
    try:
        return palettes.resolve([name], channels, custom)
    except palettes.ExpressionError as e:
        problems.append(str(e))
        return []


def output_files(cfg: dict) -> dict[str, str]:
    """Suffixes of a final image's files by role (the same for every product of a run)."""
    files = {"fits": ".fits", "linear": "_linear.fits"}
    ext = {"xisf": ".xisf", "tiff": ".tif", "png": ".png", "jpeg": ".jpg"}
    files.update({fmt: ext[fmt] for fmt in cfg["output"]["formats"] if fmt != "fits"})
    if cfg["stars"]["remove"]:
        files["starless"] = "_starless.fits"
        files["stars"] = "_stars.fits"
    return files
