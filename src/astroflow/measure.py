"""Frame measurement: background, noise, star detection and star-shape statistics.

Positions are 0-based pixel coordinates ``(x, y)`` of the stored array (x = column), sub-pixel,
from SExtractor-style windowed centroids (``sep.winpos``). FWHM in pixels, eccentricity
``sqrt(1 - (b/a)^2)``, noise in ADU (one standard deviation per pixel).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import sep

from .numerics import B3, LAYER_NOISE, mad_sigma, median


def finite_sample(values: np.ndarray, size: int = 1_000_000) -> np.ndarray:
    """The finite values among an evenly strided ~``size`` of ``values``: robust statistics of a
    26 MP frame need no more, and cost 1/26 of a full pass."""
    v = np.ravel(values)[:: max(1, np.size(values) // size)]
    return v[np.isfinite(v)]


def fill_value(image: np.ndarray) -> float:
    """What NaN/inf pixels of ``image`` stand in as until repaired: the median of a 65 k-pixel
    :func:`finite_sample` (0 when nothing is finite); a stand-in needs no more, and a median of
    1 M pixels costs 10 ms."""
    sample = finite_sample(image, 65_536)
    return float(median(sample)) if sample.size else 0.0


def finite_or_median(image: np.ndarray, fill: float | None = None) -> np.ndarray:
    """``image`` as float32 with NaN/inf replaced by ``fill``, by default :func:`fill_value`;
    no copy when all are finite."""
    img = np.asarray(image, np.float32)
    if np.isfinite(img.sum()):  # a sum is one fast pass; NaN or inf anywhere makes it non-finite
        return img
    return np.where(np.isfinite(img), img, np.float32(fill_value(img) if fill is None else fill))


def noise_sigma(image: np.ndarray, clip: float = 3.0, iterations: int = 5) -> float:
    """Gaussian noise sigma (ADU) from the first à trous wavelet layer, k-sigma clipped.

    Stars and gradients live in larger scales, so this tracks pixel noise (as PixInsight's
    multiresolution noise estimate does) rather than image content. The statistics use at most
    ~1 M pixels of the layer (every 3rd or sparser; on frames above 4 MP, of row bands covering
    a quarter of the frame).
    """
    import cv2

    img = np.asarray(image, np.float32)
    h = img.shape[0]
    # large frames: bands of 64 rows spread over the frame, a quarter of it (plus 2 halo rows
    # each for the 5×5 kernel) are the sample; the statistics need ~1 M pixels, not 26 M
    bands = [(0, h)] if img.size <= 4_000_000 else [(y, min(h, y + 64)) for y in range(0, h, 256)]
    # one fill of the frame for the NaNs of every band, not one per band
    fill = fill_value(img) if len(bands) > 1 and not np.isfinite(img.sum()) else None
    w1 = []
    for y0, y1 in bands:
        ya, yb = max(0, y0 - 2), min(h, y1 + 2)
        part = np.ascontiguousarray(finite_or_median(img[ya:yb], fill))
        smooth = cv2.sepFilter2D(part, cv2.CV_32F, B3, B3, borderType=cv2.BORDER_REFLECT_101)
        w1.append((part - smooth)[y0 - ya : y1 - ya].ravel())
    w1 = np.concatenate(w1)
    w1 = w1[:: max(3, w1.size // 1_000_000)]
    sigma = float(np.std(w1))
    center = float(median(w1))
    for _ in range(iterations):
        keep = np.abs(w1 - center) < clip * sigma
        if not keep.any():
            break
        sigma = float(np.std(w1[keep]))
    return sigma / LAYER_NOISE[0]


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
    psf_signal: float = float("nan")
    psf_power: float = float("nan")

    def as_dict(self) -> dict:
        return asdict(self)


DETECT_MAX_PIXELS = 8_000_000  # larger frames are binned for detection (centroids stay full-res)
_DIAMOND2 = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if abs(dy) + abs(dx) <= 2]
_NO_OBJECTS = [
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
]
STAR_DTYPE = [
    ("x", "f8"),
    ("y", "f8"),
    ("flux", "f8"),
    ("peak", "f8"),
    ("fwhm", "f8"),
    ("ecc", "f8"),
    ("sat", "?"),
]


PIXSTACK = 300_000  # SExtractor's default: pixels of the objects being built at once


def _extract(sub: np.ndarray, sigma: float, rms: float):
    # sep allocates and touches its pixel stack on every call: sized for the whole frame it
    # cost a 26 MP frame 19 000 page faults (0.1-0.5 s); SExtractor's default fits nearly every
    # frame, and one that overflows it (nebulosity over the threshold) is extracted again with
    # a stack of every pixel, which always fits and finds the same objects
    sep.set_sub_object_limit(4096)
    for pixstack in dict.fromkeys((min(PIXSTACK, sub.size), sub.size)):
        sep.set_extract_pixstack(pixstack)
        try:
            # default 3x3 matched filter: the threshold applies to the smoothed image (SExtractor style)
            return sep.extract(sub, sigma, err=rms, minarea=5, deblend_cont=0.005)
        except Exception as exc:  # sep raises on pathological images (e.g. all-constant): no stars
            if "pixel buffer full" not in str(exc):
                break
    return np.zeros(0, dtype=_NO_OBJECTS)


def _moment_ecc(sub: np.ndarray, x: np.ndarray, y: np.ndarray, radius: int, floor: float) -> np.ndarray:
    """Eccentricity from the second moments of the pixels above ``floor`` (ADU) within ``radius``
    px of each centroid (the isophotal moments SExtractor's a, b come from, at full resolution)."""
    h, w = sub.shape
    d = np.arange(-radius, radius + 1)
    yy = np.clip(np.round(y).astype(int)[:, None, None] + d[None, :, None], 0, h - 1)
    xx = np.clip(np.round(x).astype(int)[:, None, None] + d[None, None, :], 0, w - 1)
    stamp = sub[yy, xx].astype(np.float64)
    dx, dy = xx - x[:, None, None], yy - y[:, None, None]
    wgt = np.where((stamp > floor) & (dx**2 + dy**2 <= radius**2), stamp, 0.0)
    total = np.maximum(wgt.sum(axis=(1, 2)), 1e-12)
    xx2, yy2 = (wgt * dx**2).sum(axis=(1, 2)) / total, (wgt * dy**2).sum(axis=(1, 2)) / total
    xy = (wgt * dx * dy).sum(axis=(1, 2)) / total
    half, root = 0.5 * (xx2 + yy2), np.sqrt(0.25 * (xx2 - yy2) ** 2 + xy**2)
    a2, b2 = half + root, np.maximum(half - root, 0.0)
    return np.sqrt(np.clip(1 - b2 / np.maximum(a2, 1e-12), 0, 1))


def detect_stars(
    image: np.ndarray,
    sigma: float = 3.0,
    saturated: np.ndarray | None = None,
    max_stars: int = 2000,
    min_fwhm: float = 1.5,
):
    """Detect stars; returns a structured array sorted by flux (brightest first).

    Fields: ``x, y`` (windowed centroid), ``flux`` (ADU, background-subtracted), ``peak`` (of
    the detection image), ``fwhm``, ``ecc``, ``sat`` (within 2 px of a saturated pixel).
    Extended blobs (larger than 5× the median size), edge-truncated detections, anything sharper
    than ``min_fwhm`` px (hot pixels, cosmic rays) and unsaturated objects wider than twice the
    median (nebula knots, galaxies) are dropped.

    Frames above ``DETECT_MAX_PIXELS`` are detected on a 2×2 (or coarser) binned copy, which
    finds the same stars at a fraction of the cost; centroids, FWHM and eccentricity are then
    measured at full resolution.
    """
    import cv2

    img = np.ascontiguousarray(finite_or_median(image))
    h, w = img.shape
    binning = max(1, int(np.ceil(np.sqrt(img.size / DETECT_MAX_PIXELS))))
    small = img
    if binning > 1:
        small = cv2.resize(img, (w // binning, h // binning), interpolation=cv2.INTER_AREA)
    bkg = sep.Background(small, bw=32, bh=32, fw=3, fh=3)
    back = bkg.back()
    sub_small = small - back
    objs = _extract(sub_small, sigma, bkg.globalrms)
    if len(objs) == 0:
        return np.zeros(0, dtype=STAR_DTYPE)
    hs, ws = small.shape
    edge = (objs["xmin"] <= 1) | (objs["ymin"] <= 1) | (objs["xmax"] >= ws - 2) | (objs["ymax"] >= hs - 2)
    objs = objs[~edge & (objs["a"] > 0.3 / binning)]
    if len(objs) == 0:
        return np.zeros(0, dtype=STAR_DTYPE)
    objs = objs[np.argsort(-objs["flux"])][: max_stars * 2]
    if binning > 1:
        sub = cv2.resize(back, (w, h), interpolation=cv2.INTER_LINEAR)
        np.subtract(img, sub, out=sub)
        x0, y0 = (objs["x"] + 0.5) * binning - 0.5, (objs["y"] + 0.5) * binning - 0.5
        a0 = objs["a"] * binning
        flux0 = objs["flux"] * binning**2
        npix = objs["npix"] * binning**2
    else:
        sub, x0, y0, a0, flux0, npix = sub_small, objs["x"], objs["y"], objs["a"], objs["flux"], objs["npix"]
    r50, _ = sep.flux_radius(sub, x0, y0, 6.0 * a0, 0.5, normflux=flux0, subpix=3)
    sig = np.clip(2.0 * r50 / 2.3548, 0.5, 10)
    # 5×5 sub-pixels on the window's edge (sep's default 11×11): centroids move < 0.001 px, at a
    # third of the cost
    x, y, _ = sep.winpos(sub, x0, y0, sig, subpix=5)
    ok = np.isfinite(x) & np.isfinite(y) & (np.hypot(x - x0, y - y0) < 2 * binning)
    x, y = np.where(ok, x, x0), np.where(ok, y, y0)
    fwhm = 2.0 * r50
    size = np.median(npix)
    compact = npix < 5 * max(size, 10) * 4
    if binning > 1:
        radius = int(np.clip(np.ceil(1.5 * np.nanmedian(fwhm)), 3, 12))
        ecc = _moment_ecc(sub, x, y, radius, 2.0 * bkg.globalrms * binning)
    else:
        ecc = np.sqrt(np.clip(1 - (objs["b"] / objs["a"]) ** 2, 0, 1))
    sat = np.zeros(len(objs), bool)
    if saturated is not None and saturated.any():
        yi, xi = np.round(y).astype(int), np.round(x).astype(int)
        for dy, dx in _DIAMOND2:  # the saturated map grown by 2 px, looked up at the stars only
            sat |= saturated[np.clip(yi + dy, 0, h - 1), np.clip(xi + dx, 0, w - 1)]
    out = np.zeros(len(objs), dtype=STAR_DTYPE)
    out["x"], out["y"], out["flux"], out["peak"] = x, y, flux0, objs["peak"]
    out["fwhm"], out["ecc"], out["sat"] = fwhm, ecc, sat
    # Hot pixels and cosmic rays are sharper than any seeing-limited star; nebula knots and
    # galaxies are wider than the stars, which are the sharpest real objects in the frame.
    starlike = np.isfinite(fwhm) & (fwhm >= min_fwhm)
    if (starlike & ~sat).sum() >= 3:
        starlike &= sat | (fwhm <= 2.0 * np.median(fwhm[starlike & ~sat]))
    return out[compact & starlike][:max_stars]


def frame_stats(image: np.ndarray, stars: np.ndarray, noise: float | None = None) -> FrameStats:
    """Background (median), noise, scale (1.4826 MAD) and star statistics of a frame.

    ``noise`` (ADU) is measured with :func:`noise_sigma` unless given.
    """
    sample = finite_sample(image, 2_000_000)
    background = float(median(sample))
    scale = float(mad_sigma(sample, background))
    noise = noise_sigma(image) if noise is None else noise
    good = stars[~stars["sat"]] if len(stars) else stars
    if len(good):
        snr_star = good["flux"] / (noise * np.sqrt(np.pi) * np.maximum(good["fwhm"], 1.0))
        bright = good[snr_star > 20]
        use = bright if len(bright) >= 3 else good
        fwhm = float(np.median(use["fwhm"]))
        ecc = float(np.median(use["ecc"]))
        snr = float(np.median(snr_star[: min(50, len(snr_star))]))
        # the stars' peak over the noise, and its power form (SubframeSelector's PSF signal
        # and power): lower for clouds, for noise and for blur (a peak falls as 1/FWHM²)
        peaks = good["peak"].astype(float)
        psf_signal = float(np.median(peaks) / noise) if noise > 0 else float("nan")
        psf_power = float(np.mean(peaks**2) / noise**2) if noise > 0 else float("nan")
    else:
        fwhm = ecc = snr = psf_signal = psf_power = float("nan")
    return FrameStats(background, noise, scale, int(len(stars)), fwhm, ecc, snr, psf_signal, psf_power)
