"""Numerics every stage shares, written once: the robust sigma and the B3-spline kernel.

Kept free of other astroflow imports, so a stage that uses them does not take on another
stage's code (and its reruns: :func:`astroflow.options.code_hash`).
"""

from __future__ import annotations

import numpy as np

MAD_SIGMA = 1.4826  # median absolute deviation -> Gaussian sigma
B3 = np.array([1, 4, 6, 4, 1], np.float32) / 16  # B3-spline, the à trous wavelet kernel
# sigma of white Gaussian noise (sigma 1) in à trous layers 1..5 of the B3 spline
LAYER_NOISE = (0.8907, 0.2007, 0.0856, 0.0413, 0.0205)


def mad_sigma(values: np.ndarray, center=None, axis=None):
    """Robust sigma, 1.4826 × the median absolute deviation of ``values`` from ``center``
    (their median if None), along ``axis``."""
    values = np.asarray(values)
    if center is None:
        center = np.median(values, axis=axis, keepdims=axis is not None)
    return MAD_SIGMA * np.median(np.abs(values - center), axis=axis)
