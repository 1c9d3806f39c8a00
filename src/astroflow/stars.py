"""Star mask, star removal (starless + stars images), star reduction and recombination.

Images are float32 in [0, 1], mono or ``(3, ny, nx)``; stretched images unless stated.

* ``star_mask``: stars detected on the luminance (sep), each drawn as a disc whose radius grows
  with its flux (halos of bright stars), softened at the edge; values in [0, 1].
* ``remove_stars`` (classical): pixels under the mask are replaced by inpainting from outside it
  (normalised convolution at growing scales, so nebula gradients continue under a star). The
  stars image is the *unscreen* of original and starless, ``1 - (1 - orig) / (1 - starless)``,
  so that ``screen(starless, stars)`` gives the original back.
* ``starnet``: the same split by an external StarNet2 command (``starnet++ in.tif out.tif``)
  when the user has one.
* ``reduce_stars``: morphological (grey erosion of the stars image blended by ``amount``).
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

COMBINES = ("screen", "add", "lighten")


def _lum(image):
    return image if image.ndim == 2 else image.mean(axis=0)


def star_mask(image: np.ndarray, sigma: float = 3.0, size: float = 1.0, soft: float = 1.0) -> np.ndarray:
    """Soft star mask (see module doc); ``size`` scales all radii."""
    import cv2

    lum = np.asarray(_lum(image), np.float32)
    stars = detect_stars(lum, sigma, max_stars=20000, min_fwhm=1.0)
    mask = np.zeros(lum.shape, np.uint8)
    if len(stars):
        ref = max(float(np.median(stars["flux"])), 1e-12)
        fw = np.clip(stars["fwhm"], 1.5, 20)
        radius = size * 1.5 * fw * (1 + 0.5 * np.log10(np.maximum(stars["flux"] / ref, 1)))
        for x, y, r in zip(stars["x"], stars["y"], radius, strict=True):
            cv2.circle(mask, (int(round(x)), int(round(y))), int(np.ceil(r)), 1, -1)
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
