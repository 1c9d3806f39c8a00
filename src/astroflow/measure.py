"""Frame measurement: background, noise, star detection and star-shape statistics.

Positions are 0-based pixel coordinates ``(x, y)`` of the stored array (x = column), sub-pixel,
from SExtractor-style windowed centroids (``sep.winpos``). FWHM in pixels, eccentricity
``sqrt(1 - (b/a)^2)``, noise in ADU (one standard deviation per pixel).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import sep
from scipy import ndimage

# B3-spline à trous: the first wavelet layer keeps this fraction of Gaussian white noise sigma.
_B3 = np.array([1, 4, 6, 4, 1], np.float32) / 16
_LAYER1_NOISE = 0.8907


def noise_sigma(image: np.ndarray, clip: float = 3.0, iterations: int = 5) -> float:
    """Gaussian noise sigma (ADU) from the first à trous wavelet layer, k-sigma clipped.

    Stars and gradients live in larger scales, so this tracks pixel noise (as PixInsight's
    multiresolution noise estimate does) rather than image content.
    """
    img = np.nan_to_num(np.asarray(image, np.float32), nan=float(np.nanmedian(image)))
    smooth = ndimage.convolve1d(
        ndimage.convolve1d(img, _B3, axis=0, mode="mirror"), _B3, axis=1, mode="mirror"
    )
    w1 = (img - smooth).ravel()[::3]  # subsample: statistics of millions of pixels are overkill
    sigma = float(np.std(w1))
    center = float(np.median(w1))
    for _ in range(iterations):
        keep = np.abs(w1 - center) < clip * sigma
        if not keep.any():
            break
        sigma = float(np.std(w1[keep]))
    return sigma / _LAYER1_NOISE


@dataclass
class FrameStats:
    """Per-frame measurements (ADU, pixels)."""

    background: float
    noise: float
    scale: float
    stars: int
    fwhm: float
    eccentricity: float
    snr: float

    def as_dict(self) -> dict:
        return asdict(self)


def detect_stars(
    image: np.ndarray,
    sigma: float = 3.0,
    saturated: np.ndarray | None = None,
    max_stars: int = 2000,
    min_fwhm: float = 1.5,
):
    """Detect stars; returns a structured array sorted by flux (brightest first).

    Fields: ``x, y`` (windowed centroid), ``flux`` (ADU, background-subtracted), ``peak``,
    ``fwhm``, ``ecc``, ``sat`` (touches a saturated pixel). Extended blobs (larger than 5× the
    median size), edge-truncated detections, anything sharper than ``min_fwhm`` px (hot
    pixels, cosmic rays) and unsaturated objects wider than twice the median (nebula knots,
    galaxies) are dropped.
    """
    img = np.ascontiguousarray(np.nan_to_num(image, nan=float(np.nanmedian(image))), dtype=np.float32)
    bkg = sep.Background(img, bw=32, bh=32, fw=3, fh=3)
    sub = img - bkg.back()
    rms = bkg.globalrms
    sep.set_extract_pixstack(max(300000, img.size // 4))
    sep.set_sub_object_limit(4096)
    try:
        # default 3x3 matched filter: the threshold applies to the smoothed image (SExtractor style)
        objs = sep.extract(sub, sigma, err=rms, minarea=5, deblend_cont=0.005)
    except Exception:  # sep raises on pathological images (e.g. all-constant); treat as no stars
        objs = np.zeros(
            0,
            dtype=[
                ("x", float),
                ("y", float),
                ("a", float),
                ("b", float),
                ("flux", float),
                ("peak", float),
                ("flag", int),
                ("xmin", int),
                ("xmax", int),
                ("ymin", int),
                ("ymax", int),
                ("npix", int),
            ],
        )
    dtype = [
        ("x", "f8"),
        ("y", "f8"),
        ("flux", "f8"),
        ("peak", "f8"),
        ("fwhm", "f8"),
        ("ecc", "f8"),
        ("sat", "?"),
    ]
    if len(objs) == 0:
        return np.zeros(0, dtype=dtype)
    h, w = img.shape
    edge = (objs["xmin"] <= 1) | (objs["ymin"] <= 1) | (objs["xmax"] >= w - 2) | (objs["ymax"] >= h - 2)
    objs = objs[~edge & (objs["a"] > 0.3)]
    if len(objs) == 0:
        return np.zeros(0, dtype=dtype)
    objs = objs[np.argsort(-objs["flux"])][: max_stars * 2]
    r50, _ = sep.flux_radius(sub, objs["x"], objs["y"], 6.0 * objs["a"], 0.5, normflux=objs["flux"], subpix=5)
    sig = np.clip(2.0 * r50 / 2.3548, 0.5, 10)
    x, y, _ = sep.winpos(sub, objs["x"], objs["y"], sig)
    ok = np.isfinite(x) & np.isfinite(y) & (np.hypot(x - objs["x"], y - objs["y"]) < 2)
    x, y = np.where(ok, x, objs["x"]), np.where(ok, y, objs["y"])
    fwhm = 2.0 * r50
    size = np.median(objs["npix"])
    compact = objs["npix"] < 5 * max(size, 10) * 4
    ecc = np.sqrt(np.clip(1 - (objs["b"] / objs["a"]) ** 2, 0, 1))
    sat = np.zeros(len(objs), bool)
    if saturated is not None and saturated.any():
        grown = ndimage.binary_dilation(saturated, iterations=2)
        sat = grown[np.clip(np.round(y).astype(int), 0, h - 1), np.clip(np.round(x).astype(int), 0, w - 1)]
    out = np.zeros(len(objs), dtype=dtype)
    out["x"], out["y"], out["flux"], out["peak"] = x, y, objs["flux"], objs["peak"]
    out["fwhm"], out["ecc"], out["sat"] = fwhm, ecc, sat
    # Hot pixels and cosmic rays are sharper than any seeing-limited star; nebula knots and
    # galaxies are wider than the stars, which are the sharpest real objects in the frame.
    starlike = np.isfinite(fwhm) & (fwhm >= min_fwhm)
    if (starlike & ~sat).sum() >= 3:
        starlike &= sat | (fwhm <= 2.0 * np.median(fwhm[starlike & ~sat]))
    return out[compact & starlike][:max_stars]


def frame_stats(image: np.ndarray, stars: np.ndarray) -> FrameStats:
    """Background (median), noise, scale (1.4826 MAD) and star statistics of a frame."""
    finite = image[np.isfinite(image)]
    sample = finite[:: max(1, finite.size // 2_000_000)]
    background = float(np.median(sample))
    scale = float(1.4826 * np.median(np.abs(sample - background)))
    noise = noise_sigma(image)
    good = stars[~stars["sat"]] if len(stars) else stars
    if len(good):
        snr_star = good["flux"] / (noise * np.sqrt(np.pi) * np.maximum(good["fwhm"], 1.0))
        bright = good[snr_star > 20]
        use = bright if len(bright) >= 3 else good
        fwhm = float(np.median(use["fwhm"]))
        ecc = float(np.median(use["ecc"]))
        snr = float(np.median(snr_star[: min(50, len(snr_star))]))
    else:
        fwhm = ecc = snr = float("nan")
    return FrameStats(background, noise, scale, int(len(stars)), fwhm, ecc, snr)


def generic_weight(stats: list[dict]) -> np.ndarray:
    """AutoIntegrate's 'Generic' SSWEIGHT: 20 neg(FWHM) + 15 neg(Ecc) + 25 pos(SNR) + 40."""

    def scaled(values, positive):
        v = np.asarray(values, float)
        lo, hi = np.nanmin(v), np.nanmax(v)
        if not np.isfinite(lo) or hi == lo:
            return np.full(v.shape, 0.5)
        s = (v - lo) / (hi - lo)
        return np.nan_to_num(s if positive else 1 - s, nan=0.0)

    fwhm = scaled([s["fwhm"] for s in stats], False)
    ecc = scaled([s["eccentricity"] for s in stats], False)
    snr = scaled([s["snr"] for s in stats], True)
    return 20 * fwhm + 15 * ecc + 25 * snr + 40
