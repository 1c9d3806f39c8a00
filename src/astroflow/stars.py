"""Star mask, star removal (starless + stars images), star reduction and recombination.

Images are float32 in [0, 1], mono or ``(3, ny, nx)``; stretched images unless stated.

* ``star_mask``: stars detected on the luminance (sep) plus white (>= 0.98) cores, each drawn
  as a disc whose radius grows with its flux (halos of bright stars), softened at the edge;
  values in [0, 1].
* ``remove_stars`` (classical): pixels under the mask are replaced by inpainting from outside it
  (normalised convolution at growing scales, so nebula gradients continue under a star). The
  stars image is the *unscreen* of original and starless, ``1 - (1 - orig) / (1 - starless)``,
  so that ``screen(starless, stars)`` gives the original back.
* ``starnet``: the same split by an external StarNet2 command (``starnet++ in.tif out.tif``)
  when the user has one.
* ``reduce_stars``: morphological (grey erosion of the stars image blended by ``amount``);
  ``reduce_blanshan``: Bill Blanshan's Transfer / Halo / Star PixelMath methods.
* ``combine``: ``screen``, ``add`` or ``lighten``.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage

from .measure import detect_stars
from .stretch import mtf

COMBINES = ("screen", "add", "lighten")


def _lum(image):
    return image if image.ndim == 2 else image.mean(axis=0)


def star_mask(image: np.ndarray, sigma: float = 3.0, size: float = 1.0, soft: float = 1.0) -> np.ndarray:
    """Soft star mask (see module doc); ``size`` scales all radii."""
    import cv2

    lum = np.asarray(_lum(image), np.float32)
    # detection drops objects cut by the border; mirrored, a border star is whole again
    pad = 16
    stars = detect_stars(np.pad(lum, pad, mode="reflect"), sigma, max_stars=20000, min_fwhm=1.0)
    stars["x"] -= pad
    stars["y"] -= pad
    mask = np.zeros(lum.shape, np.uint8)
    if len(stars):
        ref = max(float(np.median(stars["flux"])), 1e-12)
        fw = np.clip(stars["fwhm"], 1.5, 20)
        radius = size * 1.5 * fw * (1 + 0.5 * np.log10(np.maximum(stars["flux"] / ref, 1)))
        for x, y, r in zip(stars["x"], stars["y"], radius, strict=True):
            cv2.circle(mask, (int(round(x)), int(round(y))), int(np.ceil(r)), 1, -1)
    # white cores: saturated stars, which detect_stars may drop as too wide; grown by their halo
    white = lum >= 0.98
    if white.any():
        mask |= ndimage.binary_dilation(white, iterations=int(np.ceil(3 * size))).astype(np.uint8)
    m = mask.astype(np.float32)
    if soft > 0:
        m = np.maximum(m, ndimage.gaussian_filter(m, soft))
    return np.clip(m, 0, 1)


def inpaint(plane: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Fill ``hole`` pixels from their surroundings (normalised Gaussian convolution, growing scale)."""
    out = np.array(plane, np.float32, copy=True)
    known = ~hole
    todo = hole.copy()
    sigma = 1.0
    while todo.any() and sigma < max(plane.shape):
        w = ndimage.gaussian_filter(known.astype(np.float32), sigma)
        v = ndimage.gaussian_filter(np.where(known, out, 0).astype(np.float32), sigma)
        fill = todo & (w > 0.2)
        out[fill] = v[fill] / w[fill]
        known = known | fill
        todo &= ~fill
        sigma *= 1.6
    return out


def remove_stars(image: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(starless, stars) by mask and inpainting; ``stars`` is the unscreen of the two."""
    img = np.clip(np.asarray(image, np.float32), 0, 1)
    if mask is None:
        mask = star_mask(img)
    hole = mask > 0.05
    planes = img[None] if img.ndim == 2 else img
    starless = np.stack([np.minimum(inpaint(p, hole), p) for p in planes])
    starless = starless[0] if img.ndim == 2 else starless
    return starless, unscreen(img, starless)


def unscreen(original: np.ndarray, starless: np.ndarray) -> np.ndarray:
    """Stars image ``s`` with ``screen(starless, s) == original``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        s = 1 - (1 - original) / np.maximum(1 - starless, 1e-6)
    return np.clip(np.nan_to_num(s), 0, 1).astype(np.float32)


def combine(starless: np.ndarray, stars: np.ndarray, how: str = "screen") -> np.ndarray:
    if how == "screen":
        out = 1 - (1 - starless) * (1 - stars)
    elif how == "add":
        out = starless + stars
    elif how == "lighten":
        out = np.maximum(starless, stars)
    else:
        raise ValueError(f"unknown star combination {how!r}; choose one of {COMBINES}")
    return np.clip(out, 0, 1).astype(np.float32)


def reduce_stars(stars: np.ndarray, amount: float = 0.7, size: int = 5) -> np.ndarray:
    """Morphological star reduction: blend the stars image with its circular grey erosion."""
    yy, xx = np.mgrid[-(size // 2) : size // 2 + 1, -(size // 2) : size // 2 + 1]
    fp = xx**2 + yy**2 <= (size // 2) ** 2 + 1
    planes = stars[None] if stars.ndim == 2 else stars
    eroded = np.stack([ndimage.grey_erosion(p, footprint=fp) for p in planes])
    eroded = eroded[0] if stars.ndim == 2 else eroded
    return ((1 - amount) * stars + amount * eroded).astype(np.float32)


def _div(a, b):
    """a / b for images in [0, 1], with 0/0 and x/0 taken as 1 (white over white is no change)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 1e-6, a / np.maximum(b, 1e-6), 1.0)


def reduce_blanshan(
    image: np.ndarray,
    starless: np.ndarray,
    method: str,
    strength: float = 0.15,
    iterations: int = 1,
    mode: int = 1,
) -> np.ndarray:
    """Bill Blanshan's star reductions (AutoIntegrate's Transfer / Halo / Star), stretched images.

    ``image`` has stars, ``starless`` is the same image without; ``~x = 1 - x``.

    * ``transfer``: both images through ``mtf(~S)`` (``S`` = ``strength``, lower = smaller
      stars), the stars transferred by ``f = ~((~mtf(~S, T) / ~mtf(~S, starless)) * ~starless)``;
    * ``halo``: the halo term ``~(~T/~starless) - ~(~mtf(~S,T)/~mtf(~S,starless))`` (and it
      scaled by ``~starless``) is subtracted, shrinking halos more than cores;
    * ``star``: ``iterations`` (1-3) of ``E = E * ~(~(starless / E) * ~E)``; ``mode`` 1 strong
      takes ``E``, 2 moderate ``max(E, T E + E ~E)``, 3 soft the mean of that and ``T ~(T - it)``.

    The result is never darker than the starless image (``max(starless, ...)``), in [0, 1].
    """
    t = np.clip(np.asarray(image, np.float32), 0, 1)
    sl = np.clip(np.asarray(starless, np.float32), 0, 1)
    if method in ("transfer", "halo"):
        m = 1 - strength
        moved = 1 - _div(1 - mtf(m, t), 1 - mtf(m, sl))
        if method == "transfer":
            out = 1 - (1 - moved) * (1 - sl)
        else:
            f3 = (1 - _div(1 - t, 1 - sl)) - moved
            out = t - 0.5 * (f3 * (1 - sl) + f3)
    elif method == "star":
        if not 1 <= iterations <= 3 or mode not in (1, 2, 3):
            raise ValueError("stars.reduce_iterations must be 1-3 and stars.reduce_mode 1, 2 or 3")
        e = t
        for _ in range(iterations):
            e = e * (1 - (1 - _div(sl, e)) * (1 - e))
        moderate = np.maximum(e, t * e + e * (1 - e))
        out = {1: e, 2: moderate, 3: 0.5 * (moderate + t * (1 - (t - moderate)))}[mode]
    else:
        raise ValueError(f"unknown Blanshan star reduction {method!r}; choose transfer, halo or star")
    return np.clip(np.maximum(sl, out), 0, 1).astype(np.float32)


def starnet(image: np.ndarray, command: str) -> tuple[np.ndarray, np.ndarray]:
    """(starless, stars) from an external StarNet2 command line (``command IN.tif OUT.tif``)."""
    import tifffile

    exe = shutil.which(command.split()[0])
    if exe is None:
        raise FileNotFoundError(f"stars.starnet_command: {command.split()[0]!r} not found on PATH")
    img = np.clip(np.asarray(image, np.float32), 0, 1)
    rgb = np.stack([img] * 3) if img.ndim == 2 else img
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.tif", Path(tmp) / "starless.tif"
        tifffile.imwrite(src, np.round(np.moveaxis(rgb, 0, -1) * 65535).astype(np.uint16))
        proc = subprocess.run([*command.split(), str(src), str(dst)], capture_output=True, text=True, cwd=tmp)
        if proc.returncode != 0 or not dst.exists():
            raise RuntimeError(
                f"stars.starnet_command {command!r} failed: {proc.stderr[-500:] or proc.stdout[-500:]}"
            )
        out = np.moveaxis(tifffile.imread(dst).astype(np.float32) / 65535, -1, 0)
    starless = out.mean(axis=0) if img.ndim == 2 else out
    starless = np.minimum(starless, img)
    return starless, unscreen(img, starless)
