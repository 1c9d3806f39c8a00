"""Background neutralization and colour calibration of linear RGB images ``(3, ny, nx)``.

* ``neutralize_background``: the true background is the darkest quarter of sky samples (boxes
  with stars clipped, see :mod:`astroflow.background`) by luminance; each channel gets an offset so
  the three background levels equal their mean (additive, as BackgroundNeutralization).
* ``calibrate_by_stars``: aperture photometry of unsaturated stars in each channel (local
  background from an annulus); channel gains make the median star colour equal to
  ``white_reference`` (``(1, 1, 1)``: the average star is white, as ColorCalibration with
  stars as the white reference). Gains apply around the background, so it stays neutral.

Pixel values are linear (ADU or normalised); gains are relative to green.
"""

from __future__ import annotations

import numpy as np
import sep

from .background import sample_grid
from .measure import detect_stars


def background_levels(rgb: np.ndarray, samples_per_row: int = 16, fraction: float = 0.25) -> np.ndarray:
    """Per-channel level of the darkest ``fraction`` of sky samples (chosen on luminance)."""
    lum = rgb.mean(axis=0)
    pts, vals, _, box = sample_grid(lum, samples_per_row)
    order = np.argsort(vals)[: max(3, int(len(vals) * fraction))]
    levels = []
    for c in range(3):
        v = []
        for x, y in pts[order].astype(int):
            win = rgb[c, max(0, y - box) : y + box, max(0, x - box) : x + box]
            v.append(np.nanmedian(win))
        levels.append(float(np.median(v)))
    return np.array(levels)


def neutralize_background(rgb: np.ndarray, samples_per_row: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Offset channels so their true-background levels are equal; returns (image, offsets)."""
    levels = background_levels(rgb, samples_per_row)
    offsets = levels.mean() - levels
    return (rgb + offsets[:, None, None]).astype(np.float32), offsets


def star_colours(rgb: np.ndarray, max_stars: int = 300) -> np.ndarray:
    """``(n, 3)`` background-subtracted aperture fluxes of unsaturated, isolated stars."""
    lum = rgb.mean(axis=0)
    stars = detect_stars(lum, 3.0)
    if len(stars) == 0:
        return np.zeros((0, 3))
    sat = np.nanmax(rgb) * 0.9
    stars = stars[~stars["sat"]]
    stars = stars[np.argsort(-stars["flux"])][:max_stars]
    r = 2.5 * np.clip(stars["fwhm"], 1.5, 10)
    flux = np.zeros((len(stars), 3))
    ok = np.ones(len(stars), bool)
    for c in range(3):
        plane = np.ascontiguousarray(np.nan_to_num(rgb[c]), dtype=np.float64)
        f, _, flag = sep.sum_circle(plane, stars["x"], stars["y"], r, bkgann=(r + 3, r + 8), subpix=5)
        flux[:, c] = f
        ok &= flag == 0
        # saturated cores: any pixel near the top of the range
        ys = np.clip(np.round(stars["y"]).astype(int), 0, plane.shape[0] - 1)
        xs = np.clip(np.round(stars["x"]).astype(int), 0, plane.shape[1] - 1)
        ok &= plane[ys, xs] < sat
    return flux[ok & (flux > 0).all(axis=1)]


def calibrate_by_stars(
    rgb: np.ndarray, white_reference=(1.0, 1.0, 1.0), min_stars: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """Scale channels so the median star has colour ``white_reference``; returns (image, gains).

    Raises ``ValueError`` when fewer than ``min_stars`` usable stars are found.
    """
    flux = star_colours(rgb)
    if len(flux) < min_stars:
        raise ValueError(f"colour calibration needs {min_stars} unsaturated stars, found {len(flux)}")
    ref = np.asarray(white_reference, float)
    # median of per-star ratios to green: robust to a few odd-coloured stars
    ratio = np.median(flux / flux[:, 1:2], axis=0) / (ref / ref[1])
    gains = 1.0 / ratio
    levels = background_levels(rgb)
    out = (rgb - levels[:, None, None]) * gains[:, None, None] + levels.mean()
    return out.astype(np.float32), gains
