"""Pixel rejection and weighted averaging of registered frames (ImageIntegration / Siril `stack`).

Frames are combined band by band (rows ``y0:y1`` of every frame), read from memory maps, so peak
memory is set by ``memory_mb`` and not by the number of frames. Within a band every pixel is a
column of the ``(N, P)`` stack; ``NaN`` marks "no data" (outside a frame's footprint, bad pixel)
and is never counted.

Normalisation (per frame ``i``, per channel): ``x' = (x - loc_i) * scale_ref / scale_i + loc_ref``
("additive with scaling"), or ``x' = x * loc_ref / loc_i`` (multiplicative, for flats), or none.
Rejection then runs on the normalised values; the average uses weights ``w_i`` (noise weights
``1 / (noise_i * scale_ref / scale_i)**2`` by default).

Rejection methods and their two parameters (low, high), as in PixInsight / Siril:

* ``percentile``: reject ``median - x > low * |median|`` and ``x - median > high * |median|``;
* ``sigma``: iterative clipping around the median at ``low``/``high`` deviations, each value
  judged by the standard deviation of the others (leave-one-out, at least 1.4826 × MAD);
* ``winsorized``: sigma clipping whose deviation comes from a winsorized (1.5 sigma) sample;
* ``linear``: fit a line to the sorted column, clip at ``low``/``high`` mean absolute deviations;
* ``esd``: generalized extreme Studentized deviate test (``low`` = outlier fraction,
  ``high`` = significance);
* ``none``.

Why robust deviations: one value among ``n`` can be at most ``(n - 1) / sqrt(n)`` *standard*
deviations from the mean (Samuelson), so clipping at 3 plain standard deviations cannot reject a
satellite trail below 11 frames; the leave-one-out deviation (``sigma``), the winsorized
deviation and ESD do not have this blind spot.

``auto`` picks by frame count like AutoIntegrate's Auto2: percentile below 8 frames, sigma below
20, linear fit below 25, ESD from 25.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import bottleneck as bn
import numpy as np
from scipy import stats

REJECTIONS = ("none", "percentile", "sigma", "winsorized", "linear", "esd")
DEFAULT_PARAMS = {
    "percentile": (0.2, 0.1),
    "sigma": (4.0, 3.0),
    "winsorized": (4.0, 3.0),
    "linear": (5.0, 4.0),
    "esd": (0.3, 0.05),
    "none": (0.0, 0.0),
}
MIN_KEEP = 3  # iterative methods never reject a pixel's column below this many values


def auto_rejection(n_frames: int, mode: str = "auto2") -> str:
    """AutoIntegrate's rejection choice by frame count (reference/peers.md §1.3)."""
    if n_frames < 8:
        return "percentile"
    if n_frames < 20 or mode == "auto1":
        return "sigma"
    if n_frames < 25:
        return "linear"
    return "esd"


def _valid_count(x):
    return np.isfinite(x).sum(axis=0)


def reject(stack: np.ndarray, method: str, low: float, high: float, max_iter: int = 10):
    """Boolean masks ``(low_rejected, high_rejected)`` for a ``(N, P)`` stack with NaN gaps."""
    x = np.array(stack, dtype=np.float32, copy=True)
    lo_mask = np.zeros(x.shape, bool)
    hi_mask = np.zeros(x.shape, bool)
    if method == "none" or x.shape[0] < 3:
        return lo_mask, hi_mask
    if method == "percentile":
        med = bn.nanmedian(x, axis=0)
        with np.errstate(invalid="ignore"):
            lo_mask = (med - x) > low * np.abs(med)
            hi_mask = (x - med) > high * np.abs(med)
        return lo_mask, hi_mask
    if method == "linear":
        return _linear_fit(x, low, high, max_iter)
    if method == "esd":
        return _esd(x, low, high)
    for _ in range(max_iter):
        med = bn.nanmedian(x, axis=0)
        if method == "winsorized":
            sd = _winsorized_sigma(x, med, bn.nanstd(x, axis=0, ddof=0))
        elif method == "sigma":
            # each value is tested against the deviation of the *other* values (an outlier does
            # not inflate its own test, so one trail among 8 frames is rejected: with the plain
            # std it never can be), but never below the MAD's (few-value MADs alone clip good data)
            sd = np.maximum(1.4826 * bn.nanmedian(np.abs(x - med), axis=0), _loo_std(x, med))
        else:
            raise ValueError(f"unknown rejection method {method!r}; choose one of {REJECTIONS}")
        with np.errstate(invalid="ignore"):
            lo = x < med - low * sd
            hi = x > med + high * sd
        keep_ok = _valid_count(x) > MIN_KEEP
        lo &= keep_ok
        hi &= keep_ok
        if not (lo.any() or hi.any()):
            break
        lo_mask |= lo
        hi_mask |= hi
        x[lo | hi] = np.nan
    return lo_mask, hi_mask


def _loo_std(x, med):
    """Per value, the standard deviation of its column without it (NaN-aware), about the median."""
    d2 = (x - med) ** 2
    n = np.isfinite(x).sum(axis=0)
    total = bn.nansum(d2, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(np.maximum(total - np.nan_to_num(d2), 0) / np.maximum(n - 2, 1))


def _winsorized_sigma(x, med, sd, tol=5e-4, max_iter=10):
    """Huber-style winsorized standard deviation (Siril's constant 1.134 restores Gaussian sigma)."""
    for _ in range(max_iter):
        w = np.clip(x, med - 1.5 * sd, med + 1.5 * sd)
        new = 1.134 * bn.nanstd(w, axis=0, ddof=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            done = np.nanmax(np.abs(new - sd) / np.where(sd > 0, sd, 1)) < tol
        sd = new
        if done:
            break
    return sd


def _linear_fit(x, low, high, max_iter):
    lo_mask = np.zeros(x.shape, bool)
    hi_mask = np.zeros(x.shape, bool)
    n_frames = x.shape[0]
    for _ in range(max_iter):
        order = np.argsort(x, axis=0)  # NaN sort last
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(n_frames)[:, None], axis=0)
        n = _valid_count(x)
        valid = np.isfinite(x)
        t = np.where(valid, rank, 0).astype(np.float64)
        y = np.where(valid, x, 0).astype(np.float64)
        st, sy = t.sum(0), y.sum(0)
        stt, sty = (t * t).sum(0), (t * y).sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            den = n * stt - st * st
            a = np.where(den > 0, (n * sty - st * sy) / den, 0)
            b = (sy - a * st) / np.maximum(n, 1)
            resid = np.where(valid, y - (a * t + b), 0)
            sigma = np.abs(resid).sum(0) / np.maximum(n, 1)
            lo = valid & (resid < -low * sigma)
            hi = valid & (resid > high * sigma)
        keep_ok = n > MIN_KEEP
        lo &= keep_ok
        hi &= keep_ok
        if not (lo.any() or hi.any()):
            break
        lo_mask |= lo
        hi_mask |= hi
        x[lo | hi] = np.nan
    return lo_mask, hi_mask


def _esd_lambda(n_max: int, r_max: int, alpha: float) -> np.ndarray:
    """Critical values lambda[n, i] of the generalized ESD test for column size n, step i (1-based)."""
    lam = np.full((n_max + 1, r_max + 1), np.inf)
    for n in range(3, n_max + 1):
        for i in range(1, r_max + 1):
            ni = n - i + 1
            if ni < 3:
                break
            p = 1 - alpha / (2 * ni)
            t = stats.t.ppf(p, ni - 2)
            lam[n, i] = (ni - 1) * t / math.sqrt((ni - 2 + t * t) * ni)
    return lam


def _esd(x, fraction, alpha):
    n_frames, npix = x.shape
    r_max = max(1, int(n_frames * fraction))
    lam = _esd_lambda(n_frames, r_max, alpha)
    n0 = _valid_count(x)
    removed = np.full((r_max, npix), -1, dtype=np.int64)
    below = np.zeros((r_max, npix), bool)
    significant = np.zeros((r_max, npix), bool)
    cols = np.arange(npix)
    for i in range(1, r_max + 1):
        mean = bn.nanmean(x, axis=0)
        sd = bn.nanstd(x, axis=0, ddof=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            dev = np.abs(x - mean) / sd
        dev = np.where(np.isfinite(dev), dev, -1)
        j = np.argmax(dev, axis=0)
        r = dev[j, cols]
        ok = (r >= 0) & (n0 - i + 1 >= MIN_KEEP)
        significant[i - 1] = ok & (r > lam[n0, i])
        removed[i - 1] = np.where(ok, j, -1)
        below[i - 1] = x[j, cols] < mean
        x[j[ok], cols[ok]] = np.nan
    # the number of outliers is the largest step whose statistic exceeded its critical value
    steps = np.arange(1, r_max + 1)[:, None]
    count = np.max(np.where(significant, steps, 0), axis=0)
    lo_mask = np.zeros((n_frames, npix), bool)
    hi_mask = np.zeros((n_frames, npix), bool)
    for i in range(r_max):
        sel = (i < count) & (removed[i] >= 0)
        lo_sel = sel & below[i]
        hi_sel = sel & ~below[i]
        lo_mask[removed[i][lo_sel], cols[lo_sel]] = True
        hi_mask[removed[i][hi_sel], cols[hi_sel]] = True
    return lo_mask, hi_mask


@dataclass
class FrameNorm:
    """Normalisation and weight of one frame; ``loc``/``scale`` are per channel arrays (ADU)."""

    loc: np.ndarray
    scale: np.ndarray
    weight: float


def _normalise(band: np.ndarray, norms: list[FrameNorm], ref: FrameNorm, mode: str, channel: int):
    for i, nm in enumerate(norms):
        if mode == "additive_scaling":
            k = ref.scale[channel] / nm.scale[channel]
            band[i] = (band[i] - nm.loc[channel]) * k + ref.loc[channel]
        elif mode == "additive":
            band[i] += ref.loc[channel] - nm.loc[channel]
        elif mode == "multiplicative":
            band[i] *= ref.loc[channel] / nm.loc[channel]
        elif mode != "none":
            raise ValueError(f"unknown normalisation {mode!r}")
    return band


def band_rows(n_frames: int, width: int, memory_mb: float) -> int:
    """Rows per band so the working set (about 10 float32 copies of the band) fits memory_mb."""
    per_row = n_frames * width * 4 * 10
    return max(1, min(4096, int(memory_mb * 2**20 / per_row)))


def integrate(
    sources: list,
    norms: list[FrameNorm],
    rejection: str,
    low: float,
    high: float,
    normalisation: str = "additive_scaling",
    reference: int = 0,
    memory_mb: float = 1024,
    combine: str = "average",
):
    """Integrate frames given as array-likes of one shape (memory maps are read band by band).

    Returns ``(image, rej_low, rej_high, coverage)``: the float32 result in the reference's
    normalisation, the fraction of frames rejected low/high per pixel, and the number of frames
    with data per pixel. Pixels with no data at all are 0.
    """
    shape = sources[0].shape
    mono = len(shape) == 2
    channels = 1 if mono else shape[0]
    ny, nx = shape[-2:]
    n = len(sources)
    out = np.zeros((channels, ny, nx), np.float32)
    rej_lo = np.zeros((channels, ny, nx), np.float32)
    rej_hi = np.zeros((channels, ny, nx), np.float32)
    coverage = np.zeros((ny, nx), np.float32)
    weights = np.array([nm.weight for nm in norms], np.float64)
    rows = band_rows(n, nx, memory_mb)
    for y0 in range(0, ny, rows):
        y1 = min(ny, y0 + rows)
        for c in range(channels):
            band = np.empty((n, y1 - y0, nx), np.float32)
            for i, src in enumerate(sources):
                band[i] = src[y0:y1] if mono else src[c, y0:y1]
            band = _normalise(band, norms, norms[reference], normalisation, c)
            flat = band.reshape(n, -1)
            lo, hi = reject(flat, rejection, low, high)
            keep = np.isfinite(flat) & ~lo & ~hi
            valid = np.isfinite(flat).sum(0)
            if combine == "median":
                res = bn.nanmedian(np.where(keep, flat, np.nan), axis=0)
            else:
                w = np.where(keep, weights[:, None], 0.0)
                num = (w * np.where(keep, flat, 0.0)).sum(0)
                den = w.sum(0)
                with np.errstate(invalid="ignore", divide="ignore"):
                    res = np.where(den > 0, num / den, np.nan)
            res = np.nan_to_num(res, nan=0.0)
            shape2 = (y1 - y0, nx)
            out[c, y0:y1] = res.reshape(shape2)
            with np.errstate(invalid="ignore", divide="ignore"):
                rej_lo[c, y0:y1] = (lo.sum(0) / np.maximum(valid, 1)).reshape(shape2)
                rej_hi[c, y0:y1] = (hi.sum(0) / np.maximum(valid, 1)).reshape(shape2)
            if c == 0:
                coverage[y0:y1] = valid.reshape(shape2)
    if mono:
        return out[0], rej_lo[0], rej_hi[0], coverage
    return out, rej_lo, rej_hi, coverage
