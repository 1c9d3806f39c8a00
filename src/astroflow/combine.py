"""Channel combination: linear fit, RGB, LRGB (luminance replacement in CIE L*a*b*).

Linear images are float32 in [0, 1] (``stretch.normalise``); ``lrgb`` works on stretched
(display) images, which it treats as sRGB-encoded.
"""

from __future__ import annotations

import numpy as np

from .numerics import mad_sigma
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
    sx, sy = float(mad_sigma(x, bx)), float(mad_sigma(y, by))
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
    new_l = srgb_to_lstar(mtf(lightness, np.clip(lum, 0, 1)))
    # chroma follows lightness where it drops (saturation C/L kept): a noise dip in L must not
    # turn a dim pixel's colour into an out-of-gamut one
    with np.errstate(invalid="ignore", divide="ignore"):
        lab[..., 1:] *= np.clip(np.nan_to_num(new_l / lab[..., 0], nan=1.0), 0, 1)[..., None]
    lab[..., 0] = new_l
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


# linear sRGB (D65) from CIE XYZ, the matrix behind OpenCV's Lab conversions
_XYZ_TO_RGB = np.array(
    [
        [3.2404542, -1.5371385, -0.4985314],
        [-0.9692660, 1.8760108, 0.0415560],
        [0.0556434, -0.2040259, 1.0572252],
    ],
    np.float32,
)
_WHITE = np.array([0.950456, 1.0, 1.088754], np.float32)


def from_lab(lab: np.ndarray) -> np.ndarray:
    """``(3, ny, nx)`` sRGB-encoded image of (ny, nx, 3) CIE L*a*b* (D65), mapped into gamut.

    A colour outside the sRGB gamut is desaturated towards the grey of the same lightness
    (in linear RGB, which keeps Y and so L*), not clipped per channel: clipping would darken dim
    coloured pixels to black and shift hues.
    """
    lab = np.asarray(lab, np.float32)
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200])
    xyz = np.where(f > 6 / 29, f**3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * _WHITE[:, None, None]
    rgb = np.tensordot(_XYZ_TO_RGB, xyz, axes=1)
    grey = np.clip(xyz[1], 0, 1)
    low = rgb.min(axis=0)
    high = rgb.max(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        t_low = np.where(low < 0, grey / (grey - low), 1)
        t_high = np.where(high > 1, (1 - grey) / (high - grey), 1)
    t = np.clip(np.minimum(t_low, t_high), 0, 1)
    rgb = np.clip(grey + t * (rgb - grey), 0, 1)
    srgb = np.where(rgb <= 0.0031308, 12.92 * rgb, 1.055 * rgb ** (1 / 2.4) - 0.055)
    return np.clip(srgb, 0, 1).astype(np.float32)


NB_RGB_AUTO = {"R": ("H", "S"), "G": ("O",), "B": ("O",), "L": ("H",)}


def continuum_scale(nb: np.ndarray, broad: np.ndarray, min_stars: int = 5) -> float:
    """Median ``broad / nb`` flux ratio of stars (continuum sources) found in both images.

    Raises ValueError with fewer than ``min_stars`` usable stars.
    """
    import sep

    from .measure import detect_stars

    b = np.ascontiguousarray(np.nan_to_num(broad), np.float32)
    n = np.ascontiguousarray(np.nan_to_num(nb), np.float32)
    found = detect_stars(b, 5.0)
    found = found[~found["sat"] & (found["peak"] < 0.9 * float(b.max()))][:200]
    if len(found) < min_stars:
        raise ValueError(f"only {len(found)} stars to scale the narrowband channel (need {min_stars})")
    # local background from a fine mesh (nebulae differ between the bands; annuli would catch
    # neighbouring stars), small apertures: the PSF is the same in both, only the ratio matters
    r = 1.5 * np.clip(found["fwhm"], 1.5, 10)
    fb = sep.sum_circle(b - sep.Background(b, bw=16, bh=16).back(), found["x"], found["y"], r)[0]
    fn = sep.sum_circle(n - sep.Background(n, bw=16, bh=16).back(), found["x"], found["y"], r)[0]
    ok = (fb > 0) & (fn > 0)
    if ok.sum() < min_stars:
        raise ValueError(f"only {int(ok.sum())} stars are seen in the narrowband channel (need {min_stars})")
    return float(np.median(fb[ok] / fn[ok]))


def line_signal(nb: np.ndarray, broad: np.ndarray, nb_bw: float, broad_bw: float, scale: float) -> np.ndarray:
    """Emission-line signal in ``broad``'s units: the narrowband image minus its continuum.

    With ``s`` = ``scale`` (broad/nb ratio of stars) and ``Q = nb_bw / broad_bw`` (bandwidths,
    nm), a continuum source gives ``s N = C`` while a line seen equally by both filters gives
    ``s N = C_line / Q``, so ``line = Q (s N - C) / (1 - Q)`` (backgrounds removed first).
    Zero-mean noise where there is no line; stars cancel.
    """
    q = nb_bw / broad_bw
    if not 0 < q < 1:
        raise ValueError(f"narrowband bandwidth {nb_bw} nm must be below the broadband {broad_bw} nm")
    sn = scale * np.asarray(nb, np.float32)
    c = np.asarray(broad, np.float32)
    sn = sn - np.median(sn)
    c = c - np.median(c)
    return (q * (sn - c) / (1 - q)).astype(np.float32)


def add_narrowband(
    channels: dict[str, np.ndarray], mapping: dict[str, list[str]], boost: float, bandwidth: dict[str, float]
) -> tuple[dict[str, np.ndarray], list[str]]:
    """NBRGBCombination-style enhancement of linear broadband channels (see ``line_signal``).

    ``mapping``: broadband channel -> narrowband channels whose line is added, ``boost`` times,
    e.g. ``{"R": ["H"], "L": ["H"]}`` (Ha into red and luminance). Returns the new channels
    and notes like ``R+1.2*H(s=0.031)``; a pair without enough stars is skipped with a note.
    """
    out = dict(channels)
    notes = []
    for c, nbs in mapping.items():
        for n in nbs:
            if c not in channels or n not in channels:
                continue
            try:
                s = continuum_scale(channels[n], channels[c])
            except ValueError as e:
                notes.append(f"{c}+{n} skipped: {e}")
                continue
            line = line_signal(channels[n], channels[c], bandwidth[n], bandwidth[c], s)
            out[c] = np.clip(out[c] + boost * line, 0, 1).astype(np.float32)
            notes.append(f"{c}+{boost:g}*{n}(s={s:.3g})")
    return out, notes
