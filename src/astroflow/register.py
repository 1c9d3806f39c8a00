"""Star registration: match star lists, fit a transform, resample with clamped Lanczos.

Transforms are 2×3 affine matrices ``A`` mapping **reference** pixel coordinates to **source**
(frame) coordinates: ``[x_src, y_src] = A @ [x_ref, y_ref, 1]`` (0-based, x = column). That is
the direction resampling needs (for every output pixel, where to read in the frame).

Matching: a first transform from shift voting between star pairs (most frames of a night are
shifted, hardly rotated: milliseconds), else astroalign's triangle-invariant matching (with
RANSAC) on the brightest stars, else phase correlation of the images; it is then refined by
least squares on every star pair within a shrinking radius, with 3-sigma outlier rejection, so
hundreds of stars (not a handful) set the final transform.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from .numerics import nanmedian


class RegistrationError(RuntimeError):
    """A frame could not be registered; the message says why."""


@dataclass
class Registration:
    matrix: np.ndarray  # 2x3, reference -> source
    matches: int
    rms: float  # px, residual of matched stars
    method: str


def fit_transform(
    ref_xy: np.ndarray, src_xy: np.ndarray, model: str = "similarity", weights: np.ndarray | None = None
) -> np.ndarray:
    """Least-squares 2×3 matrix mapping ``ref_xy`` to ``src_xy`` (N×2 each), each pair weighted
    by ``weights`` (default: equally).

    ``similarity`` = rotation + uniform scale + shift (4 parameters); ``affine`` = 6;
    ``shift`` = 2.
    """
    n = len(ref_xy)
    w = np.ones(n) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    x, y = ref_xy[:, 0], ref_xy[:, 1]
    u, v = src_xy[:, 0], src_xy[:, 1]
    if model == "shift":
        d = w @ (src_xy - ref_xy)
        return np.array([[1.0, 0.0, d[0]], [0.0, 1.0, d[1]]])
    if model == "similarity":
        # u = a x - b y + tx, v = b x + a y + ty: the least-squares solution in closed form
        # (about the weighted centroids); refine fits each frame eight times
        xm, ym, um, vm = w @ x, w @ y, w @ u, w @ v
        dx, dy, du, dv = x - xm, y - ym, u - um, v - vm
        wx, wy = w * dx, w * dy
        spread = float(np.dot(wx, dx) + np.dot(wy, dy))
        if spread == 0:  # one point: a shift is all it determines
            return np.array([[1.0, 0.0, um - xm], [0.0, 1.0, vm - ym]])
        a = (np.dot(wx, du) + np.dot(wy, dv)) / spread
        b = (np.dot(wx, dv) - np.dot(wy, du)) / spread
        return np.array([[a, -b, um - a * xm + b * ym], [b, a, vm - b * xm - a * ym]])
    if model == "affine":
        r = np.sqrt(w)[:, None]
        p, *_ = np.linalg.lstsq(np.column_stack([x, y, np.ones(n)]) * r, src_xy * r, rcond=None)
        return p.T
    raise ValueError(f"unknown transform model {model!r}; use shift, similarity or affine")


def pair_weights(ref_flux: np.ndarray, src_flux: np.ndarray) -> np.ndarray:
    """Weights of matched star pairs in a transform fit: the inverse variance of their centroid
    difference where the sky's noise limits it (a centroid's error is ∝ 1 / flux), capped at the
    pairs' median, since brighter stars are limited by their own photon noise (error
    ∝ 1 / sqrt(flux)) and saturation. Faint stars then no longer dominate the fit's error."""
    fr, fs = (np.maximum(np.asarray(f, np.float64), 1e-12) for f in (ref_flux, src_flux))
    w = 1.0 / (1.0 / fr**2 + 1.0 / fs**2)
    return np.minimum(w, np.median(w))


def matrix_text(matrix: np.ndarray) -> str:
    """A transform as the registration table writes it: 6 numbers, row-major."""
    return " ".join(f"{v:.8g}" for v in np.asarray(matrix).ravel())


def parse_matrix(text: str) -> np.ndarray:
    """The 2×3 transform of a registration table's ``matrix`` cell (:func:`matrix_text`)."""
    return np.array([float(v) for v in text.split()]).reshape(2, 3)


def apply(matrix: np.ndarray, xy: np.ndarray) -> np.ndarray:
    return xy @ matrix[:, :2].T + matrix[:, 2]


def flux_scale(ref: np.ndarray, src: np.ndarray, matrix: np.ndarray, radius: float = 1.5) -> float:
    """Median ratio reference flux / frame flux of the stars both show (``ref``, ``src``: rows
    ``x, y, flux``; ``matrix`` maps reference to frame pixels). It puts frames of other
    exposures, transparency or sessions on the reference's photometric scale; NaN when fewer
    than 3 stars pair up. The brightest tenth is left out (saturation, non-linearity)."""
    if len(ref) < 3 or len(src) < 3:
        return float("nan")
    dist, nearest = cKDTree(src[:, :2]).query(apply(matrix, ref[:, :2]), distance_upper_bound=radius)
    pair = np.isfinite(dist)
    ratio = ref[pair, 2] / src[nearest[pair], 2]
    bright = ref[pair, 2]
    ratio = (
        ratio[(bright <= np.quantile(bright, 0.9)) & np.isfinite(ratio) & (ratio > 0)]
        if len(bright)
        else ratio
    )
    return float(np.median(ratio)) if len(ratio) >= 3 else float("nan")


def refine(ref_xy, src_xy, matrix, model="similarity", radii=(6.0, 3.0, 1.5, 1.0), flux=None):
    """Re-fit ``matrix`` on all nearest-neighbour pairs within shrinking radii (px); with
    ``flux`` = (reference fluxes, source fluxes), the pairs are weighted by
    :func:`pair_weights`."""
    tree = cKDTree(src_xy)
    pairs = np.zeros((0, 2), int)

    def fit(ri, si):
        return fit_transform(
            ref_xy[ri], src_xy[si], model, None if flux is None else pair_weights(flux[0][ri], flux[1][si])
        )

    for radius in radii:
        pred = apply(matrix, ref_xy)
        dist, idx = tree.query(pred, distance_upper_bound=radius)
        ok = np.isfinite(dist)
        # one-to-one: keep the closest reference star for each source star
        order = np.argsort(dist[ok])
        ri, si = np.nonzero(ok)[0][order], idx[ok][order]
        _, first = np.unique(si, return_index=True)
        ri, si = ri[first], si[first]
        if len(ri) < 3:
            break
        m = fit(ri, si)
        res = np.hypot(*(apply(m, ref_xy[ri]) - src_xy[si]).T)
        keep = res < max(3 * np.sqrt(np.mean(res**2)), 0.05)
        if keep.sum() >= 3:
            ri, si = ri[keep], si[keep]
            m = fit(ri, si)
        matrix, pairs = m, np.column_stack([ri, si])
    if len(pairs) == 0:
        return matrix, pairs, float("inf")
    res = apply(matrix, ref_xy[pairs[:, 0]]) - src_xy[pairs[:, 1]]
    return matrix, pairs, float(np.sqrt(np.mean(np.sum(res**2, axis=1))))


def _vote_shift(
    ref_xy: np.ndarray, src_xy: np.ndarray, radius: float = 4.0, n: int = 40, cells: int = 8
) -> np.ndarray | None:
    """First guess for frames shifted (or flipped 180°, after a meridian flip) from the
    reference: each (reference, source) star pair proposes a shift; the true shift collects one
    proposal per shared star, chance pairs scatter. Proposals are binned in ``radius`` cells; the
    mean shifts of the ``cells`` fullest cells (a shift on a cell border splits its votes) are
    checked against all stars and the one that brings most together wins. The flipped guess is
    tried only when fewer than half the stars agree with the direct one."""
    ref, src = ref_xy[:n], src_xy[:n]
    if len(ref) < 2 or len(src) < 2:
        return None
    tree = cKDTree(src)
    best, best_count = None, 1
    for flip in (1.0, -1.0):
        rot = ref * flip
        shifts = (src[None, :, :] - rot[:, None, :]).reshape(-1, 2)
        cell = np.floor(shifts / radius).astype(np.int64)
        _, which, votes = np.unique(
            cell[:, 0] * 1_000_003 + cell[:, 1], return_inverse=True, return_counts=True
        )
        top = np.argsort(-votes, kind="stable")[:cells]
        which = which.ravel()
        cand = np.column_stack([np.bincount(which, weights=shifts[:, i])[top] for i in (0, 1)])
        cand /= votes[top, None]
        dist, _ = tree.query((rot[None, :, :] + cand[:, None, :]).reshape(-1, 2), distance_upper_bound=radius)
        counts = np.isfinite(dist).reshape(len(cand), len(rot)).sum(axis=1)
        k = int(np.argmax(counts))
        if counts[k] > best_count:
            best_count = int(counts[k])
            best = np.array([[flip, 0.0, cand[k, 0]], [0.0, flip, cand[k, 1]]])
        if 2 * best_count >= len(rot):  # half the stars agree: no flip needs trying
            break
    return best


def _phase_shift(ref_img: np.ndarray, src_img: np.ndarray) -> np.ndarray:
    """Translation-only first guess from phase correlation of background-flattened images."""
    import cv2

    def prep(img):
        # band-pass: 3x3 median drops hot pixels, subtracting a wide blur drops vignetting and
        # gradients (fixed to the sensor), leaving stars and nebula structure (fixed to the sky)
        a = cv2.medianBlur(np.nan_to_num(img, nan=float(nanmedian(img))).astype(np.float32), 3)
        a = a - cv2.GaussianBlur(a, (0, 0), 25)
        lo, hi = np.percentile(a, [50, 99.9])
        return np.clip(a, lo, hi).astype(np.float32)

    win = cv2.createHanningWindow(ref_img.shape[::-1], cv2.CV_32F)
    (dx, dy), _ = cv2.phaseCorrelate(prep(ref_img), prep(src_img), win)
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]])


def register(
    ref_xy: np.ndarray,
    src_xy: np.ndarray,
    model: str = "similarity",
    min_matches: int = 3,
    images=None,
    max_control_points: int = 60,
    flux=None,
) -> Registration:
    """Find the reference->source transform from two star lists (brightest first); ``flux`` =
    (reference fluxes, source fluxes) weights the final fits (:func:`refine`).

    First guesses are tried in order until one matches at least half the stars: shift votes
    (milliseconds), triangles (astroalign: any rotation), then phase correlation of ``images()`` (a callable returning the
    reference and source luminance, called only if needed: it costs a full-frame FFT).
    Raises :class:`RegistrationError` when fewer than ``min_matches`` stars agree.
    """
    if len(src_xy) < 3 or len(ref_xy) < 3:
        raise RegistrationError(f"too few stars to register ({len(src_xy)} detected, need at least 3)")

    def triangles():
        import astroalign

        try:
            tf, _ = astroalign.find_transform(
                ref_xy[:max_control_points],
                src_xy[:max_control_points],
                max_control_points=max_control_points,
            )
            return np.asarray(tf.params)[:2]
        except Exception:  # astroalign raises MaxIterError / ValueError when no triangle set agrees
            return None

    # cheapest first: most frames of a night are shifted, hardly rotated, from the reference
    guesses = [(lambda: _vote_shift(ref_xy, src_xy), "votes"), (triangles, "triangles")]
    if images is not None:
        guesses.append((lambda: _phase_shift(*images()), "phase"))
    best = None
    for make, method in guesses:
        guess = make()
        if guess is None:
            continue
        matrix, pairs, rms = refine(ref_xy, src_xy, guess, model, flux=flux)
        if best is None or len(pairs) > best.matches:
            best = Registration(matrix, len(pairs), rms, method)
        if len(pairs) >= max(min_matches, min(len(ref_xy), len(src_xy)) // 2):
            break
    if best is None or best.matches < min_matches:
        found = 0 if best is None else best.matches
        raise RegistrationError(
            f"only {found} stars matched the reference (need {min_matches}; "
            f"{len(src_xy)} stars detected in the frame, {len(ref_xy)} in the reference)"
        )
    return best


INTERPOLATIONS = ("lanczos4", "cubic", "linear")


def warp(
    image: np.ndarray,
    matrix: np.ndarray,
    shape: tuple[int, int],
    clamp: bool = True,
    interpolation: str = "lanczos4",
) -> np.ndarray:
    """Resample ``image`` (mono or (3, ny, nx)) onto the reference grid ``shape`` = (ny, nx).

    ``lanczos4`` (default; 8 taps, in two separable passes for the rotations of a night,
    :mod:`astroflow.resample`, OpenCV's 2-D kernel beyond) keeps stars sharpest and pixel noise
    uncorrelated; ``cubic``
    and ``linear`` smooth: lower noise, wider stars (on the benchmark night ``linear`` cuts the
    4×4-binned noise of a frame by ~8 % and widens stars by ~5 %). Clamping keeps the result above
    the 3×3 neighbourhood's minimum of the source, so dark rings do not appear around stars; the
    peak the kernel reconstructs above the samples of a sharp star is kept (clamping it too cost
    photometry: star-flux scatter 0.25 % against 0.20 % on the benchmark night).
    Pixels not fully covered by the frame are NaN.
    """
    m = np.asarray(matrix, np.float64)
    missing = _uncovered(m, image.shape[-2:], shape)
    planes = [image] if image.ndim == 2 else list(image)
    out = np.stack([_warp_plane(np.asarray(p, np.float32), m, shape, clamp, interpolation) for p in planes])
    out[:, missing] = np.nan
    return out[0] if image.ndim == 2 else out


def _warp_plane(
    plane: np.ndarray, m: np.ndarray, shape, clamp: bool, interpolation: str, out=None
) -> np.ndarray:
    """One plane resampled onto ``shape`` (into ``out``, float32 C-contiguous, when given)."""
    import cv2

    from . import resample as resample_lib

    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r}; choose one of {INTERPOLATIONS}")
    kernel = {"lanczos4": cv2.INTER_LANCZOS4, "cubic": cv2.INTER_CUBIC, "linear": cv2.INTER_LINEAR}
    size = (shape[1], shape[0])

    def resample(a, interp, dst=None):
        flags = interp | cv2.WARP_INVERSE_MAP
        return cv2.warpAffine(a, m, size, dst=dst, flags=flags, borderMode=cv2.BORDER_REFLECT)

    if interpolation == "lanczos4" and resample_lib.suits(m):  # two 1-D passes: ~2x faster
        if out is None:
            out = np.empty(shape, np.float32)
        resample_lib.lanczos_affine(plane, m, out)
    else:
        out = resample(plane, kernel[interpolation], out)
    if clamp:
        k = np.ones((3, 3), np.uint8)
        lo = resample(cv2.erode(plane, k), cv2.INTER_LINEAR)
        np.maximum(out, lo, out=out)
    return out


class WarpedRows:
    """A calibrated frame seen on the reference grid, resampled band by band as it is read:
    ``read_into(out, y0, channel)`` fills ``out`` with output rows from ``y0`` exactly as
    :func:`warp` of the whole frame would (up to OpenCV's 1/32 px coordinate rounding), reading
    only the source rows those output rows fall on. Integration reads its bands through it, so
    registered frames are never written (104 MB each at 26 MP) nor read back.

    ``frame`` is a band-readable frame (:class:`astroflow.io.FitsRows`), ``matrix`` the 2×3
    reference→frame transform, ``shape`` the reference's (ny, nx)."""

    MARGIN = 8  # source rows beyond the band's footprint: Lanczos-4 reads 3 above, 4 below, +1 clamp

    def __init__(self, frame, matrix, shape, clamp: bool = True, interpolation: str = "lanczos4"):
        self.frame, self.m = frame, np.asarray(matrix, np.float64)
        self.clamp, self.interpolation = clamp, interpolation
        self.shape = (*frame.shape[:-2], *shape)

    def read_into(self, out: np.ndarray, y0: int, channel: int = 0) -> None:
        nx = self.shape[-1]
        rows = out.size // nx
        band = self.m.copy()
        band[:, 2] += self.m[:, 1] * y0  # output row y0 of the frame is row 0 of the band
        src_ny = self.frame.shape[-2]
        corners = band[1] @ np.array([[0, 0, 1], [nx - 1, 0, 1], [0, rows - 1, 1], [nx - 1, rows - 1, 1]]).T
        s0 = max(0, int(np.floor(corners.min())) - self.MARGIN)
        s1 = min(src_ny, int(np.ceil(corners.max())) + self.MARGIN + 1)
        target = out.reshape(rows, nx)
        if s1 - s0 < 2:  # the band lies outside the frame
            target[:] = np.nan
            return
        slab = np.empty((s1 - s0, self.frame.shape[-1]), np.float32)
        self.frame.read_into(slab, s0, channel)
        local = band.copy()
        local[1, 2] -= s0
        _warp_plane(slab, local, (rows, nx), self.clamp, self.interpolation, out=target)
        np.copyto(target, np.float32(np.nan), where=_uncovered(band, self.frame.shape[-2:], (rows, nx)))

    def __getitem__(self, key):
        c, rows = (0, key) if len(self.shape) == 2 else key
        y0, y1, _ = rows.indices(self.shape[-2])
        out = np.empty((max(0, y1 - y0), self.shape[-1]), np.float32)
        self.read_into(out, y0, c)
        return out


def _uncovered(matrix: np.ndarray, src_shape: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """Output pixels whose source position lies outside the frame's pixel centres (a bilinear
    read there would mix in the border). Per output row the covered pixels form one interval
    (a line through a rectangle), solved from the transform instead of warping a mask."""
    (a, b, c), (d, e, f) = matrix
    h, w = src_shape
    ny, nx = shape
    y = np.arange(ny, dtype=np.float64)
    lo, hi = np.full(ny, -np.inf), np.full(ny, np.inf)
    eps = 1e-6
    for k, off, size in ((a, b * y + c, w), (d, e * y + f, h)):  # 0 <= k x + off <= size - 1
        if abs(k) < 1e-12:
            inside = (off >= -eps) & (off <= size - 1 + eps)
            lo[~inside], hi[~inside] = np.inf, -np.inf
            continue
        x1, x2 = (-eps - off) / k, (size - 1 + eps - off) / k
        lo, hi = np.maximum(lo, np.minimum(x1, x2)), np.minimum(hi, np.maximum(x1, x2))
    cols = np.arange(nx)
    return (cols[None, :] < lo[:, None]) | (cols[None, :] > hi[:, None])
