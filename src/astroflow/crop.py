"""Crop to the common area: the largest axis-aligned rectangle where every frame contributes.

Input is the integration's coverage map (frames with data per pixel, reference geometry).
A pixel is valid when its coverage reaches ``max(coverage) - tolerance_frames``; for each row
the longest run of valid pixels is kept (the valid area of dithered, slightly rotated frames is
convex, so this is exact there), and the rectangle of largest area over all row spans is found
with running max/min of the run edges: O(ny²) vectorised work, well under a second at 26 MP.
Rectangles are ``(y0, y1, x0, x1)``, half-open, 0-based pixel indices.
"""

from __future__ import annotations

import numpy as np


def valid_mask(coverage: np.ndarray, tolerance_frames: int = 0) -> np.ndarray:
    """Pixels to which (nearly) every frame contributed."""
    cov = np.nan_to_num(np.asarray(coverage, np.float32))
    return cov >= cov.max() - tolerance_frames


def _row_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) of the longest True run in each row; (0, 0) for empty rows."""
    ny, nx = mask.shape
    padded = np.zeros((ny, nx + 2), np.int8)
    padded[:, 1:-1] = mask
    d = np.diff(padded, axis=1)
    starts, ends = np.nonzero(d == 1), np.nonzero(d == -1)
    left, right = np.zeros(ny, np.int64), np.zeros(ny, np.int64)
    lengths = ends[1] - starts[1]
    order = np.lexsort((lengths, starts[0]))  # within a row, longest run last
    rows = starts[0][order]
    left[rows], right[rows] = starts[1][order], ends[1][order]
    return left, right


def largest_rectangle(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Largest rectangle of True pixels (per-row longest runs; see module doc)."""
    left, right = _row_runs(mask)
    ny = len(left)
    best, rect = 0, (0, 0, 0, 0)
    for y0 in range(ny):
        if right[y0] <= left[y0]:
            continue
        lo = np.maximum.accumulate(left[y0:])
        hi = np.minimum.accumulate(right[y0:])
        width = hi - lo
        empty = np.nonzero(width <= 0)[0]
        stop = empty[0] if len(empty) else len(width)
        if stop == 0:
            continue
        area = width[:stop] * np.arange(1, stop + 1)
        k = int(np.argmax(area))
        if area[k] > best:
            best, rect = int(area[k]), (y0, y0 + k + 1, int(lo[k]), int(hi[k]))
    return rect


def common_area(coverages: list[np.ndarray], tolerance_frames: int = 0) -> tuple[int, int, int, int]:
    """One rectangle for all channels of a target: the largest valid in every coverage map."""
    mask = np.logical_and.reduce([valid_mask(c, tolerance_frames) for c in coverages])
    rect = largest_rectangle(mask)
    if rect[1] - rect[0] < 16 or rect[3] - rect[2] < 16:
        raise ValueError("the frames share no common area of at least 16×16 pixels (see the coverage maps)")
    return rect


def apply(image: np.ndarray, rect: tuple[int, int, int, int]) -> np.ndarray:
    y0, y1, x0, x1 = rect
    return np.ascontiguousarray(image[..., y0:y1, x0:x1])
