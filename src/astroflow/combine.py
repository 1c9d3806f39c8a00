"""Channel combination: linear fit, RGB, LRGB (luminance replacement in CIE L*a*b*).

Linear images are float32 in [0, 1] (``stretch.normalise``); ``lrgb`` works on stretched
(display) images, which it treats as sRGB-encoded.
"""

from __future__ import annotations

import numpy as np

from .stretch import mtf

LINEAR_FIT_REFERENCES = ("auto", "min", "max", "R", "G", "B", "none")


def linear_fit(image: np.ndarray, reference: np.ndarray, clip_high: float = 0.92) -> np.ndarray:
    """``a + b * image`` matched to ``reference`` (PixInsight LinearFit's purpose).

    An ordinary least-squares fit over all pixels would be dominated by uncorrelated sky noise
    and shrink the slope towards 0, so the slope is the median ratio of signal above the
    background over pixels that are significant (> 5 sigma, 2×2 binned) and unsaturated in both
    images, and the offset matches the background medians. With fewer than 50 such pixels only
    the backgrounds are matched (slope 1).
    """

    def binned(v):
        v = np.nan_to_num(np.asarray(v, np.float32))
        ny, nx = (v.shape[0] // 2) * 2, (v.shape[1] // 2) * 2
        return v[:ny, :nx].reshape(ny // 2, 2, nx // 2, 2).mean(axis=(1, 3))

    x, y = binned(image), binned(reference)
    bx, by = float(np.median(x)), float(np.median(y))
    sx = 1.4826 * float(np.median(np.abs(x - bx)))
    sy = 1.4826 * float(np.median(np.abs(y - by)))
    sel = (x - bx > 5 * sx) & (y - by > 5 * sy) & (x < clip_high * x.max()) & (y < clip_high * y.max())
    b = float(np.median((y[sel] - by) / (x[sel] - bx))) if sel.sum() >= 50 else 1.0
    a = by - b * bx
    return (a + b * np.asarray(image, np.float32)).astype(np.float32)


def pick_reference(channels: dict[str, np.ndarray], choice: str) -> str | None:
    """Channel name to fit the others to: ``auto``/``min`` = lowest median (AutoIntegrate's Min RGB)."""
    if choice == "none":
        return None
    if choice in channels:
        return choice
    meds = {k: float(np.nanmedian(v)) for k, v in channels.items()}
    if choice in ("auto", "min"):
        return min(meds, key=meds.get)
    if choice == "max":
        return max(meds, key=meds.get)
    raise ValueError(
        f"combination.linear_fit: unknown reference {choice!r}; choose one of {LINEAR_FIT_REFERENCES}"
    )


def fit_channels(channels: dict[str, np.ndarray], choice: str) -> dict[str, np.ndarray]:
    """All channels linearly fitted to the reference channel."""
    ref = pick_reference(channels, choice)
    if ref is None:
        return dict(channels)
    return {k: (v if k == ref else linear_fit(v, channels[ref])) for k, v in channels.items()}


def rgb(r: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.stack([r, g, b]).astype(np.float32)


def srgb_to_lstar(v: np.ndarray) -> np.ndarray:
    """CIE L* (0-100) of an sRGB-encoded grey value ``v`` in [0, 1] (so grey ``v`` round-trips)."""
    v = np.clip(v, 0, 1)
    y = np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)
    return np.where(y > 216 / 24389, 116 * np.cbrt(y) - 16, y * 24389 / 27).astype(np.float32)


def lrgb(
    lum: np.ndarray,
    colour: np.ndarray,
    lightness: float = 0.5,
    saturation: float = 0.5,
    chroma_blur: float = 1.5,
) -> np.ndarray:
    """Replace the lightness of stretched ``colour`` (3, ny, nx) by stretched ``lum`` in CIE L*a*b*.

    ``lum`` is taken as an sRGB grey level, so a neutral pixel keeps the value ``lum`` had.
    ``lightness`` is a midtones balance on the new lightness and ``saturation`` one on chroma
    (as LRGBCombination: 0.5 leaves them unchanged, lower values brighten/saturate). Chroma is
    smoothed by a Gaussian of ``chroma_blur`` px: colour carries less detail than luminance, and
    RGB noise would otherwise push dim pixels out of gamut.
    """
    lab = to_lab(smooth_chroma(colour, chroma_blur))
    lab[..., 0] = srgb_to_lstar(mtf(lightness, np.clip(lum, 0, 1)))
    if saturation != 0.5:
        chroma = np.hypot(lab[..., 1], lab[..., 2])
        scale = np.where(
            chroma > 0, 128 * mtf(saturation, np.clip(chroma / 128, 0, 1)) / np.maximum(chroma, 1e-6), 1
        )
        lab[..., 1:] *= scale[..., None]
    return from_lab(lab)


def smooth_chroma(colour: np.ndarray, sigma: float) -> np.ndarray:
    """Chrominance noise reduction: blur ``R - Y`` and ``B - Y`` (Y = mean of R, G, B) by ``sigma`` px.

    Linear opponent channels keep a neutral background neutral (blurring Lab a*/b* would
    not: their noise is not zero-mean).
    """
    if sigma <= 0:
        return np.asarray(colour, np.float32)
    import cv2

    c = np.asarray(colour, np.float32)
    y = c.mean(axis=0)
    cr = cv2.GaussianBlur(c[0] - y, (0, 0), sigma)
    cb = cv2.GaussianBlur(c[2] - y, (0, 0), sigma)
    return np.clip(np.stack([y + cr, y - cr - cb, y + cb]), 0, 1).astype(np.float32)


def to_lab(colour: np.ndarray) -> np.ndarray:
    """(ny, nx, 3) CIE L*a*b* of a stretched (sRGB-encoded) ``(3, ny, nx)`` image."""
    import cv2

    return cv2.cvtColor(
        np.ascontiguousarray(np.clip(np.moveaxis(colour, 0, -1), 0, 1), np.float32), cv2.COLOR_RGB2Lab
    )


def from_lab(lab: np.ndarray) -> np.ndarray:
    import cv2

    return np.clip(np.moveaxis(cv2.cvtColor(lab, cv2.COLOR_Lab2RGB), -1, 0), 0, 1).astype(np.float32)
