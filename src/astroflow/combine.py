"""Channel combination: linear fit, RGB, LRGB (luminance replacement in CIE L*a*b*).

Linear images are float32 in [0, 1] (``stretch.normalise``); ``lrgb`` works on stretched
(display) images, which it treats as sRGB-encoded.
"""

from __future__ import annotations

import numpy as np

from .stretch import mtf

LINEAR_FIT_REFERENCES = ("auto", "min", "max", "R", "G", "B", "none")


def linear_fit(image: np.ndarray, reference: np.ndarray, clip_high: float = 0.92) -> np.ndarray:
    """``a + b * image`` fitted to ``reference`` by least squares (PixInsight LinearFit).

    Pixels near the top of either image (saturated stars) are left out; two passes drop pixels
    whose residual exceeds 3 sigma (stars of different colour than the sky).
    """
    x = np.asarray(image, np.float64).ravel()[::7]
    y = np.asarray(reference, np.float64).ravel()[::7]
    keep = np.isfinite(x) & np.isfinite(y) & (x < clip_high * np.nanmax(x)) & (y < clip_high * np.nanmax(y))
    a, b = 0.0, 1.0
    for _ in range(3):
        b, a = np.polyfit(x[keep], y[keep], 1)
        resid = y - (a + b * x)
        sd = 1.4826 * np.median(np.abs(resid[keep]))
        keep &= np.abs(resid) < 3 * max(sd, 1e-12)
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


def lrgb(lum: np.ndarray, colour: np.ndarray, lightness: float = 0.5, saturation: float = 0.5) -> np.ndarray:
    """Replace the lightness of stretched ``colour`` (3, ny, nx) by stretched ``lum`` in CIE L*a*b*.

    ``lightness`` is a midtones balance applied to the new lightness and ``saturation`` one applied
    to chroma (as LRGBCombination: 0.5 leaves them unchanged, lower values brighten/saturate).
    """
    import cv2

    img = np.clip(np.moveaxis(colour, 0, -1), 0, 1).astype(np.float32)
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2Lab)  # L in [0, 100], a/b about [-127, 127]
    lab[..., 0] = 100 * mtf(lightness, np.clip(lum, 0, 1))
    if saturation != 0.5:
        chroma = np.hypot(lab[..., 1], lab[..., 2])
        scale = np.where(
            chroma > 0, 128 * mtf(saturation, np.clip(chroma / 128, 0, 1)) / np.maximum(chroma, 1e-6), 1
        )
        lab[..., 1:] *= scale[..., None]
    out = cv2.cvtColor(lab, cv2.COLOR_Lab2RGB)
    return np.clip(np.moveaxis(out, -1, 0), 0, 1).astype(np.float32)
