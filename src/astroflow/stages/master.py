"""Stage ``master``: one master calibration frame (bias, dark, flat-dark, flat)."""

from __future__ import annotations

import logging
from pathlib import Path

from .. import __version__, cosmetic
from ..io import write_fits

log = logging.getLogger("astroflow")


def _integrate_master(spec: dict, deps: dict, cfg: dict, memory_mb: float):
    """``(data, header, notes)`` of a master from its frames; the masters it is calibrated with
    (bias, flat-dark) are integrated here too, from ``deps`` (name -> spec), with the same
    function: bit-identical to their own files, and no master job waits for another."""
    from ..calibrate import master as integrate_master

    with_ = spec.get("calibrate_with", {})
    bias = _integrate_master(deps[with_["bias"]], deps, cfg, memory_mb)[0] if with_.get("bias") else None
    dark = _integrate_master(deps[with_["dark"]], deps, cfg, memory_mb)[0] if with_.get("dark") else None
    return integrate_master(
        spec["files"],
        spec["kind"],
        cfg["calibration"]["master_rejection"],
        bias=bias,
        dark=dark,  # flat-darks share the flats' exposure: subtracted as is
        memory_mb=memory_mb,
        equalize_cfa=cfg["calibration"]["equalize_cfa"],
        bayer=spec.get("bayer") or None,
    )


def master(name: str, spec: dict, deps: dict, out: str | Path, cfg: dict, memory_mb: float) -> None:
    """Integrate one master (``spec`` from the plan; ``deps`` the specs of the masters it is
    calibrated with) and write it to ``out``, reading frames in bands within ``memory_mb`` MB.

    A master dark carries its hot/cold pixel map, a master flat its dead pixels, in a
    ``DEFECTS`` image extension (uint8, :mod:`astroflow.cosmetic` codes): found once per master,
    applied to every light calibrated with it.
    """
    data, header, notes = _integrate_master(spec, deps, cfg, memory_mb)
    for note in notes:
        log.warning("%s: %s", name, note)
        header["HISTORY"] = note[:70]
    header["HISTORY"] = f"astroflow {__version__}"
    extensions = {}
    defects = master_defects(spec["kind"], data, header, cfg, bool(spec.get("cfa")))
    if defects is not None:
        extensions[cosmetic.DEFECTS] = defects
    write_fits(out, data, header, extensions=extensions)


def master_defects(kind: str, data, header, cfg: dict, cfa: bool):
    """The hot/cold pixel map of a master dark, the dead pixels of a master flat (uint8,
    :mod:`astroflow.cosmetic` codes; None for other masters), counted in ``header``."""
    if kind not in ("dark", "flat") or data.ndim != 2:
        return None
    cc = cfg["cosmetic"]
    is_dark = kind == "dark"
    defects = cosmetic.bad_pixel_map(
        data if is_dark else None,
        None if is_dark else data,
        cc["hot_sigma"],
        cc["cold_sigma"],
        cfa=cfa,
        dark_frames=int(header.get("NCOMBINE", 1)),
    )
    header["HOT"] = (int((defects == cosmetic.HOT).sum()), "hot pixels (DEFECTS extension)")
    header["COLD"] = (int((defects == cosmetic.COLD).sum()), "cold pixels (DEFECTS extension)")
    header["HISTORY"] = f"defects: hot sigma {cc['hot_sigma']}, cold sigma {cc['cold_sigma']}"
    return defects
