"""RCD, Ratio Corrected Demosaicing (L. Sanz Rodríguez, v2.3, 2017; Siril's default), written
for astroflow from the algorithm's description: the numba kernels behind
``debayer.method: rcd`` (:mod:`astroflow.debayer`), in a module of their own so the other
methods do not load numba.

Green is interpolated along the smoother of the vertical and horizontal directions (from the
energy of a 7-tap high-pass filter over three pixels along each), each neighbour scaled by the
ratio of a low-pass image so colour edges do not leak; red and blue then follow the colour
differences to green, along the diagonals at blue and red sites and the cardinal directions at
green ones. It works on positive data: the caller shifts the frame to start at 1 ADU.
"""

from __future__ import annotations

import numba
import numpy as np

_EPS, _EPSSQ = 1e-5, 1e-10


@numba.njit(cache=True, nogil=True)
def _hpf_squared(c, di, dj, buf):
    """``buf`` = the squared 7-tap high-pass filter of ``c`` along the direction (di, dj)."""
    h, w = c.shape
    for i in range(3, h - 3):
        for j in range(3, w - 3):
            v = (
                c[i - 3 * di, j - 3 * dj]
                - c[i - di, j - dj]
                - c[i + di, j + dj]
                + c[i + 3 * di, j + 3 * dj]
                - 3.0 * (c[i - 2 * di, j - 2 * dj] + c[i + 2 * di, j + 2 * dj])
                + 6.0 * c[i, j]
            )
            buf[i, j] = v * v


@numba.njit(cache=True, nogil=True)
def _directions(c, di, dj, ei, ej, buf, out):
    """``out`` = energy along (di, dj) / (that + energy along (ei, ej)), each the squared
    high-pass summed over three pixels along its own direction."""
    h, w = c.shape
    _hpf_squared(c, di, dj, buf)
    for i in range(4, h - 4):
        for j in range(4, w - 4):
            out[i, j] = max(_EPSSQ, buf[i - di, j - dj] + buf[i, j] + buf[i + di, j + dj])
    _hpf_squared(c, ei, ej, buf)
    for i in range(4, h - 4):
        for j in range(4, w - 4):
            other = max(_EPSSQ, buf[i - ei, j - ej] + buf[i, j] + buf[i + ei, j + ej])
            out[i, j] = out[i, j] / (out[i, j] + other)


@numba.njit(cache=True, nogil=True)
def _refined(d, i, j):
    """A direction weight, or its diagonal neighbours' mean when that is more decided."""
    centre = d[i, j]
    around = 0.25 * (d[i - 1, j - 1] + d[i - 1, j + 1] + d[i + 1, j - 1] + d[i + 1, j + 1])
    return around if abs(0.5 - centre) < abs(0.5 - around) else centre


@numba.njit(cache=True, nogil=True)
def rcd_kernel(c, colour, rgb):
    h, w = c.shape
    hi = c.max()
    vh = np.full((h, w), 0.5, np.float32)
    pq = np.full((h, w), 0.5, np.float32)
    lpf = np.zeros((h, w), np.float32)
    buf = np.zeros((h, w), np.float32)
    _directions(c, 1, 0, 0, 1, buf, vh)  # vertical against horizontal
    _directions(c, 1, 1, 1, -1, buf, pq)  # NW-SE against NE-SW (used at red and blue sites)
    for i in range(2, h - 2):
        for j in range(2, w - 2):
            lpf[i, j] = (
                c[i, j]
                + 0.5 * (c[i - 1, j] + c[i + 1, j] + c[i, j - 1] + c[i, j + 1])
                + 0.25 * (c[i - 1, j - 1] + c[i - 1, j + 1] + c[i + 1, j - 1] + c[i + 1, j + 1])
            )
    # green at red and blue sites
    for i in range(4, h - 4):
        for j in range(4, w - 4):
            if colour[i & 1, j & 1] == 1:
                continue
            n_g = (
                _EPS
                + abs(c[i - 1, j] - c[i + 1, j])
                + abs(c[i, j] - c[i - 2, j])
                + abs(c[i - 1, j] - c[i - 3, j])
                + abs(c[i - 2, j] - c[i - 4, j])
            )
            s_g = (
                _EPS
                + abs(c[i + 1, j] - c[i - 1, j])
                + abs(c[i, j] - c[i + 2, j])
                + abs(c[i + 1, j] - c[i + 3, j])
                + abs(c[i + 2, j] - c[i + 4, j])
            )
            w_g = (
                _EPS
                + abs(c[i, j - 1] - c[i, j + 1])
                + abs(c[i, j] - c[i, j - 2])
                + abs(c[i, j - 1] - c[i, j - 3])
                + abs(c[i, j - 2] - c[i, j - 4])
            )
            e_g = (
                _EPS
                + abs(c[i, j + 1] - c[i, j - 1])
                + abs(c[i, j] - c[i, j + 2])
                + abs(c[i, j + 1] - c[i, j + 3])
                + abs(c[i, j + 2] - c[i, j + 4])
            )
            l0 = lpf[i, j]
            n_e = c[i - 1, j] * 2.0 * l0 / (_EPS + l0 + lpf[i - 2, j])
            s_e = c[i + 1, j] * 2.0 * l0 / (_EPS + l0 + lpf[i + 2, j])
            w_e = c[i, j - 1] * 2.0 * l0 / (_EPS + l0 + lpf[i, j - 2])
            e_e = c[i, j + 1] * 2.0 * l0 / (_EPS + l0 + lpf[i, j + 2])
            v_e = (s_g * n_e + n_g * s_e) / (n_g + s_g)
            h_e = (w_g * e_e + e_g * w_e) / (e_g + w_g)
            d = _refined(vh, i, j)
            rgb[1, i, j] = min(max(d * h_e + (1.0 - d) * v_e, 0.0), hi)
    g = rgb[1]
    # red at blue sites and blue at red sites: diagonal colour differences
    for i in range(6, h - 6):
        for j in range(6, w - 6):
            site = colour[i & 1, j & 1]
            if site == 1:
                continue
            m = 2 - site
            x = rgb[m]
            nw_g = (
                _EPS
                + abs(x[i - 1, j - 1] - x[i + 1, j + 1])
                + abs(x[i - 1, j - 1] - x[i - 3, j - 3])
                + abs(g[i, j] - g[i - 2, j - 2])
            )
            ne_g = (
                _EPS
                + abs(x[i - 1, j + 1] - x[i + 1, j - 1])
                + abs(x[i - 1, j + 1] - x[i - 3, j + 3])
                + abs(g[i, j] - g[i - 2, j + 2])
            )
            sw_g = (
                _EPS
                + abs(x[i + 1, j - 1] - x[i - 1, j + 1])
                + abs(x[i + 1, j - 1] - x[i + 3, j - 3])
                + abs(g[i, j] - g[i + 2, j - 2])
            )
            se_g = (
                _EPS
                + abs(x[i + 1, j + 1] - x[i - 1, j - 1])
                + abs(x[i + 1, j + 1] - x[i + 3, j + 3])
                + abs(g[i, j] - g[i + 2, j + 2])
            )
            p_e = (
                nw_g * (x[i + 1, j + 1] - g[i + 1, j + 1]) + se_g * (x[i - 1, j - 1] - g[i - 1, j - 1])
            ) / (nw_g + se_g)
            q_e = (
                ne_g * (x[i + 1, j - 1] - g[i + 1, j - 1]) + sw_g * (x[i - 1, j + 1] - g[i - 1, j + 1])
            ) / (ne_g + sw_g)
            d = _refined(pq, i, j)
            x[i, j] = min(max(g[i, j] + (1.0 - d) * p_e + d * q_e, 0.0), hi)
    # red and blue at green sites: cardinal colour differences
    for i in range(6, h - 6):
        for j in range(6, w - 6):
            if colour[i & 1, j & 1] != 1:
                continue
            d = _refined(vh, i, j)
            for m in (0, 2):
                x = rgb[m]
                n_g = (
                    _EPS
                    + abs(g[i, j] - g[i - 2, j])
                    + abs(x[i - 1, j] - x[i + 1, j])
                    + abs(x[i - 1, j] - x[i - 3, j])
                )
                s_g = (
                    _EPS
                    + abs(g[i, j] - g[i + 2, j])
                    + abs(x[i + 1, j] - x[i - 1, j])
                    + abs(x[i + 1, j] - x[i + 3, j])
                )
                w_g = (
                    _EPS
                    + abs(g[i, j] - g[i, j - 2])
                    + abs(x[i, j - 1] - x[i, j + 1])
                    + abs(x[i, j - 1] - x[i, j - 3])
                )
                e_g = (
                    _EPS
                    + abs(g[i, j] - g[i, j + 2])
                    + abs(x[i, j + 1] - x[i, j - 1])
                    + abs(x[i, j + 1] - x[i, j + 3])
                )
                v_e = (n_g * (x[i + 1, j] - g[i + 1, j]) + s_g * (x[i - 1, j] - g[i - 1, j])) / (n_g + s_g)
                h_e = (e_g * (x[i, j - 1] - g[i, j - 1]) + w_g * (x[i, j + 1] - g[i, j + 1])) / (e_g + w_g)
                x[i, j] = min(max(g[i, j] + (1.0 - d) * v_e + d * h_e, 0.0), hi)
