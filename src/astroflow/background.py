"""Gradient correction: a smooth background model from automatically chosen sky samples.

Linear images (ADU or normalised, mono ``(ny, nx)`` or colour ``(3, ny, nx)``; a model per
channel). Samples are boxes on a regular grid (``samples_per_row`` across the image); a box's
value is the median of its pixels after sigma-clipping stars out. Boxes whose content is not sky
are rejected: those with structure much above the noise (nebula edges, bright stars) and, while
fitting, those far *above* the current model (extended nebulosity is positive; a gradient is
smooth). The sky boxes are always chosen with the polynomial (an RBF would bend into a wide
nebula's wings and then accept them); the RBF only refines that choice. Models:

* ``polynomial``: 2-D polynomial of ``degree`` in coordinates scaled to [-1, 1] (as ABE);
* ``rbf``: a quadratic trend plus a thin-plate-spline surface with ``smoothing`` through the
  samples (as DBE/GraXpert's RBF), evaluated on a coarse grid and resampled bicubically.

Correction is ``subtract`` (gradients from light pollution; the model's median is added back
so the sky level is kept) or ``divide`` (vignetting-like; multiplied back by the median).
"""

from __future__ import annotations

import numpy as np

from .numerics import mad_sigma, median

MODELS = ("polynomial", "rbf")


def sample_grid(plane: np.ndarray, samples_per_row: int = 16, star_sigma: float = 3.0):
    """Box centres (x, y, px), robust box medians and box noise for one plane."""
    ny, nx = plane.shape
    box = max(8, int(min(nx, ny) / samples_per_row / 2))
    xs = np.linspace(box, nx - box, samples_per_row).astype(int)
    ys = np.linspace(box, ny - box, max(2, int(round(samples_per_row * ny / nx)))).astype(int)
    pts, vals, noise = [], [], []
    for y in ys:
        for x in xs:
            v = plane[max(0, y - box) : y + box, max(0, x - box) : x + box].ravel()
            v = v[np.isfinite(v)]
            if v.size < 16:
                continue
            med, sd = np.median(v), mad_sigma(v)
            for _ in range(3):  # clip stars (and hot residue) out of the box
                keep = np.abs(v - med) < star_sigma * max(sd, 1e-12)
                if keep.sum() < 16:
                    break
                med, sd = np.median(v[keep]), mad_sigma(v[keep])
            pts.append((x, y))
            vals.append(med)
            noise.append(sd)
    return np.array(pts, float), np.array(vals, float), np.array(noise, float), box


def _poly_terms(x, y, degree):
    return np.column_stack([x**i * y**j for i in range(degree + 1) for j in range(degree + 1 - i)])


def fit_model(
    plane: np.ndarray,
    method: str = "polynomial",
    degree: int = 2,
    smoothing: float = 1.0,
    samples_per_row: int = 16,
    reject_sigma: float = 2.0,
) -> tuple[np.ndarray, dict]:
    """Background model of one plane (same shape) and a summary of the samples used."""
    if method not in MODELS:
        raise ValueError(f"unknown gradient model {method!r}; choose one of {MODELS}")
    ny, nx = plane.shape
    pts, vals, box_noise, box = sample_grid(plane, samples_per_row)
    if len(vals) < 6:
        raise ValueError(f"only {len(vals)} background samples: image too small for gradient correction")
    sx, sy = (pts[:, 0] / (nx - 1)) * 2 - 1, (pts[:, 1] / (ny - 1)) * 2 - 1
    # boxes with far more dispersion than typical hold structure (nebula edges, galaxies)
    typical = np.median(box_noise)
    base = float(np.median(vals))
    keep = box_noise < 1.5 * typical
    if keep.sum() < 6:
        keep = np.ones(len(vals), bool)

    def evaluate(k, x, y, method=method):
        if method == "polynomial":
            deg = min(degree, 1 if k.sum() < 15 else degree)
            coef, *_ = np.linalg.lstsq(_poly_terms(sx[k], sy[k], deg), vals[k], rcond=None)
            return _poly_terms(x, y, deg) @ coef
        from scipy.interpolate import RBFInterpolator

        # values in units of a box median's noise, so smoothing 1 lets the surface miss each
        # sample by about its own noise
        unit = max(1.25 * typical / (2 * box), 1e-12)
        rbf = RBFInterpolator(
            np.column_stack([sx[k], sy[k]]),
            (vals[k] - base) / unit,
            kernel="thin_plate_spline",
            smoothing=smoothing,
            degree=2,
        )
        return rbf(np.column_stack([x, y])) * unit + base

    # a box median's own noise: the floor of the scatter (wide nebulae inflate the residuals')
    floor = 1.25 * typical / (2 * box)

    def reject(keep, model, reentrant):
        usable = keep
        for _ in range(20):
            resid = vals - evaluate(keep, sx, sy, model)
            scatter = max(mad_sigma(resid[keep]), floor)
            # one-sided against nebulosity (positive), two-sided against bad boxes
            new = (usable if reentrant else keep) & (resid < reject_sigma * scatter)
            new &= resid > -3 * reject_sigma * scatter
            if new.sum() < 6 or (new == keep).all():
                break
            keep = new
        return keep

    # sky boxes are chosen with the stiff polynomial, every usable box judged again each round
    # (boxes dropped by a tilted first fit come back); a flexible RBF would bend into the wings
    # of a wide nebula and then accept them, so it only refines that choice, dropping boxes
    keep = reject(keep, "polynomial", True)
    if method == "rbf":
        keep = reject(keep, "rbf", False)
    # evaluate on a coarse grid and resample (a thin-plate spline per pixel would be slow)
    from scipy.interpolate import RectBivariateSpline

    step = max(4, box // 2)
    gy = np.arange(0, ny - 1 + step, step, dtype=float)
    gx = np.arange(0, nx - 1 + step, step, dtype=float)
    GX, GY = np.meshgrid(gx / (nx - 1) * 2 - 1, gy / (ny - 1) * 2 - 1)
    coarse = evaluate(keep, GX.ravel(), GY.ravel()).reshape(GX.shape)
    full = RectBivariateSpline(gy, gx, coarse, kx=3, ky=3)(np.arange(ny), np.arange(nx)).astype(np.float32)
    info = {"samples": int(len(vals)), "samples_used": int(keep.sum()), "box": int(box)}
    return np.ascontiguousarray(full, np.float32), info


def correct(
    image: np.ndarray,
    method: str = "polynomial",
    degree: int = 2,
    smoothing: float = 1.0,
    samples_per_row: int = 16,
    correction: str = "subtract",
) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Gradient-corrected image, background model (same shape) and per-channel sample summaries."""
    planes = image[None] if image.ndim == 2 else image
    out, models, infos = [], [], []
    for p in planes:
        p = np.asarray(p, np.float32)
        model, info = fit_model(p, method, degree, smoothing, samples_per_row)
        level = float(median(model))
        if correction == "subtract":
            out.append(p - model + level)
        elif correction == "divide":
            out.append(p / np.maximum(model, 1e-12 * max(level, 1e-12)) * level)
        else:
            raise ValueError(f"unknown gradient correction {correction!r}; choose subtract or divide")
        models.append(model)
        infos.append(info)
    if image.ndim == 2:
        return out[0], models[0], infos
    return np.stack(out), np.stack(models), infos
