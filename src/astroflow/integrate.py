"""Pixel rejection and weighted averaging of registered frames (ImageIntegration / Siril `stack`).

Frames are combined band by band (rows ``y0:y1`` of every frame, read by
:class:`astroflow.io.FitsRows`), so peak memory is set by ``memory_mb`` and not by the number of
frames. Within a band every pixel is a
column of the ``(N, P)`` stack; ``NaN`` marks "no data" (outside a frame's footprint, bad pixel)
and is never counted.

Normalisation (per frame ``i``, per channel): ``x' = (x - loc_i) * scale_ref / scale_i + loc_ref``
("additive with scaling"), or ``x' = x * loc_ref / loc_i`` (multiplicative, for flats), or none.
Rejection then runs on the normalised values; the average uses weights ``w_i`` (noise weights
``1 / (noise_i * scale_ref / scale_i)**2`` by default).

Rejection methods and their two parameters (low, high), as in PixInsight / Siril:

* ``percentile``: reject ``median - x > low * |median|`` and ``x - median > high * |median|``;
* ``sigma``: iterative clipping around the median at ``low``/``high`` deviations, each value
  judged by the standard deviation of the others (leave-one-out, at least 1.4826 × MAD). That
  deviation is estimated from only ``m - 1`` values, so a value is rejected when it is as
  improbable as a ``low``/``high`` sigma Gaussian deviate given the estimate: Student's t with
  ``m - 2`` degrees of freedom (:func:`sigma_thresholds`; 3 sigma is 4.9 deviations among 8
  values, 3.5 among 20). Plain 3-sigma clipping of 8 frames rejected 0.9 % of pure noise high
  (0.13 % expected) and, on the stars, lowered their flux by a varying fraction;
* ``winsorized``: sigma clipping whose deviation comes from a winsorized (1.5 sigma) sample;
* ``linear``: the sorted column against its expected normal order statistics is a line of
  slope sigma through the median (a normal probability plot); values ``low``/``high`` sigma off
  that line are clipped, sigma from the quartiles. PixInsight and Siril fit the line against the
  rank instead, which reads the curved tails of honest Gaussian data as deviations: Siril's form
  (mean absolute deviation units) clips 0.9 % of pure noise at 5/4 and costs 3 % of stack SNR,
  PixInsight's (twice that unit) cannot reject a single satellite trail among 20 frames. This
  form costs 0.1 % and rejects any outlier that leaves fewer than a quarter of values on a side;
* ``esd``: generalized extreme Studentized deviate test (``low`` = outlier fraction,
  ``high`` = significance);
* ``none``.

Why robust deviations: one value among ``n`` can be at most ``(n - 1) / sqrt(n)`` *standard*
deviations from the mean (Samuelson), so clipping at 3 plain standard deviations cannot reject a
satellite trail below 11 frames; the leave-one-out deviation (``sigma``), the winsorized
deviation and ESD do not have this blind spot.

Rejection runs column by column in compiled kernels (C, :mod:`astroflow.kernels`) over each pixel's valid values:
numpy's whole-stack formulation needed ~10 temporaries of the band and was 3-10× slower.

``auto`` picks by frame count: sigma below 20 frames, linear fit below 25, ESD from 25 (``auto2``,
AutoIntegrate's, takes percentile below 8 frames; see :func:`auto_rejection`).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from itertools import repeat
from statistics import NormalDist

import numpy as np

from .kernels import blocks, get_threads, ptr

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


def frame_weights(noise: np.ndarray, scale: np.ndarray, method: str) -> np.ndarray:
    """Weight of each frame, the largest 1. ``noise`` and ``scale`` are (frames, channels) in
    ADU. ``"noise"``: inverse variance on the normalised scale, w = 1 / mean_c (noise / scale)²
    (the normalisation multiplies frame i by s_ref / s_i, up to a constant); ``"none"``: equal."""
    w = inverse_variance(noise, scale) if method == "noise" else np.ones(len(noise))
    return w / w.max()


def inverse_variance(noise: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The noise weight before :func:`frame_weights` scales the largest to 1:
    ``1 / mean_c (noise / scale)²`` per frame (rows of ``(frames, channels)`` arrays)."""
    return 1.0 / np.mean((np.asarray(noise, float) / np.asarray(scale, float)) ** 2, axis=1)


def auto_rejection(n_frames: int, mode: str = "auto") -> str:
    """Rejection by frame count: ``auto2`` and ``auto1`` are AutoIntegrate's (reference/peers.md
    §1.3); ``auto`` is Auto2 with the leave-one-out ``sigma`` below 8 frames too, where Auto2
    takes ``percentile``: clipping at fractions of ``|median|`` rejects honest values where a
    calibrated sky is near 0 ADU, and frames of different sessions, once normalised, differ by
    more than 10 % on the stars (a 6-frame smart-telescope stack was shallower than its best
    frame)."""
    if n_frames < 8 and mode != "auto":
        return "percentile"
    if n_frames < 20 or mode == "auto1":
        return "sigma"
    if n_frames < 25:
        return "linear"
    return "esd"


def reject(stack: np.ndarray, method: str, low: float, high: float, max_iter: int = 10):
    """Boolean masks ``(low_rejected, high_rejected)`` for a ``(N, P)`` stack with NaN gaps."""
    state = reject_state(np.asarray(stack, dtype=np.float32), method, low, high, max_iter)
    return state == 1, state == 2


def reject_state(x: np.ndarray, method: str, low: float, high: float, max_iter: int = 10) -> np.ndarray:
    """Per-value rejection state of a float32 ``(N, P)`` stack: 0 kept, 1 low, 2 high (uint8)."""
    n = x.shape[0]
    if method == "none" or n < 3:
        return np.zeros(x.shape, np.uint8)
    if method not in _METHOD_CODE:
        raise ValueError(f"unknown rejection method {method!r}; choose one of {REJECTIONS}")
    r_max = max(1, int(n * low)) if method == "esd" else 1
    if method == "esd":
        table = _esd_lambda(n, r_max, high)
    elif method == "linear":
        table = _normal_scores(n)
    elif method == "sigma":
        table = sigma_thresholds(n, float(low), float(high))
    else:
        table = np.zeros((n + 1, 2))
    pairs = sorting_network(n)
    return _reject_columns(x, _METHOD_CODE[method], float(low), float(high), max_iter, table, r_max, pairs)


def _normal_scores(n_max: int) -> np.ndarray:
    """Expected standard-normal order statistics (Blom): ``z[n, r]`` for rank r of n values."""
    inv = NormalDist().inv_cdf  # not scipy.special: 0.2 s of a job's start-up
    z = np.zeros((n_max + 1, n_max + 1))
    for n in range(1, n_max + 1):
        z[n, :n] = [inv((r + 0.625) / (n + 0.25)) for r in range(n)]
    return z


def _student_t_quantile(p: float, nu: int) -> float:
    """The ``p`` quantile (p > 0.5) of Student's t with ``nu`` degrees of freedom: below 20 by
    bisection of the closed-form CDF (Abramowitz & Stegun 26.7.3-4, in ``theta = atan(t /
    sqrt(nu))``), above by the Cornish-Fisher expansion (within 0.1 % there up to 5 sigma).
    Not scipy.special: 0.2 s of a job's start-up for a handful of numbers."""
    if nu >= 20:
        z = NormalDist().inv_cdf(p)
        terms = (
            (z**3 + z) / 4,
            (5 * z**5 + 16 * z**3 + 3 * z) / 96,
            (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
        )
        return z + sum(g / nu ** (i + 1) for i, g in enumerate(terms))

    def central(theta):  # P(|T| < sqrt(nu) tan theta)
        c, s = math.cos(theta), math.sin(theta)
        if nu % 2:  # 26.7.3
            term, total = c, 0.0
            for k in range(1, (nu - 1) // 2 + 1):
                total += term
                term *= c * c * 2 * k / (2 * k + 1)
            return 2 / math.pi * (theta + s * total)
        term, total = 1.0, 0.0  # 26.7.4
        for k in range(1, nu // 2 + 1):
            total += term
            term *= c * c * (2 * k - 1) / (2 * k)
        return s * total

    lo, hi = 0.0, math.pi / 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if central(mid) < 2 * p - 1 else (lo, mid)
    return math.sqrt(nu) * math.tan((lo + hi) / 2)


@lru_cache
def sigma_thresholds(n: int, low: float, high: float) -> np.ndarray:
    """``table[m] = (low', high')``: the leave-one-out deviations ``sigma`` rejection clips at
    among ``m`` values, as improbable as ``low``/``high`` Gaussian sigma (Student's t, ``m - 2``
    degrees of freedom; see the module doc)."""
    table = np.full((n + 1, 2), np.inf)
    normal = NormalDist()
    for m in range(4, n + 1):  # below 4 values a column is never clipped (the kernel's MIN_KEEP)
        table[m] = [_student_t_quantile(normal.cdf(k), m - 2) for k in (low, high)]
    return table


def _esd_lambda(n_max: int, r_max: int, alpha: float) -> np.ndarray:
    """Critical values lambda[n, i] of the generalized ESD test for column size n, step i (1-based)."""
    from scipy.special import stdtrit  # only ESD needs it (0.2 s to import)

    n, i = np.meshgrid(np.arange(n_max + 1), np.arange(r_max + 1), indexing="ij")
    ni = n - i + 1
    valid = (n >= 3) & (i >= 1) & (ni >= 3)
    ni = np.where(valid, ni, 3)
    t = stdtrit(ni - 2, 1 - alpha / (2 * ni))
    return np.where(valid, (ni - 1) * t / np.sqrt((ni - 2 + t * t) * ni), np.inf)


# ---------------------------------------------------------------------------------------------
# Column kernels (C, astroflow._kernels): one pass per pixel column over its valid values. Columns
# are processed in blocks that share scratch buffers (an allocation per column cost more than the
# statistics), and are independent, so the blocks give the same result on any number of threads.

_METHOD_CODE = {"sigma": 0, "winsorized": 1, "linear": 2, "esd": 3, "percentile": 4}
_BLOCK = 2048  # columns per thread's task


@lru_cache
def sorting_network(n: int) -> np.ndarray:
    """Comparator pairs ``(i, j)``, ``i < j``, that sort any ``n`` values when each pair is
    compared and swapped in turn: Batcher's merge exchange (Knuth, TAOCP 5.2.2, Algorithm M),
    ~n log²n / 4 comparators (97 for 20 values)."""
    pairs = []
    t = max(n - 1, 1).bit_length()
    p = 1 << (t - 1)
    while p > 0:
        q, r, d = 1 << (t - 1), 0, p
        while True:
            pairs += [(i, i + d) for i in range(n - d) if i & p == r]
            if q == p:
                break
            d, q, r = q - p, q >> 1, p
        p >>= 1
    return np.array(pairs, np.int64).reshape(-1, 2)


def _reject_columns(x, code, low, high, max_iter, table, r_max, pairs):
    """Rejection state of every value of a float32 ``(N, P)`` band: 16 columns at a time are
    sorted side by side by the comparators ``pairs`` of a sorting network
    (:func:`sorting_network`; the same compare-and-swap on every lane is SIMD code, 2-4x faster
    than sorting the columns one by one), then each is judged by its method."""
    x = np.ascontiguousarray(x, np.float32)  # a view of a band's columns is copied
    n, p = x.shape
    out = np.zeros((n, p), np.uint8)
    table = np.ascontiguousarray(table, np.float64)
    pairs = np.ascontiguousarray(pairs, np.int64)
    args = (ptr(x, np.float32), n, p)
    rest = (code, low, high, max_iter, ptr(table, np.float64), table.shape[1], r_max)
    rest += (ptr(pairs, np.int64), len(pairs), ptr(out, np.uint8))
    blocks("af_reject_columns", p, _BLOCK, lambda a, b: (*args, a, b, *rest))
    return out


def _normalise_inplace(x, gain, offset):
    """``x[i] = x[i] * gain[i] + offset[i]`` for a ``(N, P)`` float32 band."""
    n, p = x.shape
    g, o = np.ascontiguousarray(gain, np.float64), np.ascontiguousarray(offset, np.float64)
    args = (ptr(x, np.float32), n, p)
    blocks("af_normalise", p, _BLOCK, lambda a, b: (*args, a, b, ptr(g, np.float64), ptr(o, np.float64)))


def _grow_high(x, state, radius, k, seed):
    """Extend high rejections to their faint surroundings (PixInsight's "clip high growth"), in
    place on the ``state`` of a ``(N, rows, nx)`` band.

    A satellite trail or cosmic-ray hit has wings below any per-pixel threshold: each kept
    wing pixel adds a fraction of its excess to the stack, a faint line or dot along the
    rejected core, and resampling rings around it (Lanczos lobes on both sides). Pixels of the
    same frame within ``radius`` px of a high rejection are rejected too when they deviate from
    their column's median by more than ``k`` × 1.4826 MAD either way (high rejections left out
    of both), and that rejection is more than ``seed`` such deviations above it: a noise spike
    that barely passed the high clip seeds nothing (resampled noise is correlated between
    neighbours, so its neighbours are high too: growing from it clips the noise's upper tail,
    deepening nothing and biasing faint stars low).
    """
    n, ny, nx = x.shape
    xs, st = ptr(x, np.float32), ptr(state, np.uint8)
    # high rejections are few: find the pixels with one in their column, then the pixels with
    # one of those within radius, and look at the frames of only those columns
    high = np.zeros((ny, nx), np.uint8)
    hp = ptr(high, np.uint8)
    rows = max(1, -(-ny // (4 * get_threads())))  # rows per task
    blocks("af_grow_mark", ny, rows, lambda a, b: (st, n, ny, nx, a, b, hp))
    blocks("af_grow_judge", ny, rows, lambda a, b: (xs, st, hp, n, ny, nx, a, b, radius, k, seed))
    blocks("af_grow_settle", n, 1, lambda a, b: (st, ny, nx, a, b))


def _combine_columns(x, state, start, weights, median, value, low_frac, high_frac, valid):
    """Weighted average (or median) of the kept values of columns ``start:start + len(value)``
    of a ``(N, P)`` band (the band's inner rows; halo rows are only read for the growth).

    Writes per column: ``value`` (NaN-free; 0 only where no frame has data), the fraction of
    valid values rejected low / high, and the number of valid values. A column whose every
    value was rejected (percentile clipping around a median near 0, a trail over 2 of 3 frames)
    takes the median of all its values: the rejection maps still show it fully rejected, and the
    image has no hole.
    """
    n, p = x.shape
    w = np.ascontiguousarray(weights, np.float64)
    args = (ptr(x, np.float32), ptr(state, np.uint8), n, p, start)
    outs = (
        ptr(value, np.float32),
        ptr(low_frac, np.float32),
        ptr(high_frac, np.float32),
        ptr(valid, np.int32),
    )
    blocks(
        "af_combine_columns",
        value.size,
        _BLOCK,
        lambda a, b: (*args, a, b, ptr(w, np.float64), bool(median), *outs),
    )


@dataclass
class FrameNorm:
    """Normalisation and weight of one frame; ``loc``/``scale`` are per channel arrays (ADU)."""

    loc: np.ndarray
    scale: np.ndarray
    weight: float


def norm_coefficients(norms: list[FrameNorm], ref: FrameNorm, mode: str, channel: int):
    """Per-frame ``(gain, offset)`` with ``x' = x * gain + offset`` (see the module doc)."""
    n = len(norms)
    gain, offset = np.ones(n), np.zeros(n)
    for i, nm in enumerate(norms):
        if mode == "additive_scaling":
            gain[i] = ref.scale[channel] / nm.scale[channel]
            offset[i] = ref.loc[channel] - nm.loc[channel] * gain[i]
        elif mode == "additive":
            offset[i] = ref.loc[channel] - nm.loc[channel]
        elif mode == "multiplicative":
            gain[i] = ref.loc[channel] / nm.loc[channel]
        elif mode != "none":
            raise ValueError(f"unknown normalisation {mode!r}")
    return gain, offset


READERS = 4  # threads reading (and resampling) the frames of a band at most


def band_rows(n_frames: int, width: int, memory_mb: float) -> int:
    """Rows per band so the working set fits ``memory_mb``: per value a float32, its rejection
    state and growth flag (6 bytes, 7 with the read buffer); per pixel the band's image,
    rejection maps, coverage and count (20 bytes) and, for each of up to :data:`READERS`
    threads, the planes a registered frame is resampled through (source rows, clamp bound and
    its input: 24 bytes). It does not depend on the job's threads: the bands, and so every
    resampled pixel, are the same whatever ``--cores``."""
    per_row = width * (n_frames * 7 + 20 + 24 * READERS)
    return max(1, min(8192, int(memory_mb * 2**20 / per_row)))


def integrate_bands(
    sources: list,
    norms: list[FrameNorm],
    rejection: str,
    low: float,
    high: float,
    normalisation: str = "additive_scaling",
    reference: int = 0,
    memory_mb: float = 512,
    combine: str = "average",
    grow: int = 0,
    grow_sigma: float = 2.0,
    grow_seed: float = 0.0,
):
    """Integrate frames band by band; yields ``(y0, y1, image, rej_low, rej_high, coverage)``.

    ``sources`` are array-likes of one shape, ``(ny, nx)`` or ``(C, ny, nx)``, sliced as
    ``src[y0:y1]`` / ``src[c, y0:y1]`` (:class:`astroflow.io.FitsRows` reads only those rows,
    which is what bounds memory by ``memory_mb`` and not by the number of frames). Each band's
    image and rejection maps are ``(C, rows, nx)`` float32, coverage ``(rows, nx)``.

    ``grow`` > 0 extends every high rejection more than ``grow_seed`` robust deviations above
    its neighbours' column medians to the pixels within ``grow`` px of it in the same frame that
    deviate by more than ``grow_sigma`` from theirs (see :func:`_grow_high`). Bands are read with ``grow`` extra rows on each side for it.
    """
    shape = sources[0].shape
    mono = len(shape) == 2
    channels = 1 if mono else shape[0]
    ny, nx = shape[-2:]
    n = len(sources)
    weights = np.array([nm.weight for nm in norms], np.float64)
    coeffs = [norm_coefficients(norms, norms[reference], normalisation, c) for c in range(channels)]
    rows = band_rows(n, nx, memory_mb)
    # one buffer for every band: a fresh 100+ MB band each time is page-faulted and zeroed anew
    buffer = np.empty(n * (min(ny, rows + 2 * grow)) * nx, np.float32)
    with ThreadPoolExecutor(min(get_threads(), READERS)) as pool:
        for y0 in range(0, ny, rows):
            y1 = min(ny, y0 + rows)
            ya, yb = max(0, y0 - grow), min(ny, y1 + grow)  # halo rows for the growth
            image = np.empty((channels, y1 - y0, nx), np.float32)
            rej_lo, rej_hi = np.empty_like(image), np.empty_like(image)
            coverage = np.empty((y1 - y0, nx), np.float32)
            for c in range(channels):
                band = buffer[: n * (yb - ya) * nx].reshape(n, (yb - ya) * nx)

                # reads and resampling release the GIL: the job's threads share the frames
                list(pool.map(_read_band, sources, band, repeat(ya), repeat(yb), repeat(c)))
                _normalise_inplace(band, *coeffs[c])
                state = reject_state(band, rejection, low, high)
                if grow > 0 and state.max() == 2:  # any high rejection (max: no 40 MB temporary)
                    _grow_high(
                        band.reshape(n, yb - ya, nx),
                        state.reshape(n, yb - ya, nx),
                        grow,
                        grow_sigma,
                        grow_seed,
                    )
                valid = np.empty((y1 - y0) * nx, np.int32)
                _combine_columns(
                    band,
                    state,
                    (y0 - ya) * nx,
                    weights,
                    combine == "median",
                    image[c].reshape(-1),
                    rej_lo[c].reshape(-1),
                    rej_hi[c].reshape(-1),
                    valid,
                )
                if c == 0:
                    coverage[:] = valid.reshape(y1 - y0, nx)
                del state, valid  # before the next band's: one band in memory
            yield y0, y1, image, rej_lo, rej_hi, coverage
            del image, rej_lo, rej_hi, coverage


def _read_band(src, out: np.ndarray, ya: int, yb: int, channel: int) -> None:
    """Rows ``ya:yb`` of ``channel`` of one frame into its row ``out`` of the band."""
    if hasattr(src, "read_into"):  # FitsRows, WarpedRows: straight into the band
        src.read_into(out, ya, channel)
    else:
        out[:] = (src[ya:yb] if len(src.shape) == 2 else src[channel, ya:yb]).reshape(-1)


def integrate(sources: list, norms: list[FrameNorm], rejection: str, low: float, high: float, **options):
    """Integrate frames into memory (options as :func:`integrate_bands`).

    Returns ``(image, rej_low, rej_high, coverage)``: the float32 result in the reference's
    normalisation, the fraction of frames rejected low/high per pixel, and the number of frames
    with data per pixel. Pixels with no data at all are 0.
    """
    shape = sources[0].shape
    channels = 1 if len(shape) == 2 else shape[0]
    ny, nx = shape[-2:]
    out = np.empty((channels, ny, nx), np.float32)  # every band is filled
    rej_lo, rej_hi = np.empty_like(out), np.empty_like(out)
    coverage = np.empty((ny, nx), np.float32)
    for y0, y1, img, lo, hi, cov in integrate_bands(sources, norms, rejection, low, high, **options):
        out[:, y0:y1], rej_lo[:, y0:y1], rej_hi[:, y0:y1], coverage[y0:y1] = img, lo, hi, cov
    if len(shape) == 2:
        return out[0], rej_lo[0], rej_hi[0], coverage
    return out, rej_lo, rej_hi, coverage
