"""Multiscale noise reduction, sharpening, SCNR and saturation (mono or ``(3, ny, nx)``, [0, 1]).

Noise reduction and sharpening work on à trous (B3-spline) wavelet layers, as PixInsight's
MultiscaleLinearTransform: layer ``j`` holds structures of about ``2**j`` px. Noise reduction
soft-thresholds each layer at ``threshold * sigma_j`` (sigma_j: the image noise seen in layer j)
and blends by ``amount``; AutoIntegrate's strength presets 1–6 choose the per-layer
(threshold, amount) lists. A luminance mask protects bright areas: the result is
``mask * original + (1 - mask) * processed`` (inverse for sharpening, which acts on bright parts).

``acdnr`` is the non-linear (stretched image) counterpart, in the spirit of PixInsight's ACDNR:
edge-preserving smoothing of lightness and a blur of chrominance, both weighted towards the dark
background by the inverse luminance mask.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .measure import noise_sigma
from .numerics import B3, LAYER_NOISE, mad_sigma, median

# AutoIntegrate MLT presets (peers.md §1.2.7): per layer (threshold sigma, amount); iterations dropped
NOISE_PRESETS = {
    0: [],
    1: [(1.0, 0.5)],
    2: [(2.0, 0.5), (0.5, 0.5)],
    3: [(3.0, 0.5), (1.0, 0.5), (0.5, 0.5)],
    4: [(4.0, 0.5), (2.0, 0.5), (1.0, 0.5), (0.5, 0.5)],
    5: [(5.0, 0.6), (3.0, 0.6), (2.0, 0.5), (1.0, 0.5)],
    6: [(6.0, 0.7), (4.0, 0.7), (3.0, 0.6), (2.0, 0.5)],
}
SHARPEN_BIAS = (0.0, 0.025, 0.075, 0.0, 0.0)


def atrous(plane: np.ndarray, layers: int) -> list[np.ndarray]:
    """Wavelet layers 1..``layers`` plus the residual (sum = ``plane``)."""
    out, c = [], np.asarray(plane, np.float32)
    for j in range(layers):
        k = np.zeros(4 * 2**j + 1, np.float32)
        k[:: 2**j] = B3
        s = ndimage.convolve1d(ndimage.convolve1d(c, k, axis=0, mode="mirror"), k, axis=1, mode="mirror")
        out.append(c - s)
        c = s
    out.append(c)
    return out


def luminance_mask(image: np.ndarray) -> np.ndarray:
    lum = image if image.ndim == 2 else image.mean(axis=0)
    return np.clip(ndimage.gaussian_filter(lum, 2), 0, 1).astype(np.float32)


def _planes(image):
    return (image[None] if image.ndim == 2 else image), image.ndim == 2


def noise_reduction(image: np.ndarray, strength: int = 3, use_mask: bool = True) -> np.ndarray:
    """Multiscale noise reduction with an AutoIntegrate strength preset (0 = off)."""
    preset = NOISE_PRESETS[int(strength)]
    if not preset:
        return np.asarray(image, np.float32)
    planes, mono = _planes(np.asarray(image, np.float32))
    out = []
    for p in planes:
        sigma = noise_sigma(p)
        layers = atrous(p, len(preset))
        for j, (thr, amount) in enumerate(preset):
            t = thr * sigma * LAYER_NOISE[j]
            w = layers[j]
            soft = np.sign(w) * np.maximum(np.abs(w) - t, 0)
            layers[j] = (1 - amount) * w + amount * soft
        out.append(np.sum(layers, axis=0))
    res = np.stack(out)
    if use_mask:
        mask = luminance_mask(image)
        res = mask * planes + (1 - mask) * res
    return (res[0] if mono else res).astype(np.float32)


def acdnr(image: np.ndarray, amount: float = 1.0, amount_l: float = 0.5, scale: float = 1.5) -> np.ndarray:
    """Non-linear noise reduction of a stretched image (module doc).

    Lightness gets a bilateral filter (spatial sigma ``scale`` px, range sigma 2 × the pixel
    noise, so stars and edges are kept) blended by ``amount_l``; chrominance (each channel minus
    the lightness) a Gaussian blur of ``2 * scale`` px blended by ``amount``. Both act through
    ``1 - luminance mask``: fully on the background, little on bright stars and nebula.
    """
    import cv2

    img = np.asarray(image, np.float32)
    if amount <= 0 and amount_l <= 0:
        return img
    planes, mono = _planes(img)
    lum = planes.mean(axis=0)
    weight = 1 - luminance_mask(lum)
    noise = max(noise_sigma(lum), 1e-6)
    smooth = cv2.bilateralFilter(lum, d=0, sigmaColor=2 * noise, sigmaSpace=scale)
    new_lum = lum + amount_l * weight * (smooth - lum)
    if mono:
        return np.clip(new_lum, 0, 1).astype(np.float32)
    chroma = planes - lum
    blurred = np.stack([cv2.GaussianBlur(c, (0, 0), 2 * scale) for c in chroma])
    chroma = chroma + amount * weight * (blurred - chroma)
    return np.clip(new_lum + chroma, 0, 1).astype(np.float32)


def sharpen(image: np.ndarray, bias=SHARPEN_BIAS, use_mask: bool = True) -> np.ndarray:
    """Boost wavelet layers by ``1 + bias[j]`` where the image is brighter than its background.

    The mask is the smoothed luminance rescaled so the median background is 0 and white is 1:
    sharpening the sky would only amplify its noise (and push dim pixels to black).
    """
    planes, mono = _planes(np.asarray(image, np.float32))
    out = []
    for p in planes:
        layers = atrous(p, len(bias))
        out.append(sum((1 + b) * w for b, w in zip(bias, layers[:-1], strict=True)) + layers[-1])
    res = np.stack(out)
    if use_mask:
        mask = luminance_mask(image)
        bg = float(median(mask))
        mask = np.clip((mask - bg) / max(1 - bg, 1e-6), 0, 1)
        res = (1 - mask) * planes + mask * res
    res = np.clip(res, 0, 1)
    return (res[0] if mono else res).astype(np.float32)


def scnr(rgb: np.ndarray, amount: float = 1.0, scale: float = 2.0) -> np.ndarray:
    """SCNR 'average neutral': remove green above the mean of red and blue, blended by ``amount``.

    The excess is measured on images smoothed by a Gaussian of ``scale`` px, so pixel noise in a
    neutral background is not taken for green (which would darken the green channel there).
    """
    out = np.array(rgb, np.float32, copy=True)
    r, g, b = (ndimage.gaussian_filter(c, scale) if scale > 0 else c for c in out)
    excess = np.maximum(g - (r + b) / 2, 0)
    out[1] = np.clip(out[1] - amount * excess, 0, 1)
    return out


_S_CURVE = ((0.0, 0.0), (0.68734, 0.83204), (1.0, 1.0))


def saturation(rgb: np.ndarray, steps: int = 1, chroma_blur: float = 1.5) -> np.ndarray:
    """AutoIntegrate's saturation curve (0,0)-(0.687,0.832)-(1,1), on CIE L*a*b* chroma.

    Lightness is untouched and the boost is masked by signal above the background (as
    AutoIntegrate's masked saturation), so the background keeps its level and neutrality;
    chroma is first smoothed by ``chroma_blur`` px (chrominance noise reduction, like ACDNR's).
    """
    from scipy.interpolate import PchipInterpolator

    from .combine import from_lab, smooth_chroma, to_lab

    lab = to_lab(smooth_chroma(rgb, chroma_blur))
    if steps > 0:
        curve = PchipInterpolator(*zip(*_S_CURVE, strict=True))
        chroma = np.hypot(lab[..., 1], lab[..., 2])
        c = np.clip(chroma / 128, 0, 1)
        for _ in range(steps):
            c = curve(c)
        scale = np.where(chroma > 1e-6, 128 * c / np.maximum(chroma, 1e-6), 1)
        lum = ndimage.gaussian_filter(np.asarray(rgb, np.float32).mean(axis=0), 2)
        bg = float(median(lum))
        noise = float(mad_sigma(lum, bg))
        mask = np.clip((lum - bg - 3 * noise) / 0.2, 0, 1)
        lab[..., 1:] *= (1 + mask * (scale - 1))[..., None].astype(np.float32)
    return from_lab(lab)
