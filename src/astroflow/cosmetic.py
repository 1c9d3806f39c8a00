"""Cosmetic correction: hot/cold pixel maps and their repair (CFA-aware).

Bad-pixel map values: 0 good, 1 hot, 2 cold. Pixels are found by their deviation from the local
median (5×5, same CFA colour for Bayer data) in units of the robust standard deviation of that
deviation, so amp glow, vignetting and gradients are never mistaken for defects:

* hot: master dark above ``hot_sigma``; cold: master dark below ``cold_sigma``;
* cold: master flat below ``cold_sigma`` (dead pixels);
* per light, ``auto_sigma`` (a higher threshold) flags *isolated* hot/cold pixels: a star's
  neighbours are bright too, a hot pixel's are not.

Repair replaces a bad pixel by the median of the good pixels in its 5×5 (same-colour) window.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage

HOT, COLD = 1, 2


def _planes(cfa: bool):
    """Slices of the sub-lattices that share a colour (one for mono, four for Bayer data)."""
    if not cfa:
        return [(slice(None), slice(None))]
    return [(slice(dy, None, 2), slice(dx, None, 2)) for dy in (0, 1) for dx in (0, 1)]


def _robust_sigma(values: np.ndarray) -> float:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(v - np.median(v))))


def _deviation(image: np.ndarray, cfa: bool) -> np.ndarray:
    dev = np.zeros(image.shape, np.float32)
    for sl in _planes(cfa):
        plane = np.nan_to_num(image[sl], nan=float(np.nanmedian(image[sl])))
        dev[sl] = plane - ndimage.median_filter(plane, size=5, mode="reflect")
    return dev


def bad_pixel_map(
    dark: np.ndarray | None,
    flat: np.ndarray | None,
    hot_sigma: float = 3.0,
    cold_sigma: float = 3.0,
    cfa: bool = False,
    shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Bad-pixel map (uint8: 0 good, 1 hot, 2 cold) from a master dark and/or master flat."""
    ref = dark if dark is not None else flat
    bpm = np.zeros(ref.shape if ref is not None else shape, np.uint8)
    if dark is not None:
        dev = _deviation(dark, cfa)
        sigma = _robust_sigma(dev)
        if sigma > 0:
            bpm[dev > hot_sigma * sigma] = HOT
            bpm[dev < -cold_sigma * sigma] = COLD
    if flat is not None:
        ratio = np.zeros(flat.shape, np.float32)
        for sl in _planes(cfa):
            plane = np.nan_to_num(flat[sl], nan=0.0)
            local = ndimage.median_filter(plane, size=5, mode="reflect")
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio[sl] = np.where(local > 0, plane / local - 1, -1)
        sigma = _robust_sigma(ratio)
        bpm[(ratio < -max(cold_sigma * sigma, 0.1)) | ~np.isfinite(flat)] = COLD
    return bpm


def isolated_defects(image: np.ndarray, sigma: float, noise: float, cfa: bool = False) -> np.ndarray:
    """Map of isolated hot/cold pixels in a light (same codes as :func:`bad_pixel_map`).

    A pixel is hot when it exceeds the median of its 8 same-colour neighbours by ``sigma * noise``
    *and* by twice the brightest neighbour's excess; stars fail the second test.
    """
    bpm = np.zeros(image.shape, np.uint8)
    if noise <= 0:
        return bpm
    fp = np.ones((3, 3), bool)
    fp[1, 1] = False
    for sl in _planes(cfa):
        plane = np.nan_to_num(image[sl], nan=float(np.nanmedian(image[sl])))
        med = ndimage.median_filter(plane, footprint=fp, mode="reflect")
        hi = ndimage.maximum_filter(plane, footprint=fp, mode="reflect")
        lo = ndimage.minimum_filter(plane, footprint=fp, mode="reflect")
        ex = plane - med
        sub = bpm[sl]
        sub[(ex > sigma * noise) & (ex > 2 * (hi - med))] = HOT
        sub[(-ex > sigma * noise) & (-ex > 2 * (med - lo))] = COLD
        bpm[sl] = sub
    return bpm


def correct(image: np.ndarray, bad: np.ndarray, cfa: bool = False) -> np.ndarray:
    """Replace pixels where ``bad`` is true (and NaNs) by the median of good 5×5 same-colour pixels."""
    out = np.array(image, dtype=np.float32, copy=True)
    bad = (bad != 0) | ~np.isfinite(out)
    ys, xs = np.nonzero(bad)
    if ys.size == 0:
        return out
    step = 2 if cfa else 1
    offsets = [(dy * step, dx * step) for dy in range(-2, 3) for dx in range(-2, 3) if dy or dx]
    h, w = out.shape
    vals = np.full((len(offsets), ys.size), np.nan, np.float32)
    for k, (dy, dx) in enumerate(offsets):
        yy, xx = ys + dy, xs + dx
        ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        v = np.full(ys.size, np.nan, np.float32)
        v[ok] = out[yy[ok], xx[ok]]
        v[ok & bad[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]] = np.nan
        vals[k] = v
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN neighbourhoods fall back below
        rep = np.nanmedian(vals, axis=0)
    fallback = float(np.nanmedian(out)) if np.isfinite(out).any() else 0.0
    out[ys, xs] = np.where(np.isfinite(rep), rep, fallback)
    return out
