"""Background neutralization and colour calibration of linear RGB images ``(3, ny, nx)``.

* ``neutralize_background``: the true background is the darkest quarter of sky samples (boxes
  with stars clipped, see :mod:`astroflow.background`) by luminance; each channel gets an offset so
  the three background levels equal their mean (additive, as BackgroundNeutralization).
* ``calibrate_by_stars``: aperture photometry of unsaturated stars in each channel (local
  background from an annulus); channel gains make the median star colour equal to
  ``white_reference`` (``(1, 1, 1)``: the average star is white, as ColorCalibration with
  stars as the white reference). Gains apply around the background, so it stays neutral.
* ``calibrate_photometric``: the same photometry, but each star is compared with the colour its
  catalogue B-V predicts (a blackbody of the Ballesteros temperature seen through the R, G, B
  passbands), so that a star of the white reference's B-V (0.65, the Sun) comes out neutral
  whatever the field's stars are: a field of red giants stays red. Needs the image's celestial
  WCS and a catalogue with positions and colours (PhotometricColorCalibration's idea).

Pixel values are linear (ADU or normalised); gains are relative to green. Pixel coordinates are
0-based (x along columns); catalogue positions are ICRS degrees.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import sep

from .background import sample_grid
from .measure import detect_stars
from .numerics import mad_sigma


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


def star_colours(rgb: np.ndarray, max_stars: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``(n, 2)`` (x, y px) and background-subtracted aperture fluxes ``(n, 3)`` of
    unsaturated stars found on the luminance."""
    lum = rgb.mean(axis=0)
    stars = detect_stars(lum, 3.0)
    if len(stars) == 0:
        return np.zeros((0, 2)), np.zeros((0, 3))
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
    ok &= (flux > 0).all(axis=1)
    return np.column_stack([stars["x"], stars["y"]])[ok], flux[ok]


def calibrate_by_stars(
    rgb: np.ndarray, white_reference=(1.0, 1.0, 1.0), min_stars: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """Scale channels so the median star has colour ``white_reference``; returns (image, gains).

    Raises ``ValueError`` when fewer than ``min_stars`` usable stars are found.
    """
    _, flux = star_colours(rgb)
    if len(flux) < min_stars:
        raise ValueError(f"colour calibration needs {min_stars} unsaturated stars, found {len(flux)}")
    ref = np.asarray(white_reference, float)
    # median of per-star ratios to green: robust to a few odd-coloured stars
    ratio = np.median(flux / flux[:, 1:2], axis=0) / (ref / ref[1])
    gains = 1.0 / ratio
    return _apply_gains(rgb, gains), gains


def _apply_gains(rgb: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """Scale channels around their true-background levels, so a neutral background stays neutral."""
    levels = background_levels(rgb)
    return ((rgb - levels[:, None, None]) * gains[:, None, None] + levels.mean()).astype(np.float32)


# Idealised R, G, B passbands (nm) and the white reference: a G2V star (the Sun) is neutral.
BANDS = {"R": (600.0, 700.0), "G": (500.0, 600.0), "B": (400.0, 500.0)}
SUN_BV = 0.65


def bv_to_temperature(bv) -> np.ndarray:
    """Effective temperature (K) of a star of colour B-V (Ballesteros 2012, blackbody fit)."""
    bv = np.asarray(bv, float)
    return 4600.0 * (1.0 / (0.92 * bv + 1.7) + 1.0 / (0.92 * bv + 0.62))


def blackbody_rgb(temperature, bands: dict = BANDS) -> np.ndarray:
    """Photon flux of a blackbody through each of R, G, B (``bands`` in nm), rows summing to 1."""
    t = np.atleast_1d(np.asarray(temperature, float))[:, None]
    out = []
    for name in "RGB":
        lo, hi = bands[name]
        lam = np.linspace(lo, hi, 64) * 1e-9  # m
        # photons per unit wavelength: B_lambda / (h c / lambda) ∝ lambda^-4 / (exp(hc/lambda k T) - 1)
        photons = lam**-4 / np.expm1(0.0143877688 / (lam * t))
        out.append(np.trapezoid(photons, lam, axis=1))
    rgb = np.column_stack(out)
    return rgb / rgb.sum(axis=1, keepdims=True)


def read_catalogue(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(ra, dec, bv, vmag)`` (degrees, magnitudes) from a table astropy can read (CSV, TSV, FITS,
    VOTable).

    Columns (case-insensitive): ``ra``/``raj2000``/``_raj2000``, ``dec``/``dej2000``/``_dej2000``
    in degrees, and a colour: ``b-v``/``bv``, or ``bmag`` and ``vmag``, or Tycho ``bt``/``btmag``
    and ``vt``/``vtmag`` (B-V = 0.85 (BT-VT)). ``vmag`` (or ``vt``/``mag``) is optional (NaN
    when absent) and resolves blends. Rows without a colour are dropped.
    """
    from astropy.table import Table

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"colour.catalogue: no such file: {path}")
    fmt = {".csv": "ascii.csv", ".tsv": "ascii.tab"}.get(path.suffix.lower())
    try:
        table = Table.read(path, format=fmt) if fmt else Table.read(path)
    except Exception as e:
        raise ValueError(f"colour.catalogue: cannot read {path}: {e}") from e
    cols = {c.lower(): c for c in table.colnames}

    def col(*names):
        for n in names:
            if n in cols:
                return np.asarray(table[cols[n]], float)
        return None

    ra, dec = col("ra", "raj2000", "_raj2000", "ra_icrs"), col("dec", "dej2000", "_dej2000", "de_icrs")
    if ra is None or dec is None:
        raise ValueError(f"colour.catalogue: {path} has no ra/dec columns (found {table.colnames})")
    bv = col("b-v", "bv", "b_v")
    if bv is None and col("bmag") is not None and col("vmag") is not None:
        bv = col("bmag") - col("vmag")
    if bv is None:
        bt, vt = col("bt", "btmag"), col("vt", "vtmag")
        if bt is None or vt is None:
            raise ValueError(f"colour.catalogue: {path} has no B-V, Bmag/Vmag or BT/VT columns")
        bv = 0.85 * (bt - vt)
    vmag = col("vmag", "vtmag", "vt", "mag")
    vmag = np.full(len(ra), np.nan) if vmag is None else vmag
    ok = np.isfinite(ra) & np.isfinite(dec) & np.isfinite(bv)
    return ra[ok], dec[ok], bv[ok], vmag[ok]


def calibrate_photometric(
    rgb: np.ndarray,
    header,
    catalogue: str | Path,
    bands: dict = BANDS,
    white_bv: float = SUN_BV,
    match_radius: float = 2.0,
    min_stars: int = 10,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Channel gains from catalogue colours; returns (image, gains, info).

    Stars measured on the image are matched (within ``match_radius`` px) to catalogue stars
    projected through the header's WCS. Each star predicts the ratios R/G and B/G of a
    blackbody at its B-V temperature, relative to the white reference's; the gain of a channel
    is the median of predicted over measured ratios. ``info`` has the number of stars used and
    the scatter (MAD, in magnitudes) of the calibrated colours around the prediction.
    Raises ``ValueError`` without a celestial WCS or with fewer than ``min_stars`` matches.
    """
    from astropy.wcs import WCS
    from scipy.spatial import cKDTree

    if "CTYPE1" not in header or "CTYPE2" not in header:
        raise ValueError("the image has no WCS (plate-solve the integrations, or use calibration: stars)")
    wcs = WCS(header, naxis=2)
    if not wcs.has_celestial:
        raise ValueError("the image's WCS is not celestial")
    ra, dec, bv, vmag = read_catalogue(catalogue)
    xy, flux = star_colours(rgb)
    cx, cy = wcs.all_world2pix(ra, dec, 0)
    h, w = rgb.shape[-2:]
    inside = np.isfinite(cx) & np.isfinite(cy) & (cx > -5) & (cx < w + 5) & (cy > -5) & (cy < h + 5)
    if len(xy) == 0 or not inside.any():
        raise ValueError(f"no catalogue star of {catalogue} falls on a measured star")
    cat = np.column_stack([cx[inside], cy[inside]])
    bv, vmag = bv[inside], vmag[inside]
    # each measured star takes the brightest catalogue star within the radius; a blend (another
    # within 1.5 mag, or any other when there are no magnitudes) has no single colour: skipped
    j = np.full(len(xy), -1)
    for i, cands in enumerate(cKDTree(cat).query_ball_point(xy, match_radius)):
        if not cands:
            continue
        mags = np.sort(vmag[cands])
        if len(cands) == 1 or (np.isfinite(mags[:2]).all() and mags[1] - mags[0] > 1.5):
            j[i] = cands[int(np.nanargmin(vmag[cands]))] if np.isfinite(mags[0]) else cands[0]
    near = j >= 0
    if near.sum() < min_stars:
        raise ValueError(
            f"photometric colour calibration needs {min_stars} stars matched to {catalogue}, found {int(near.sum())}"
        )
    # the brighter half decides: faint stars' colours are noise-dominated
    use = near & (flux[:, 1] >= np.median(flux[near, 1]))
    if use.sum() < min_stars:
        use = near
    star_bv = bv[j[use]]
    predicted = blackbody_rgb(bv_to_temperature(star_bv), bands) / blackbody_rgb(
        bv_to_temperature(white_bv), bands
    )
    predicted = predicted / predicted[:, 1:2]
    measured = flux[use] / flux[use][:, 1:2]
    gains = np.median(predicted / measured, axis=0)
    resid = 2.5 * np.log10(measured * gains / predicted)
    scatter = mad_sigma(resid, axis=0)
    info = {"stars": int(use.sum()), "scatter_mag": [float(v) for v in scatter[[0, 2]]]}
    return _apply_gains(rgb, gains), gains, info
