"""Non-linear stretches of linear images (PixInsight / AutoIntegrate names and defaults).

Images are float32 normalised to [0, 1] (``normalise`` maps a linear integration there: black
at its minimum, white at its maximum). Colour images are ``(3, ny, nx)``. Every stretch returns
values in [0, 1].

* ``auto_stf``: PixInsight's ScreenTransferFunction auto stretch made permanent: shadows clipped
  at ``median + shadows_clip * 1.4826 MAD`` (``shadows_clip`` = -2.8, but never more than 0.02 %
  of the pixels, so the finished image stays within 0.1 % clipped), midtones chosen so the median
  lands on ``target`` (0.25); ``linked`` shares the shadows point (the lowest of the channels')
  and keeps backgrounds neutral.
* ``histogram``: midtones found by bisection so the median lands on ``target``.
* ``arcsinh``: ``asinh(f x) / asinh(f)`` in ``iterations`` steps of ``f = factor**(1/iterations)``
  after a black point (never above the sky's noise floor), then a histogram stretch to ``target``.
* ``masked``: many small histogram steps, each weighted by the inverse of the current image
  (bright stars stretch less), as MaskedStretch does.
* ``ghs``: generalized hyperbolic stretch (stretch factor ``D``, local intensity ``b``, symmetry
  point ``SP``; Payne & Cranfield), with ``SP`` at the median by default.
* ``none``.
"""

from __future__ import annotations

import numpy as np

from .numerics import mad_sigma, median

STRETCHES = ("auto_stf", "histogram", "arcsinh", "masked", "ghs", "none")


def normalise(image: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """Map a linear image to [0, 1] (one black and white point for all channels: colour is kept)."""
    img = np.nan_to_num(np.asarray(image, np.float32))
    lo = float(np.min(img)) if low is None else low
    hi = float(np.max(img)) if high is None else high
    return np.clip((img - lo) / max(hi - lo, 1e-12), 0, 1).astype(np.float32)


def mtf(m: float | np.ndarray, x: np.ndarray) -> np.ndarray:
    """Midtones transfer function: MTF(m, x) = (m - 1) x / ((2m - 1) x - m); MTF(m, m) = 0.5."""
    m = np.asarray(m, np.float32)
    x = np.asarray(x, np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (m - 1) * x / ((2 * m - 1) * x - m)
    return np.clip(np.nan_to_num(out), 0, 1).astype(np.float32)


def _stats(plane: np.ndarray) -> tuple[float, float]:
    sample = plane.ravel()[:: max(1, plane.size // 1_000_000)]
    med = float(median(sample))
    return med, float(mad_sigma(sample, med))


def histogram_transform(
    x: np.ndarray, shadows: float, midtones: float, highlights: float = 1.0
) -> np.ndarray:
    """PixInsight HistogramTransformation: clip to [shadows, highlights], rescale, apply MTF."""
    y = np.clip((x - shadows) / max(highlights - shadows, 1e-12), 0, 1)
    return mtf(midtones, y)


def midtones_for(median: float, target: float) -> float:
    """Midtones balance m with MTF(m, median) = target (closed form)."""
    if median <= 0:
        return 0.5
    return float((target - 1) * median / ((2 * target - 1) * median - target))


def auto_stf(
    image: np.ndarray,
    target: float = 0.25,
    shadows_clip: float = -2.8,
    linked: bool = True,
    max_clip: float = 0.0002,
) -> np.ndarray:
    """AutoSTF applied as a histogram transformation (see module doc).

    The shadows point never clips more than ``max_clip`` of a channel's pixels to black (after
    noise reduction the -2.8 MAD point can sit inside the noise).
    """
    planes = image[None] if image.ndim == 2 else image
    stats = []
    for p in planes:
        med, mad = _stats(p)
        floor = float(np.quantile(p.ravel()[:: max(1, p.size // 1_000_000)], max_clip))
        stats.append((med, max(mad, (med - floor) / -shadows_clip) if shadows_clip < 0 else mad))
    if linked:
        # one shadows point; midtones per channel so each channel's background lands on the target
        # (linked STF would leave a 0.1 % linear background mismatch as a ~1 % colour cast)
        c0 = float(np.clip(min(med + shadows_clip * mad for med, mad in stats), 0, 1))
        out = np.stack(
            [
                histogram_transform(p, c0, midtones_for((med - c0) / (1 - c0), target))
                for p, (med, _) in zip(planes, stats, strict=True)
            ]
        )
    else:
        outs = []
        for p, (med, mad) in zip(planes, stats, strict=True):
            c0 = float(np.clip(med + shadows_clip * mad, 0, 1))
            outs.append(histogram_transform(p, c0, midtones_for((med - c0) / (1 - c0), target)))
        out = np.stack(outs)
    return out[0] if image.ndim == 2 else out


def histogram(image: np.ndarray, target: float = 0.25, linked: bool = True) -> np.ndarray:
    """Midtones so that the median becomes ``target`` (no shadows clipping)."""
    planes = image[None] if image.ndim == 2 else image
    meds = [_stats(p)[0] for p in planes]
    if linked:
        m = midtones_for(float(np.mean(meds)), target)
        out = np.stack([mtf(m, p) for p in planes])
    else:
        out = np.stack([mtf(midtones_for(md, target), p) for p, md in zip(planes, meds, strict=True)])
    return out[0] if image.ndim == 2 else out


def arcsinh(
    image: np.ndarray,
    factor: float = 50.0,
    black_point: float = 0.01,
    iterations: int = 3,
    target: float = 0.25,
) -> np.ndarray:
    """Iterated arcsinh stretch (colour-preserving: one luminance ratio for all channels).

    The black point is ``black_point`` (capped at 0.2) but never above the background's noise
    floor (median - 2.8 MAD), so the sky is not clipped to black.
    """
    img = np.asarray(image, np.float32)
    med, mad = _stats(img if img.ndim == 2 else img.mean(axis=0))
    bp = max(0.0, min(black_point, 0.2, med - 2.8 * mad))
    x = np.clip((img - bp) / (1 - bp), 0, 1)
    f = factor ** (1.0 / iterations)
    for _ in range(iterations):
        lum = x if x.ndim == 2 else x.mean(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(lum > 0, np.arcsinh(f * lum) / (lum * np.arcsinh(f)), 0)
        x = np.clip(x * ratio, 0, 1)
    return histogram(x, target)


def masked(
    image: np.ndarray, target: float = 0.125, iterations: int = 100, prestretch: float = 0.1
) -> np.ndarray:
    """MaskedStretch: ``iterations`` small MTF steps, each blended through the inverse of the image."""
    x = np.asarray(image, np.float32)
    if prestretch > 0:
        x = histogram(x, prestretch)
    med = _stats(x if x.ndim == 2 else x.mean(axis=0))[0]
    if med <= 0 or med >= target:
        return x
    # per-step midtones so that, unmasked, `iterations` steps would move the median to the target
    lo, hi = 0.0, 0.5
    for _ in range(40):
        m = (lo + hi) / 2
        y = med
        for _ in range(iterations):
            y = float(mtf(m, np.float32(y)))
        lo, hi = (m, hi) if y > target else (lo, m)
    for _ in range(iterations):
        lum = x if x.ndim == 2 else x.mean(axis=0)
        x = lum * x + (1 - lum) * mtf(m, x)  # bright pixels (mask = lum) keep their value
    return histogram(x, target)


def ghs(
    image: np.ndarray, D: float = 5.0, b: float = 2.0, SP: float | None = None, target: float | None = 0.25
) -> np.ndarray:
    """Generalized hyperbolic stretch (no shadow/highlight protection), optionally to a target median.

    ``D`` = ln(1 + stretch factor); ``b`` > 0 hyperbolic family (larger ``b`` concentrates the
    contrast at ``SP``). With ``target``, ``D`` is found by bisection so that the luminance
    median lands on it (the transform is monotonic, so the median maps to the median).
    """
    x = np.clip(np.asarray(image, np.float32), 0, 1)
    med = _stats(x if x.ndim == 2 else x.mean(axis=0))[0]
    sp = med if SP is None else SP
    if target is not None:
        lo, hi = 0.0, 30.0
        for _ in range(50):
            D = (lo + hi) / 2
            lo, hi = (D, hi) if float(_ghs(np.float32(med), D, b, sp)) < target else (lo, D)
    return _ghs(x, D, b, sp)


def _ghs(x, D, b, sp):
    """GHS transform: ``T(u) = 1 - (1 + b (e^D - 1) |u|)^(-1/b)``, odd about SP, rescaled to [0, 1]."""
    if D <= 0:
        return np.asarray(x, np.float32)
    d = np.exp(D) - 1

    def t(u):
        return np.sign(u) * (1 - np.power(1 + b * d * np.abs(u), -1 / b))

    lo, hi = t(0.0 - sp), t(1.0 - sp)
    return np.clip((t(np.asarray(x, np.float64) - sp) - lo) / (hi - lo), 0, 1).astype(np.float32)


def match_background(image: np.ndarray, target: float, levels) -> np.ndarray:
    """Per-channel midtones moving each background ``levels[c]`` exactly to ``target``.

    Run last on a stretched image: non-linear steps (saturation, LRGB, SCNR) shift backgrounds
    by a percent or so; this puts them back, neutral and at the configured level.
    """
    planes = image[None] if image.ndim == 2 else image
    out = np.stack(
        [mtf(midtones_for(float(lv), target), p) for p, lv in zip(planes, np.atleast_1d(levels), strict=True)]
    )
    return out[0] if image.ndim == 2 else out


def apply(image: np.ndarray, method: str, cfg: dict, linked: bool = True) -> np.ndarray:
    """Dispatch by name with the ``stretch`` config section (see config/README.md)."""
    target = cfg["target_background"]
    if method == "auto_stf":
        return auto_stf(image, target, cfg["shadows_clip"], linked)
    if method == "histogram":
        return histogram(image, target, linked)
    if method == "arcsinh":
        return arcsinh(
            image, cfg["arcsinh_factor"], cfg["arcsinh_black_point"], cfg["arcsinh_iterations"], target
        )
    if method == "masked":
        return masked(image, cfg["masked_target"])
    if method == "ghs":
        return ghs(image, cfg["ghs_D"], cfg["ghs_b"], None, target)
    if method == "none":
        return np.clip(np.asarray(image, np.float32), 0, 1)
    raise ValueError(f"unknown stretch {method!r}; choose one of {STRETCHES}")
