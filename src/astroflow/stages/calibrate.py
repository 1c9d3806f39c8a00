"""Stage ``calibrate``: calibrate, correct, debayer and measure one chunk of lights."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__, cosmetic, measure, records
from ..calibrate import calibrate_light
from ..io import FrameError, atomic_path, read_extension, read_image, write_fits
from ..tables import write_tsv
from .job import stem

log = logging.getLogger("astroflow")


def _saturation_level(header) -> float:
    for key in ("SATURATE", "DATAMAX"):
        if header.get(key):
            return float(header[key]) * 0.98
    return 65535.0 * 0.98


@dataclass
class Masters:
    """The masters one light is calibrated with (ADU, float32; any may be missing).
    ``dark`` is ``(master, exptime, contains_bias)``; ``defects`` the DEFECTS maps of the dark
    and flat (:mod:`astroflow.cosmetic` codes)."""

    bias: np.ndarray | None = None
    dark: tuple | None = None
    flat: np.ndarray | None = None
    defects: list = field(default_factory=list)


@dataclass
class CalibratedLight:
    """One calibrated, corrected (and debayered) light with its measurements."""

    image: np.ndarray  # (ny, nx) or (3, ny, nx) float32, ADU
    stars: np.ndarray  # measure.STAR_DTYPE records of the luminance
    stats: measure.FrameStats  # of the luminance
    per_channel: list  # FrameStats per plane (background, scale, noise used by integration)
    bad_pixels: int
    pattern: str | None  # the effective Bayer pattern it was debayered with


def calibrate_frame(
    raw, header, exptime: float, masters: Masters, cfg: dict, bayer: str | None = None, inplace: bool = False
):
    """Calibrate one raw light (ADU) with ``masters``, repair its bad pixels, debayer it when
    ``bayer`` names its CFA pattern, detect its stars and measure it: the per-frame work the
    ``calibrate`` stage and ``astroflow live`` share. Raises :class:`FrameError` (naming
    ``header``'s file when the caller adds it) for a frame that cannot be calibrated.
    ``inplace``: a float32 ``raw`` is calibrated in its own buffer (the caller gives it up)."""
    if raw.ndim != 2:
        raise FrameError(f"expected a 2-D raw frame, got shape {raw.shape}")
    nan_frac = float(np.mean(~np.isfinite(raw)))
    if nan_frac > 0.5:
        raise FrameError(f"{nan_frac:.0%} of pixels are NaN")
    dark = masters.dark[0] if masters.dark else None
    for name, m in (("bias", masters.bias), ("flat", masters.flat), ("dark", dark)):
        if m is not None and m.shape != raw.shape:
            raise FrameError(f"size {raw.shape} differs from master {name} {m.shape}")
    saturated = raw >= _saturation_level(header)
    img = calibrate_light(raw, exptime, masters.bias, masters.dark, masters.flat, inplace)
    cc, det = cfg["cosmetic"], cfg["registration"]
    cfa = bool(bayer)
    bad = np.zeros(img.shape, np.uint8)
    for m in masters.defects:
        if m is not None:
            np.maximum(bad, m, out=bad)
    # unlit flat pixels (calibrate_light), NaN in the raw frame: always repaired, with the
    # defects; until then the frame's fill value, so no measurement fills them again
    invalid = ~np.isfinite(img)
    if invalid.any():
        bad[invalid] = np.maximum(bad[invalid], cosmetic.COLD)
        img[invalid] = measure.fill_value(img)
    noise = measure.noise_sigma(img)  # defects are clipped out of it: valid after repair too
    if not noise > 0:  # nothing to weight it by, nothing to detect against
        level = float(np.nanmedian(img))
        raise FrameError(f"no noise: the image is flat at {level:g} ADU (blank, saturated or synthetic?)")
    if cc["enabled"] and cc["auto_detect"]:
        bad |= cosmetic.isolated_defects(img, cc["auto_sigma"], noise, cfa=cfa)
    img = cosmetic.correct(img, bad if cc["enabled"] else invalid, cfa=cfa, inplace=True)
    pattern = None
    if cfa:
        from ..debayer import debayer, header_pattern

        pattern = header_pattern(bayer, header, img.shape[0])
        img = debayer(img, pattern, cfg["debayer"]["method"])
        lum = img.mean(axis=0)
    else:
        lum = img
    stars = measure.detect_stars(lum, det["detection_sigma"], saturated=saturated)
    stats = measure.frame_stats(lum, stars, None if cfa else noise)
    per_channel = [measure.frame_stats(p, stars[:0]) for p in img] if cfa else [stats]
    return CalibratedLight(img, stars, stats, per_channel, int(np.count_nonzero(bad)), pattern)


def calibrate(rows: list[dict], masters_dir, out_dir, cfg: dict) -> None:
    """Calibrate, correct, debayer and measure each light of a chunk (:func:`calibrate_frame`).

    Each light's bad pixels are the defects of its master dark and flat (their ``DEFECTS``
    extensions) plus, with ``cosmetic.auto_detect``, the isolated ones found in the light.
    Writes ``<stem>_c.fits``, ``stars.npz`` and ``measure.tsv`` (one row per light, with
    ``status`` = ok/excluded and a ``reason``) into ``out_dir``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    masters_dir = Path(masters_dir)
    cache: dict[str, tuple] = {}

    def load(name):
        if name not in cache:
            path = masters_dir / f"{name}.fits"
            data, header, _ = read_image(path)
            cache[name] = (data, header, read_extension(path, cosmetic.DEFECTS))
        return cache[name]

    rows_out, stars_out = [], {}
    for row in rows:
        rec = records.measure_record(row["path"], row["exptime"])
        try:
            raw, header, _ = read_image(row["source"])
            masters = Masters(defects=[load(row[k])[2] for k in ("dark", "flat") if row.get(k)])
            if row.get("bias"):
                masters.bias = load(row["bias"])[0]
            if row.get("dark"):
                d, dh, _ = load(row["dark"])
                masters.dark = (
                    d,
                    float(dh.get("EXPTIME", row["exptime"])),
                    "B" not in str(dh.get("CALSTAT", "")),
                )
            if row.get("flat"):
                masters.flat = load(row["flat"])[0]
            try:
                light = calibrate_frame(
                    raw, header, row["exptime"], masters, cfg, row.get("bayer"), inplace=True
                )
            except FrameError as exc:
                raise FrameError(f"{row['source']}: {exc}") from None
            del raw
            out_name = f"{stem(row['path'])}_c.fits"
            hdr = header.copy()
            hdr["HISTORY"] = (
                f"astroflow {__version__}: calibrated ({', '.join(k for k in ('bias', 'dark', 'flat') if row.get(k)) or 'no masters'})"
            )
            if light.pattern:
                hdr["HISTORY"] = f"debayered {light.pattern} ({cfg['debayer']['method']})"
                for key in ("BAYERPAT", "XBAYROFF", "YBAYROFF"):
                    hdr.remove(key, ignore_missing=True)
            write_fits(out_dir / out_name, light.image, hdr)
            stars = light.stars
            stars_out[out_name] = np.column_stack([stars["x"], stars["y"], stars["flux"]])
            rec.update(file=out_name, status="ok", bad_pixels=light.bad_pixels)
            rec.update(
                {k: v for k, v in light.stats.as_dict().items() if k not in ("background", "scale", "noise")}
            )
            for c, st in enumerate(light.per_channel):
                for kind in records.PER_CHANNEL:
                    rec[records.per_channel(kind, c)] = getattr(st, kind)
            del light  # before the next frame is read: one calibrated frame in memory
        except FrameError as exc:
            rec["reason"] = str(exc)
            log.error("excluded %s", exc)
        rows_out.append(rec)
    with atomic_path(out_dir / "stars.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **stars_out)
    write_tsv([records.check(r, records.MEASURE) for r in rows_out], out_dir / "measure.tsv")
