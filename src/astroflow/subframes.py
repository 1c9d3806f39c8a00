"""Subframe selection: AutoIntegrate's SubframeSelector step (reference/peers.md §1.2.4).

Each light of a filter has the measurements of ``measure.tsv`` (:mod:`astroflow.records`):
FWHM, eccentricity, SNR, PSF signal, PSF power, star count. :func:`select` applies, in
AutoIntegrate's order,

1. hard limits (``subframes.limits``; 0 is off): FWHM and eccentricity are upper limits, the
   others lower limits;
2. outlier rejection (``subframes.outliers``), only with at least :data:`MIN_FRAMES` frames,
   metric by metric in the order FWHM, eccentricity, SNR, PSF signal, PSF power, stars, then
   SSWEIGHT, each among the frames still kept: ``two sigma`` (mean ± 2 population standard
   deviations), ``one sigma``, or ``IQR`` (Q1 − 1.5 IQR, Q3 + 1.5 IQR with AutoIntegrate's
   quartiles); FWHM and eccentricity reject high values, the others low values. Each test is
   repeated until it finds nothing (a second bad frame widens the first pass's limits). astroflow adds
   ``outliers.margin``: an outlier must also be that fraction worse than the kept frames' median
   (for eccentricity: its axis ratio b/a = sqrt(1 - e²) that fraction smaller; 0 is
   AutoIntegrate's test alone, which drops a few good frames of every night: two sigma
   flags 2 % of honest values, and 9 stars among frames of 9–12);

and gives every kept frame its SSWEIGHT (``subframes.weight``):

==================== =====================================================
Generic              20 neg(FWHM) + 15 neg(Ecc) + 25 pos(SNR) + 40
Noise                5 neg(FWHM) + 10 neg(Ecc) + 20 pos(SNR) + 65
Stars                35 neg(FWHM) + 35 neg(Ecc) + 20 pos(SNR) + 10
PSF Signal           the PSF signal as measured
PSF Signal scaled    99 pos(PSF signal) + 1
FWHM scaled          99 neg(FWHM) + 1
Eccentricity scaled  99 neg(Ecc) + 1
SNR scaled           99 pos(SNR) + 1
Star count           stars + 1
==================== =====================================================

with ``neg(v) = 1 - (v - min) / (max - min)``, ``pos(v) = (v - min) / (max - min)`` (0.5 when
min = max) over the kept frames. The best SSWEIGHT among the frames showing nearly the most
stars is the registration and normalisation reference (:func:`best`). PSF signal and power are measured by
:func:`astroflow.measure.frame_stats` from the frame's own unsaturated stars.
"""

from __future__ import annotations

import numpy as np

# measure.tsv column -> (AutoIntegrate's name, whether high values are the bad ones)
METRICS = {
    "fwhm": ("FWHM", True),
    "eccentricity": ("eccentricity", True),
    "snr": ("SNR", False),
    "psf_signal": ("PSF signal", False),
    "psf_power": ("PSF power", False),
    "stars": ("star count", False),
}
MIN_FRAMES = 8  # fewer frames: no outlier rejection (AutoIntegrate)
SSWEIGHT_LIMIT = 1e-10
REFERENCE_STARS = 0.9  # fraction of the most stars a reference must show
WEIGHTS = (
    "Generic",
    "Noise",
    "Stars",
    "PSF Signal",
    "PSF Signal scaled",
    "FWHM scaled",
    "Eccentricity scaled",
    "SNR scaled",
    "Star count",
)
_MIX = {  # (FWHM, eccentricity, SNR, constant) of the mixed weights
    "Generic": (20, 15, 25, 40),
    "Noise": (5, 10, 20, 65),
    "Stars": (35, 35, 20, 10),
}


def _metrics(frames: list[dict]) -> dict[str, np.ndarray]:
    """The :data:`METRICS` columns of ``frames`` as float arrays (NaN where unmeasured)."""
    return {k: np.array([np.nan if f.get(k) is None else float(f[k]) for f in frames]) for k in METRICS}


def _scaled(values, positive: bool) -> np.ndarray:
    v = np.asarray(values, float)
    lo, hi = np.nanmin(v), np.nanmax(v)
    if not np.isfinite(lo) or hi == lo:
        return np.full(v.shape, 0.5)
    s = (v - lo) / (hi - lo)
    return np.nan_to_num(s if positive else 1 - s, nan=0.0)


def ssweight(frames: list[dict], method: str) -> np.ndarray:
    """SSWEIGHT of each frame (dicts with the :data:`METRICS` columns) by ``method``."""
    col = _metrics(frames)
    if method in _MIX:
        a, b, c, d = _MIX[method]
        return (
            a * _scaled(col["fwhm"], False)
            + b * _scaled(col["eccentricity"], False)
            + c * _scaled(col["snr"], True)
            + d
        )
    if method == "PSF Signal":
        return np.nan_to_num(col["psf_signal"], nan=0.0)
    if method == "Star count":
        return col["stars"] + 1
    scaled = {"PSF Signal scaled": ("psf_signal", True), "FWHM scaled": ("fwhm", False),
              "Eccentricity scaled": ("eccentricity", False), "SNR scaled": ("snr", True)}  # fmt: skip
    if method not in scaled:
        raise ValueError(f"unknown subframe weight {method!r}; choose one of {WEIGHTS}")
    return 99 * _scaled(col[scaled[method][0]], scaled[method][1]) + 1


def outlier_limits(values: np.ndarray, method: str) -> tuple[float, float]:
    """``(low, high)`` bounds of the honest values by ``method``."""
    v = np.sort(np.asarray(values, float)[np.isfinite(values)])
    if method == "IQR":
        n = len(v)
        q1, q3 = v[n // 4], v[min(n - 1, -(-3 * n // 4))]
        return q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)
    k = {"two sigma": 2.0, "one sigma": 1.0}[method]
    return float(v.mean() - k * v.std()), float(v.mean() + k * v.std())


def _outliers(values, reasons, name, is_ecc, high_bad, method, margin) -> int:
    """Mark the outliers of one metric among the frames still kept; returns how many."""
    kept = [i for i in range(len(values)) if not reasons[i] and np.isfinite(values[i])]
    if len(kept) < MIN_FRAMES:
        return 0
    lo, hi = outlier_limits(values[kept], method)
    # ... and clearly worse than the night's median (a night of good frames loses none)
    median = float(np.median(values[kept]))
    lo, hi = min(lo, median * (1 - margin)), max(hi, median * (1 + margin))
    if is_ecc:  # the margin is on the axis ratio b/a = sqrt(1 - e²)
        ratio = np.sqrt(max(0.0, 1 - median**2)) * (1 - margin)
        hi = max(outlier_limits(values[kept], method)[1], float(np.sqrt(1 - ratio**2)))
    found = 0
    for i in kept:
        v = values[i]
        if (v > hi) if high_bad else (v < lo):
            bound = hi if high_bad else lo
            reasons[i] = f"subframe selection: {name} {v:.4g} is a {method} outlier (limit {bound:.4g})"
            found += 1
    return found


def select(frames: list[dict], cfg: dict) -> tuple[np.ndarray, list[str]]:
    """``(SSWEIGHT, reason)`` of each frame of one filter (``cfg``: the ``subframes`` options);
    the reason is ``""`` for a kept frame, its weight 0 for a rejected one."""
    n = len(frames)
    reasons = [""] * n
    values = _metrics(frames)
    for key, (name, high_bad) in METRICS.items():
        limit = float(cfg["limits"][key])
        if limit <= 0:
            continue
        for i in range(n):
            v = values[key][i]
            if not reasons[i] and np.isfinite(v) and (v > limit if high_bad else v < limit):
                reasons[i] = (
                    f"subframe selection: {name} {v:.4g} {'above' if high_bad else 'below'} the limit {limit:g}"
                )
    out = cfg["outliers"]
    method = out["method"]
    if n >= MIN_FRAMES:
        for key, (name, high_bad) in METRICS.items():
            if not out[key]:
                continue
            # repeated until none is left: two bad frames must not hide each other
            while _outliers(
                values[key], reasons, name, key == "eccentricity", high_bad, method, out["margin"]
            ):
                pass
    weights = np.zeros(n)
    kept = [i for i in range(n) if not reasons[i]]
    if kept:
        weights[kept] = ssweight([frames[i] for i in kept], cfg["weight"])
    if out["ssweight"] and len(kept) >= MIN_FRAMES:
        lo, _ = outlier_limits(weights[kept], method)
        for i in kept:
            if weights[i] < lo:
                reasons[i] = (
                    f"subframe selection: SSWEIGHT {weights[i]:.4g} is a {method} outlier (limit {lo:.4g})"
                )
    for i in range(n):
        if not reasons[i] and weights[i] < SSWEIGHT_LIMIT:
            reasons[i] = f"subframe selection: SSWEIGHT {weights[i]:.3g} below {SSWEIGHT_LIMIT:g}"
        if reasons[i]:
            weights[i] = 0.0
    return weights, reasons


def best(frames: list[dict], weights: np.ndarray, choice: str = "auto") -> int:
    """Index of the reference: the frame whose path is ``choice`` (a light's path relative to the
    data folder, or its file name), else the highest SSWEIGHT among the kept frames with at least
    :data:`REFERENCE_STARS` of the most stars any shows (a reference must show the stars the
    others share: a 5-star narrowband frame left 2 of 12 unregistered); equal weights: the
    first path."""
    if choice != "auto":
        for i, f in enumerate(frames):
            if choice in (f["path"], f["path"].rsplit("/", 1)[-1]):
                return i
        raise ValueError(f"subframes.reference {choice!r} is not a light of this filter")
    kept = [i for i in range(len(frames)) if weights[i] > 0] or list(range(len(frames)))
    most = max(float(frames[i].get("stars") or 0) for i in kept)
    pool = [i for i in kept if float(frames[i].get("stars") or 0) >= REFERENCE_STARS * most]
    return min(pool, key=lambda i: (-weights[i], frames[i]["path"]))
