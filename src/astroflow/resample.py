"""Lanczos-4 resampling of a plane through an affine transform, in two separable passes.

``O(x, y) = S(u, v)`` with ``[u, v] = M @ [x, y, 1]`` (``M`` maps output pixels to source
pixels, 0-based, x = column). A 2-D Lanczos kernel costs 64 multiply-adds per pixel (OpenCV's
``INTER_LANCZOS4`` for float data runs them without SIMD: ~0.46 s per 26 MP frame); the same
kernel applied as two 1-D passes costs 16 (Catmull & Smith's two-pass decomposition):

1. along each source row ``s``: ``T(x, s) = S(u_s(x), s)`` where ``u_s(x)`` is the ``u`` at
   which output column ``x`` crosses row ``s`` (``v(x, y) = s`` solved for ``y``);
2. along each column of ``T``: ``O(x, y) = T(x, v(x, y))``.

At ``s = v`` the first pass samples exactly ``u``, so the result is the separable Lanczos
interpolation in coordinates sheared along the rows: identical to the 2-D kernel for shifts, and
within its precision for the small rotations of a night (the shear is ``tan`` of the rotation).
It needs ``|M[1, 1]|`` well away from 0 and a small shear: :func:`suits` says when, and
:mod:`astroflow.register` falls back to OpenCV's 2-D kernel otherwise (rotations of tens of
degrees between sessions). Weights are tabulated at 1/1024 px and normalised to
sum 1. Taps outside the source are mirrored (``BORDER_REFLECT``: ``...cba|abc...``). The
passes are C kernels (:mod:`astroflow.kernels`) that run in the calling thread without the GIL:
integration resamples several frames at once from its reading threads.
"""

from __future__ import annotations

import numpy as np

from .kernels import call, ptr

A = 4  # Lanczos order: 8 taps (the C kernels' TAPS)
STEPS = 1024  # table resolution, per pixel


def _table() -> np.ndarray:
    """Weights ``w[k, t]`` of tap ``t`` (offset ``t - 3``) at fractional position ``k / STEPS``."""
    frac = np.arange(STEPS + 1) / STEPS
    d = frac[:, None] - (np.arange(2 * A) - (A - 1))[None, :]  # distance of each tap
    w = np.sinc(d) * np.sinc(d / A)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


TABLE = _table()

MAX_SHEAR = 0.45  # |tan| of the rotation the two passes take (24°); beyond, the 2-D kernel


def suits(m: np.ndarray) -> bool:
    """Whether the two passes resample ``m`` well: a rotation within ``MAX_SHEAR`` of 0° or 180°
    (and no strong scale), as between the frames of a night or across a meridian flip."""
    (a, b, _), (d, e, _) = np.asarray(m, np.float64)
    return abs(e) > 0.5 and abs(a) > 0.5 and abs(d / e) <= MAX_SHEAR and abs(b / a) <= MAX_SHEAR


def lanczos_affine(src: np.ndarray, m: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Resample ``src`` into ``out`` (float32 ``(ny, nx)``): ``out[y, x] = S(M @ [x, y, 1])``.

    Pass 1 (``af_rows_pass``) works along each source row in runs of columns that share a first
    tap and a weight row (``u - x`` drifts by ~1e-5 a column for a night's rotations), each run a
    1-D convolution with fixed weights; pass 2 (``af_columns_pass``) along the columns.
    """
    (a, b, c), (d, e, f) = np.asarray(m, np.float64)
    src = np.ascontiguousarray(src, np.float32)
    rows, width = src.shape
    ny, nx = out.shape
    tmp = np.empty((rows, nx), np.float32)
    table = (ptr(TABLE, np.float32), STEPS)
    geometry = (a, b, c, d, e, f)
    call("af_rows_pass", ptr(src, np.float32), width, 0, rows, *geometry, ptr(tmp, np.float32), nx, *table)
    target = out if out.flags.c_contiguous else np.empty(out.shape, np.float32)
    call("af_columns_pass", ptr(tmp, np.float32), rows, d, e, f, ptr(target, np.float32), 0, ny, nx, *table)
    if target is not out:
        out[:] = target
    return out
