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
kernels run in the calling thread without the GIL: integration resamples several frames at
once from its reading threads (a parallel kernel called from several threads needs a
thread-safe numba threading layer, which a machine may not have).
"""

from __future__ import annotations

import numba
import numpy as np

A = 4  # Lanczos order: 8 taps
STEPS = 1024  # table resolution, per pixel


def _table() -> np.ndarray:
    """Weights ``w[k, t]`` of tap ``t`` (offset ``t - 3``) at fractional position ``k / STEPS``."""
    frac = np.arange(STEPS + 1) / STEPS
    d = frac[:, None] - (np.arange(2 * A) - (A - 1))[None, :]  # distance of each tap
    w = np.sinc(d) * np.sinc(d / A)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


TABLE = _table()


@numba.njit(cache=True, inline="always")
def _reflect(i, n):
    if n == 1:
        return 0
    while i < 0 or i >= n:
        i = -i - 1 if i < 0 else 2 * n - 1 - i
    return i


@numba.njit(cache=True, nogil=True, fastmath=True)
def _rows_pass(src, a, b, c, d, e, f, nx_out, table):
    """Pass 1 over the source rows ``s``: ``T[s, x] = S(u_s(x), s)``.

    Along a row ``u_s(x) = alpha x + beta_s``, so ``g = u - x`` drifts by ``alpha - 1`` a
    column (~1e-5 for a night's rotations and scales, 0 for shifts): columns come in runs of one
    first tap ``floor(g)`` and one weight row (``frac(g)`` in 1/``STEPS`` px), and a run is a
    1-D convolution with fixed weights, contiguous in ``x``: SIMD code, 2x faster than a weight
    row per column. Where runs are short (a scale or a rotation of degrees, a meridian flip),
    each column is its own run.
    """
    rows, width = src.shape
    out = np.empty((rows, nx_out), np.float32)
    alpha = a - b * d / e
    drift = alpha - 1.0
    runs = abs(drift) * STEPS * RUN <= 1
    for s in range(rows):
        beta = b * (s - f) / e + c
        x = 0
        while x < nx_out:
            g = alpha * x + beta - x
            first = int(np.floor(g))
            k = int((g - first) * STEPS + 0.5)
            x1 = x + 1
            if runs:  # columns until g leaves the bin of this weight row (or this first tap)
                if drift > 0:
                    n = int((min(first + (k + 0.5) / STEPS, first + 1.0) - g) / drift) + 1
                elif drift < 0:
                    n = int((g - max(first + (k - 0.5) / STEPS, float(first))) / -drift) + 1
                else:
                    n = nx_out
                x1 = min(nx_out, x + max(n, 1))
            lo = x + first - (A - 1)  # first tap of the run's first column
            inner = min(x1, width - first - A)  # the run's columns with every tap in the row
            if lo >= 0 and inner - x >= RUN:
                x1 = inner
                seg = out[s, x:x1]  # slices: indices numba knows are in range, so it vectorises
                w = table[k, 0]
                taps = src[s, lo : lo + x1 - x]
                for i in range(x1 - x):
                    seg[i] = w * taps[i]
                for t in range(1, 2 * A):
                    w = table[k, t]
                    taps = src[s, lo + t : lo + t + x1 - x]
                    for i in range(x1 - x):
                        seg[i] += w * taps[i]
            else:
                for xx in range(x, x1):
                    i0 = lo + xx - x
                    acc = np.float32(0.0)
                    if i0 >= 0 and i0 + 2 * A <= width:  # inside: no mirrored taps
                        for t in range(2 * A):
                            acc += table[k, t] * src[s, i0 + t]
                    else:
                        for t in range(2 * A):
                            acc += table[k, t] * src[s, _reflect(i0 + t, width)]
                    out[s, xx] = acc
            x = x1
    return out


@numba.njit(cache=True, nogil=True, fastmath=True)
def _columns_pass(tmp, d, e, f, out, table):
    """Pass 2: ``out[y, x] = T(x, v(x, y))``."""
    ny_out, nx_out = out.shape
    rows = tmp.shape[0]
    for y in range(ny_out):
        for x in range(nx_out):
            v = d * x + e * y + f
            iv = int(np.floor(v))
            k = int((v - iv) * STEPS + 0.5)
            acc = np.float32(0.0)
            i0 = iv - (A - 1)
            if i0 >= 0 and i0 + 2 * A <= rows:
                for t in range(2 * A):
                    acc += table[k, t] * tmp[i0 + t, x]
            else:
                for t in range(2 * A):
                    acc += table[k, t] * tmp[_reflect(i0 + t, rows), x]
            out[y, x] = acc


RUN = 16  # columns of one weight row below which pass 1 goes column by column

MAX_SHEAR = 0.45  # |tan| of the rotation the two passes take (24°); beyond, the 2-D kernel


def suits(m: np.ndarray) -> bool:
    """Whether the two passes resample ``m`` well: a rotation within ``MAX_SHEAR`` of 0° or 180°
    (and no strong scale), as between the frames of a night or across a meridian flip."""
    (a, b, _), (d, e, _) = np.asarray(m, np.float64)
    return abs(e) > 0.5 and abs(a) > 0.5 and abs(d / e) <= MAX_SHEAR and abs(b / a) <= MAX_SHEAR


def lanczos_affine(src: np.ndarray, m: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Resample ``src`` into ``out`` (float32 ``(ny, nx)``): ``out[y, x] = S(M @ [x, y, 1])``."""
    (a, b, c), (d, e, f) = np.asarray(m, np.float64)
    tmp = _rows_pass(np.ascontiguousarray(src, np.float32), a, b, c, d, e, f, out.shape[1], TABLE)
    target = out if out.flags.c_contiguous else np.empty(out.shape, np.float32)
    _columns_pass(tmp, d, e, f, target, TABLE)
    if target is not out:
        out[:] = target
    return out


def compile_kernels() -> None:
    """Run the passes once so their machine code is in numba's cache (``astroflow compile``)."""
    x = np.ones((16, 16), np.float32)
    lanczos_affine(x, np.array([[1.0, 0.01, 0.5], [-0.01, 1.0, 0.5]]), np.empty((16, 16), np.float32))
