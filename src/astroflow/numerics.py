"""Numerics every stage shares, written once: the median, the robust sigma and the B3-spline
kernel.

Kept free of other astroflow imports, so a stage that uses them does not take on another
stage's code (and its reruns: :func:`astroflow.options.code_hash`).
"""

from __future__ import annotations

import numpy as np

MAD_SIGMA = 1.4826  # median absolute deviation -> Gaussian sigma
B3 = np.array([1, 4, 6, 4, 1], np.float32) / 16  # B3-spline, the à trous wavelet kernel
# sigma of white Gaussian noise (sigma 1) in à trous layers 1..5 of the B3 spline
LAYER_NOISE = (0.8907, 0.2007, 0.0856, 0.0413, 0.0205)


def median(values: np.ndarray):
    """The median of all of ``values``, exactly as ``np.median`` gives it (NaN if any value is
    NaN), ~10× faster on an even count: numpy selects its two middle ranks with a generic
    introselect but a single rank with its vectorised one (numpy 2), so one rank is selected
    and the lower middle is the largest value below it."""
    v = np.ravel(values)
    if v.dtype.kind not in "fiu" or v.size == 0 or (v.dtype.kind == "f" and np.isnan(v).any()):
        return np.median(v)
    half = v.size // 2
    part = np.partition(v, half)
    upper = part[half]
    if v.size % 2:
        return upper if v.dtype.kind == "f" else np.float64(upper)
    lower = part[:half].max()
    if v.dtype.kind != "f":  # as np.median: integers average in float64
        lower, upper = np.float64(lower), np.float64(upper)
    return (lower + upper) / 2


def nanmedian(values: np.ndarray):
    """:func:`median` of the values of ``values`` that are not NaN (``np.nanmedian`` of the
    whole array); NaN when all are."""
    v = np.ravel(values)
    if v.dtype.kind == "f":
        v = v[~np.isnan(v)]
    return median(v) if v.size else np.float64(np.nan)


def pixels_where(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ys, xs)`` of the true pixels of a 2-D ``mask``, in row-major order, as ``np.nonzero``
    gives them, ~10× faster on a sparse frame-sized mask (numpy builds 2-D indices slowly)."""
    flat = np.flatnonzero(mask)
    return np.divmod(flat, mask.shape[1])


def mad_sigma(values: np.ndarray, center=None, axis=None):
    """Robust sigma, 1.4826 × the median absolute deviation of ``values`` from ``center``
    (their median if None), along ``axis``."""
    values = np.asarray(values)
    if axis is None:
        center = median(values) if center is None else center
        return MAD_SIGMA * median(np.abs(values - center))
    if center is None:
        center = np.median(values, axis=axis, keepdims=True)
    return MAD_SIGMA * np.median(np.abs(values - center), axis=axis)
