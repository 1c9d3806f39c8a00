"""Stage ``calibrate``: calibrate, correct, debayer and measure one chunk of lights."""

from __future__ import annotations

import logging
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


def calibrate(rows: list[dict], masters_dir, out_dir, cfg: dict) -> None:
    """Calibrate, correct, debayer and measure each light of a chunk.

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

    cc, det = cfg["cosmetic"], cfg["registration"]
    rows_out, stars_out = [], {}
    for row in rows:
        rec = records.measure_record(row["path"], row["exptime"])
        try:
            raw, header, _ = read_image(row["source"])
            if raw.ndim != 2:
                raise FrameError(f"{row['source']}: expected a 2-D raw frame, got shape {raw.shape}")
            nan_frac = float(np.mean(~np.isfinite(raw)))
            if nan_frac > 0.5:
                raise FrameError(f"{row['source']}: {nan_frac:.0%} of pixels are NaN")
            saturated = raw >= _saturation_level(header)
            bias = load(row["bias"])[0] if row.get("bias") else None
            dark = None
            defects = [load(row[k])[2] for k in ("dark", "flat") if row.get(k)]
            if row.get("dark"):
                d, dh, _ = load(row["dark"])
                dark = (d, float(dh.get("EXPTIME", row["exptime"])), "B" not in str(dh.get("CALSTAT", "")))
            flat = load(row["flat"])[0] if row.get("flat") else None
            for name, m in (("bias", bias), ("flat", flat), ("dark", dark[0] if dark else None)):
                if m is not None and m.shape != raw.shape:
                    raise FrameError(
                        f"{row['source']}: size {raw.shape} differs from master {name} {m.shape}"
                    )
            img = calibrate_light(raw, row["exptime"], bias, dark, flat)
            del raw  # only the saturation map is needed from here on
            cfa = bool(row.get("bayer"))
            bad = np.zeros(img.shape, np.uint8)
            for m in defects:
                if m is not None:
                    np.maximum(bad, m, out=bad)
            noise = measure.noise_sigma(img)  # defects are clipped out of it: valid after repair too
            if cc["enabled"] and cc["auto_detect"]:
                bad |= cosmetic.isolated_defects(img, cc["auto_sigma"], noise, cfa=cfa)
            if cc["enabled"]:
                img = cosmetic.correct(img, bad, cfa=cfa)
            else:
                img = cosmetic.correct(img, np.zeros(img.shape, np.uint8), cfa=cfa)  # NaNs only
            if cfa:
                from ..debayer import debayer, effective_pattern

                pattern = effective_pattern(
                    row["bayer"],
                    int(header.get("XBAYROFF", 0) or 0),
                    int(header.get("YBAYROFF", 0) or 0),
                    str(header.get("ROWORDER", "TOP-DOWN")),
                    img.shape[0],
                )
                img = debayer(img, pattern, cfg["debayer"]["method"])
                lum = img.mean(axis=0)
            else:
                lum = img
            stars = measure.detect_stars(lum, det["detection_sigma"], saturated=saturated)
            planes = img if img.ndim == 3 else img[None]
            stats = measure.frame_stats(lum, stars, None if cfa else noise)
            per_channel = [measure.frame_stats(p, stars[:0]) for p in planes] if img.ndim == 3 else [stats]
            out_name = f"{stem(row['path'])}_c.fits"
            hdr = header.copy()
            hdr["HISTORY"] = (
                f"astroflow {__version__}: calibrated ({', '.join(k for k in ('bias', 'dark', 'flat') if row.get(k)) or 'no masters'})"
            )
            if cfa:
                hdr["HISTORY"] = f"debayered {pattern} ({cfg['debayer']['method']})"
                for key in ("BAYERPAT", "XBAYROFF", "YBAYROFF"):
                    hdr.remove(key, ignore_missing=True)
            write_fits(out_dir / out_name, img, hdr)
            stars_out[out_name] = np.column_stack([stars["x"], stars["y"], stars["flux"]])
            rec.update(file=out_name, status="ok", bad_pixels=int(np.count_nonzero(bad)))
            rec.update(
                {k: v for k, v in stats.as_dict().items() if k not in ("background", "scale", "noise")}
            )
            for c, st in enumerate(per_channel):
                for kind in records.PER_CHANNEL:
                    rec[records.per_channel(kind, c)] = getattr(st, kind)
        except FrameError as exc:
            rec["reason"] = str(exc)
            log.error("excluded %s", exc)
        rows_out.append(rec)
    with atomic_path(out_dir / "stars.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **stars_out)
    write_tsv([records.check(r, records.MEASURE) for r in rows_out], out_dir / "measure.tsv")
