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
  judged by the standard deviation of the others (leave-one-out, at least 1.4826 × MAD);
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

Rejection runs column by column in compiled (numba) kernels over each pixel's valid values:
numpy's whole-stack formulation needed ~10 temporaries of the band and was 3-10× slower.

``auto`` picks by frame count: sigma below 20 frames, linear fit below 25, ESD from 25 (``auto2``,
AutoIntegrate's, takes percentile below 8 frames; see :func:`auto_rejection`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from itertools import repeat

import numba
import numpy as np

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
    else:
        table = np.zeros((n + 1, 2))
    pairs = sorting_network(n)
    return _reject_columns(x, _METHOD_CODE[method], float(low), float(high), max_iter, table, r_max, pairs)


def _normal_scores(n_max: int) -> np.ndarray:
    """Expected standard-normal order statistics (Blom): ``z[n, r]`` for rank r of n values."""
    from statistics import NormalDist  # not scipy.special: 0.2 s of a job's start-up

    inv = NormalDist().inv_cdf
    z = np.zeros((n_max + 1, n_max + 1))
    for n in range(1, n_max + 1):
        z[n, :n] = [inv((r + 0.625) / (n + 0.25)) for r in range(n)]
    return z


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
# Column kernels (numba): one pass per pixel column over its valid values. Columns are processed
# in blocks that share scratch buffers (an allocation per column cost more than the statistics),
# and are independent, so the parallel loops give the same result for any thread count.

_METHOD_CODE = {"sigma": 0, "winsorized": 1, "linear": 2, "esd": 3, "percentile": 4}
_BLOCK = 2048  # columns per parallel task
_LANES = 16  # columns sorted side by side: one AVX-512 register of float32 (two AVX2 ones)


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


@numba.njit(cache=True, nogil=True)
def _sort(s, m):
    """Sort ``s[:m]`` in place: insertion sort for the usual few values, numpy's for many."""
    if m > 48:
        s[:m].sort()
        return
    for i in range(1, m):
        v = s[i]
        j = i - 1
        while j >= 0 and s[j] > v:
            s[j + 1] = s[j]
            j -= 1
        s[j + 1] = v


@numba.njit(cache=True, nogil=True)
def _median(s, m):
    """Median of ``s[:m]``, reordering them: insertion sort for a few values, Hoare's selection
    (O(m) where a sort is O(m log m)) for many."""
    if m <= 48:
        _sort(s, m)
        return _median_sorted(s, m)
    k = m // 2
    lo, hi = 0, m - 1
    while lo < hi:  # s[k] becomes the k-th smallest, smaller values before it, larger after
        a, b, c = s[lo], s[(lo + hi) // 2], s[hi]
        pivot = max(min(a, b), min(max(a, b), c))  # median of three
        i, j = lo, hi
        while i <= j:
            while s[i] < pivot:
                i += 1
            while s[j] > pivot:
                j -= 1
            if i <= j:
                s[i], s[j] = s[j], s[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    if m % 2:
        return s[k]
    below = s[0]  # the largest value before position k
    for i in range(1, k):
        below = max(below, s[i])
    return 0.5 * (below + s[k])


@numba.njit(cache=True, nogil=True)
def _median_sorted(s, n):
    h = n // 2
    return s[h] if n % 2 else 0.5 * (s[h - 1] + s[h])


@numba.njit(cache=True, nogil=True)
def _quantile_sorted(s, n, q):
    pos = q * (n - 1)
    i = int(pos)
    return s[i] if i + 1 >= n else s[i] + (pos - i) * (s[i + 1] - s[i])


@numba.njit(cache=True, nogil=True, inline="always")
def _column(v, n_all, code, low, high, max_iter, table, r_max, state, s, sidx, dev, removed, below):
    """Reject in one column ``v[:n_all]`` (valid values only); ``state``: 0 kept, 1 low, 2 high.

    ``s[:n_all]`` holds the same values sorted ascending and ``sidx[:n_all]`` their indices into
    ``v`` (the caller sorts: :func:`_reject_columns` sorts many columns at once).
    ``table`` holds ESD critical values ``[n, step]`` or normal scores ``[n, rank]`` (linear fit);
    ``dev, removed, below`` are scratch buffers of at least ``n_all`` entries.
    """
    if code == 4:  # percentile, around the median of all values
        med = _median_sorted(s, n_all)
        for k in range(n_all):
            if med - v[k] > low * abs(med):
                state[k] = 1
            elif v[k] - med > high * abs(med):
                state[k] = 2
        return
    if code == 3:  # generalized ESD
        # the value farthest from the mean of the remaining ones is always their min or max:
        # sort once, then each step is O(1) with running sums (around the first median, for
        # precision), instead of O(n) scans (1000 frames × 300 steps per pixel otherwise)
        shift = _median_sorted(s, n_all)
        total = 0.0
        squares = 0.0
        for k in range(n_all):
            total += s[k] - shift
            squares += (s[k] - shift) ** 2
        lo, hi = 0, n_all - 1
        for k in range(r_max):
            removed[k] = -1
        count = 0
        for i in range(1, r_max + 1):
            m = n_all - i + 1
            if m < MIN_KEEP:
                break
            mean = total / m
            sd = np.sqrt(max(squares - m * mean * mean, 0.0) / (m - 1)) if m > 1 else 0.0
            if sd <= 0:
                break
            d_lo, d_hi = mean - (s[lo] - shift), (s[hi] - shift) - mean
            if d_hi >= d_lo:
                j, best, below[i - 1] = hi, d_hi / sd, False
                hi -= 1
            else:
                j, best, below[i - 1] = lo, d_lo / sd, True
                lo += 1
            removed[i - 1] = sidx[j]
            total -= s[j] - shift
            squares -= (s[j] - shift) ** 2
            if best > table[n_all, i]:
                count = i  # the outliers are the first `count` removed, count = last significant step
        for i in range(count):
            if removed[i] >= 0:
                state[removed[i]] = 1 if below[i] else 2
        return
    # sorted once with the values' indices: each iteration drops the rejected ones from the
    # sorted list (still sorted), instead of sorting the kept values again
    m = n_all
    for _ in range(max_iter):
        kept = 0
        for k in range(m):
            if state[sidx[k]] == 0:
                s[kept] = s[k]
                sidx[kept] = sidx[k]
                kept += 1
        m = kept
        if m <= MIN_KEEP:
            return
        med = _median_sorted(s, m)
        changed = False
        if code == 2:  # line through the sorted values against their normal scores
            q1 = _quantile_sorted(s, m, 0.25)
            sd = (_quantile_sorted(s, m, 0.75) - q1) / 1.3490  # slope = sigma, from the quartiles
            # a value can only be off the line if it is beyond these even at its extreme score:
            # only those few need their rank (most columns have none)
            lo_cut, hi_cut = sd * (table[m, m - 1] - low), sd * (high + table[m, 0])
            for k in range(n_all):
                d = v[k] - med
                if state[k] != 0 or lo_cut <= d <= hi_cut:
                    continue
                r = 0
                while r < m and s[r] < v[k]:
                    r += 1
                resid = d - sd * table[m, r]
                if resid < -low * sd:
                    state[k] = 1
                    changed = True
                elif resid > high * sd:
                    state[k] = 2
                    changed = True
        else:
            sd = 0.0
            total = 0.0
            mad = 0.0
            if code == 1:  # winsorized: Huber sigma from values clipped at 1.5 sigma (Siril)
                mean = 0.0
                for k in range(m):
                    mean += s[k]
                mean /= m
                for k in range(m):
                    sd += (s[k] - mean) ** 2
                sd = np.sqrt(sd / m)
                for _w in range(10):
                    lo_w, hi_w = med - 1.5 * sd, med + 1.5 * sd
                    mean = 0.0
                    for k in range(m):
                        mean += min(max(s[k], lo_w), hi_w)
                    mean /= m
                    new = 0.0
                    for k in range(m):
                        new += (min(max(s[k], lo_w), hi_w) - mean) ** 2
                    new = 1.134 * np.sqrt(new / m)
                    done = abs(new - sd) < 5e-4 * sd if sd > 0 else True
                    sd = new
                    if done:
                        break
            else:  # sigma: leave-one-out deviation, never below 1.4826 * MAD
                for k in range(m):
                    total += (s[k] - med) ** 2
                # the deviations in order: a merge outward from the median of the sorted values
                hi = 0
                while hi < m and s[hi] < med:
                    hi += 1
                lo = hi - 1
                for k in range(m):
                    if hi >= m or (lo >= 0 and med - s[lo] <= s[hi] - med):
                        dev[k] = med - s[lo]
                        lo -= 1
                    else:
                        dev[k] = s[hi] - med
                        hi += 1
                mad = 1.4826 * _median_sorted(dev, m)
            for k in range(n_all):
                if state[k] != 0:
                    continue
                if code == 0:
                    loo = np.sqrt(max(total - (v[k] - med) ** 2, 0.0) / max(m - 2, 1))
                    sd = max(mad, loo)
                if v[k] < med - low * sd:
                    state[k] = 1
                    changed = True
                elif v[k] > med + high * sd:
                    state[k] = 2
                    changed = True
        if not changed:
            return


@numba.njit(cache=True, parallel=True)
def _reject_columns(x, code, low, high, max_iter, table, r_max, pairs):
    """Rejection state of every value of a float32 ``(N, P)`` band (see :func:`_column`).

    :data:`_LANES` columns are sorted side by side by the comparator ``pairs`` of a sorting
    network (:func:`sorting_network`): the same compare-and-swap on every lane is SIMD code,
    2-4x faster than sorting the columns one by one (insertion sort branches unpredictably on
    every value, numpy's sort has a call's overhead per column). Invalid values (NaN) sort last
    as +inf.
    """
    n, p = x.shape
    out = np.zeros((n, p), np.uint8)
    for b in numba.prange((p + _BLOCK - 1) // _BLOCK):
        v = np.empty(n, np.float64)
        where = np.empty(n, np.int64)
        state = np.empty(n, np.uint8)
        s = np.empty(n, np.float64)
        sidx = np.empty(n, np.int64)
        dev = np.empty(n, np.float64)
        removed = np.empty(max(r_max, 1), np.int64)
        below = np.empty(max(r_max, 1), np.bool_)
        tv = np.empty((n, _LANES), np.float32)  # a tile of columns: values and their frames
        ti = np.empty((n, _LANES), np.int32)
        count = np.zeros(_LANES, np.int32)
        compact = np.empty(n, np.int64)  # frame -> index in v, for columns with invalid values
        j1 = min(p, (b + 1) * _BLOCK)
        for j0 in range(b * _BLOCK, j1, _LANES):
            lanes = min(_LANES, j1 - j0)
            count[:] = 0
            for i in range(n):
                for lane in range(lanes):
                    val = x[i, j0 + lane]
                    valid = np.isfinite(val)
                    tv[i, lane] = val if valid else np.inf
                    ti[i, lane] = i
                    count[lane] += valid
                for lane in range(lanes, _LANES):
                    tv[i, lane] = np.inf
            for c in range(pairs.shape[0]):
                va, vb, ia, ib = tv[pairs[c, 0]], tv[pairs[c, 1]], ti[pairs[c, 0]], ti[pairs[c, 1]]
                for lane in range(_LANES):
                    a, z, ka, kz = va[lane], vb[lane], ia[lane], ib[lane]
                    swap = a > z
                    va[lane] = min(a, z)
                    vb[lane] = max(a, z)
                    ia[lane] = kz if swap else ka
                    ib[lane] = ka if swap else kz
            for lane in range(lanes):
                j = j0 + lane
                m = count[lane]
                if m < n:  # frames without data here: v holds the valid values only
                    c = 0
                    for i in range(n):
                        if np.isfinite(x[i, j]):
                            compact[i] = c
                            where[c] = i
                            c += 1
                for k in range(m):
                    s[k] = tv[k, lane]
                    sidx[k] = compact[ti[k, lane]] if m < n else ti[k, lane]
                    v[sidx[k]] = s[k]
                    if m == n:
                        where[k] = k
                if m < 3:
                    continue
                state[:m] = 0
                _column(v, m, code, low, high, max_iter, table, r_max, state, s, sidx, dev, removed, below)
                for k in range(m):
                    if state[k] != 0:
                        out[where[k], j] = state[k]
    return out


@numba.njit(cache=True, parallel=True)
def _normalise_inplace(x, gain, offset):
    """``x[i] = x[i] * gain[i] + offset[i]`` for a ``(N, P)`` float32 band."""
    n, p = x.shape
    for b in numba.prange((p + _BLOCK - 1) // _BLOCK):
        for i in range(n):
            g, o = np.float32(gain[i]), np.float32(offset[i])
            for j in range(b * _BLOCK, min(p, (b + 1) * _BLOCK)):
                x[i, j] = x[i, j] * g + o


@numba.njit(cache=True, parallel=True)
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
    # high rejections are few: find the pixels with one in their column, then the pixels with
    # one of those within radius, and look at the frames of only those columns
    high = np.zeros((ny, nx), np.uint8)  # 1 where a frame has a high rejection (states 0-2)
    for y in numba.prange(ny):
        row = high[y]
        for i in range(n):
            src = state[i, y]
            for xx in range(nx):
                row[xx] |= src[xx] >> 1
    for y in numba.prange(ny):
        vals = np.empty(n, np.float64)
        ya, yb = max(0, y - radius), min(ny, y + radius + 1)
        for xx in range(nx):
            xa, xb = max(0, xx - radius), min(nx, xx + radius + 1)
            close = 0
            for yy in range(ya, yb):
                for xq in range(xa, xb):
                    close |= high[yy, xq]
            if close == 0:
                continue
            m = 0
            for i in range(n):  # outliers must not set the scale: high rejections are left out
                if state[i, y, xx] != 2 and np.isfinite(x[i, y, xx]):
                    vals[m] = x[i, y, xx]
                    m += 1
            if m == 0:
                continue
            med = _median(vals, m)
            for i in range(m):
                vals[i] = abs(vals[i] - med)
            sd = 1.4826 * _median(vals, m)
            for i in range(n):
                if state[i, y, xx] != 0 or not abs(x[i, y, xx] - med) > k * sd:
                    continue
                strong = False  # a high rejection of this frame, strong enough to seed, nearby
                for yy in range(ya, yb):
                    for xq in range(xa, xb):
                        strong |= state[i, yy, xq] == 2 and x[i, yy, xq] > med + seed * sd
                if strong:
                    # 3 until every column is judged: the neighbours grow from the test's
                    # rejections (2), not from each other's growth (each column writes only
                    # its own values, and 0 or 3 both read as "not 2")
                    state[i, y, xx] = 3
    for i in numba.prange(n):
        for y in range(ny):
            row = state[i, y]
            for xx in range(nx):  # 3 -> 2, the others unchanged: branch-free, so SIMD
                row[xx] -= row[xx] & (row[xx] >> 1) & 1


@numba.njit(cache=True, parallel=True)
def _combine_columns(x, state, start, weights, median, value, low_frac, high_frac, valid):
    """Weighted average (or median) of the kept values of columns ``start:start + len(value)``
    of a ``(N, P)`` band (the band's inner rows; halo rows are only read for the growth).

    Writes per column: ``value`` (NaN-free; 0 only where no frame has data), the fraction of
    valid values rejected low / high, and the number of valid values. A column whose every
    value was rejected (percentile clipping around a median near 0, a trail over 2 of 3 frames)
    takes the median of all its values: the rejection maps still show it fully rejected, and the
    image has no hole.
    """
    n = x.shape[0]
    p = value.size
    for b in numba.prange((p + _BLOCK - 1) // _BLOCK):
        s = np.empty(n, np.float64)
        j0, j1 = b * _BLOCK, min(p, (b + 1) * _BLOCK)
        num = np.zeros(j1 - j0, np.float64)
        den = np.zeros(j1 - j0, np.float64)
        nv = np.zeros(j1 - j0, np.int32)
        nl = np.zeros(j1 - j0, np.int32)
        nh = np.zeros(j1 - j0, np.int32)
        for i in range(n):  # frame by frame along the columns: branch-free, so SIMD
            w = weights[i]
            xi, si = x[i, start + j0 : start + j1], state[i, start + j0 : start + j1]
            for q in range(j1 - j0):
                v, st = xi[q], si[q]
                finite = np.isfinite(v)
                kept = finite and st == 0
                num[q] += w * v if kept else 0.0
                den[q] += w if kept else 0.0
                nv[q] += finite
                nl[q] += finite and st == 1
                nh[q] += finite and st == 2
        for q in range(j1 - j0):
            jj = j0 + q
            if median or (nv[q] > 0 and nl[q] + nh[q] == nv[q]):
                # the median of the kept values, or of every valid value where all were rejected
                everything = nl[q] + nh[q] == nv[q]
                m = 0
                for i in range(n):
                    v = x[i, start + jj]
                    if np.isfinite(v) and (everything or state[i, start + jj] == 0):
                        s[m] = v
                        m += 1
                _sort(s, m)
                value[jj] = _median_sorted(s, m) if m > 0 else 0.0
            else:
                value[jj] = num[q] / den[q] if den[q] > 0 else 0.0
            valid[jj] = nv[q]
            low_frac[jj] = nl[q] / max(nv[q], 1)
            high_frac[jj] = nh[q] / max(nv[q], 1)


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
    with ThreadPoolExecutor(min(numba.get_num_threads(), READERS)) as pool:
        for y0 in range(0, ny, rows):
            y1 = min(ny, y0 + rows)
            ya, yb = max(0, y0 - grow), min(ny, y1 + grow)  # halo rows for the growth
            image = np.empty((channels, y1 - y0, nx), np.float32)
            rej_lo, rej_hi = np.empty_like(image), np.empty_like(image)
            coverage = np.empty((y1 - y0, nx), np.float32)
            for c in range(channels):
                band = np.empty((n, (yb - ya) * nx), np.float32)

                # reads and resampling release the GIL: the job's threads share the frames
                list(pool.map(_read_band, sources, band, repeat(ya), repeat(yb), repeat(c)))
                _normalise_inplace(band, *coeffs[c])
                state = reject_state(band, rejection, low, high)
                if grow > 0 and (state == 2).any():
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
                del band, state, valid  # before the next band is allocated: one band in memory
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


def compile_kernels() -> None:
    """Run every kernel once on tiny data with the argument types the pipeline uses, so their
    machine code is in numba's cache (``astroflow compile``, run by ``make install``): no job
    then spends seconds compiling."""
    x = np.random.default_rng(0).normal(size=(5, 64)).astype(np.float32)
    for method in _METHOD_CODE:
        reject_state(x, method, *DEFAULT_PARAMS[method])
    norms = [FrameNorm(np.array([0.0]), np.array([1.0]), 1.0) for _ in range(5)]
    for combine in ("average", "median"):
        integrate([x.reshape(5, 8, 8)[i] for i in range(5)], norms, "sigma", 3, 3, combine=combine, grow=1)
