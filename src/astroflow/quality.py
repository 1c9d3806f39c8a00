"""Score a stacked image against the truth of a synthetic night (reference/baselines.md metrics).

Every metric is independent of the stack's scale and offset: the sky->image transform is fitted
from matched stars, and a photometric scale ``k`` (stack units per truth electron per frame) from
aperture photometry of isolated unsaturated stars.

* ``noise_e``: background sigma of the 4×4-binned star-masked residual ×4, in e- per frame;
* ``noise_gain``: ``noise_e`` of a registered single frame / ``noise_e`` of the stack;
* ``fwhm`` and ``ellipticity`` from elliptical Gaussian fits of bright isolated stars;
* ``phot_scatter``: robust scatter of measured/expected star flux;
* ``flatness``: sigma of 64-px tile medians after removing a plane, relative to the sky level;
* ``trail``/``cosmic``/``hot`` residuals: mean excess at artefact positions divided by the
  excess expected if the artefact had been kept (0 = removed, 1 = fully kept);
* ``point_noise``: noise of a PSF-weighted (matched-filter) flux at empty sky positions, in e-
  per frame: the error of a faint star's flux. Unlike per-pixel or binned sigma it is not
  flattered by resampling kernels that smooth (and correlate) the noise;
* ``completeness``: fraction of faint truth stars (< 500 e- per frame) recovered as local maxima
  of the matched-filtered image above 5 sigma of that filtered image (no false detections
  expected at that level), within 1.5 px. The threshold is set on the filtered image's own
  measured noise, so correlated noise cannot lower it;
* ``completeness_sep``: the same fraction from ``detect_stars`` at 3 sigma of the per-pixel
  noise, which treats the noise as uncorrelated and therefore favours smoothed images.
"""

from __future__ import annotations

import numpy as np
import sep
from scipy import ndimage, optimize
from scipy.spatial import cKDTree

from .measure import detect_stars
from .numerics import mad_sigma
from .register import apply, refine, register


def _affine(m):
    return np.vstack([np.asarray(m, float), [0, 0, 1]])


def sky_to_image(image: np.ndarray, truth: dict, band: str, guess: np.ndarray | None = None) -> np.ndarray:
    """Fit the 2×3 sky->image matrix by matching detected stars to the truth catalogue."""
    stars = truth["stars"]
    det = detect_stars(image, 5.0)
    order = np.argsort(-stars[band])
    sky_xy = np.column_stack([stars["x"], stars["y"]])[order[:400]]
    img_xy = np.column_stack([det["x"], det["y"]])
    if guess is not None:
        m, pairs, _ = refine(sky_xy, img_xy, guess, "affine")
        if len(pairs) >= 10:
            return m
    return register(sky_xy, img_xy, "affine", min_matches=10).matrix


def _background(image):
    img = np.ascontiguousarray(image, dtype=np.float32)
    return sep.Background(img, bw=64, bh=64, fw=3, fh=3)


def _star_mask(shape, xy, flux, fwhm):
    """Mask circles around every truth star bright enough to matter."""
    mask = np.zeros(shape, bool)
    h, w = shape
    for (x, y), f in zip(xy, flux, strict=False):
        r = fwhm * (1.5 + max(0.0, np.log10(max(f, 1.0)) - 2.0))
        x0, x1, y0, y1 = int(x - r), int(x + r) + 2, int(y - r), int(y + r) + 2
        if x1 < 0 or y1 < 0 or x0 >= w or y0 >= h:
            continue
        yy, xx = np.mgrid[max(y0, 0) : min(y1, h), max(x0, 0) : min(x1, w)]
        mask[yy, xx] |= (xx - x) ** 2 + (yy - y) ** 2 <= r * r
    return mask


def _gauss2d(p, yy, xx):
    amp, x0, y0, sx, sy, th, bg = p
    a = np.cos(th) ** 2 / (2 * sx**2) + np.sin(th) ** 2 / (2 * sy**2)
    b = np.sin(2 * th) / (4 * sy**2) - np.sin(2 * th) / (4 * sx**2)
    c = np.sin(th) ** 2 / (2 * sx**2) + np.cos(th) ** 2 / (2 * sy**2)
    dx, dy = xx - x0, yy - y0
    return amp * np.exp(-(a * dx * dx + 2 * b * dx * dy + c * dy * dy)) + bg


def fit_psf(image, x, y, size=8):
    """Elliptical Gaussian fit; returns (fwhm_major, fwhm_minor) in px or None."""
    xi, yi = int(round(x)), int(round(y))
    h, w = image.shape
    if xi - size < 0 or yi - size < 0 or xi + size + 1 > w or yi + size + 1 > h:
        return None
    stamp = image[yi - size : yi + size + 1, xi - size : xi + size + 1].astype(float)
    yy, xx = np.mgrid[yi - size : yi + size + 1, xi - size : xi + size + 1]
    bg = np.median(np.concatenate([stamp[0], stamp[-1], stamp[:, 0], stamp[:, -1]]))
    p0 = [stamp.max() - bg, x, y, 1.3, 1.3, 0.0, bg]
    try:
        res = optimize.least_squares(
            lambda p: (_gauss2d(p, yy, xx) - stamp).ravel(), p0, method="lm", max_nfev=400
        )
    except Exception:
        return None
    sx, sy = abs(res.x[3]), abs(res.x[4])
    if not res.success or not (0.3 < sx < 6 and 0.3 < sy < 6):
        return None
    return 2.3548 * max(sx, sy), 2.3548 * min(sx, sy)


def score(
    image: np.ndarray, truth: dict, band: str = "L", single: np.ndarray | None = None, frame_to_image=None
) -> dict:
    """Quality metrics of ``image`` (mono, any scale/offset) against ``truth`` (see module doc).

    ``single`` is a registered single frame (same geometry) for the noise gain; ``frame_to_image``
    maps a truth frame index to its 2×3 frame->image matrix for artefact residuals (default: from
    the fitted sky->image and the truth's sky->frame matrices).
    """
    image = np.nan_to_num(np.asarray(image, np.float32))
    h, w = image.shape
    stars = truth["stars"]
    frames = [f for f in truth["frames"] if f["filter"] == band]
    exposure = frames[0]["exposure"]
    m = sky_to_image(image, truth, band)
    xy = apply(m, np.column_stack([stars["x"], stars["y"]]))
    flux_e = stars[band] * exposure * np.mean([f["transparency"] for f in frames])  # e- per frame
    true_fwhm = float(np.sqrt(np.mean([f["fwhm"] ** 2 for f in frames])))
    inside = (xy[:, 0] > 20) & (xy[:, 0] < w - 20) & (xy[:, 1] > 20) & (xy[:, 1] < h - 20)

    bkg = _background(image)
    sub = image - bkg.back()
    mask = _star_mask(image.shape, xy, flux_e, true_fwhm)

    # isolated stars: no brighter-than-1% neighbour within 12 px
    tree = cKDTree(xy)
    iso = np.array(
        [
            all(flux_e[j] < 0.01 * flux_e[i] for j in tree.query_ball_point(p, 12) if j != i)
            for i, p in enumerate(xy)
        ]
    )
    sat_limit = 0.5 * 65535 * 2 * np.pi * (true_fwhm / 2.3548) ** 2  # well below saturation in a frame
    phot = inside & iso & (flux_e > 3000) & (flux_e < sat_limit)
    r_ap = 2.5 * true_fwhm
    f_img, _, _ = sep.sum_circle(sub, xy[phot, 0], xy[phot, 1], r_ap, subpix=5)
    # aperture correction for a Gaussian of the true FWHM
    ap_frac = 1 - np.exp(-(r_ap**2) / (2 * (true_fwhm / 2.3548) ** 2))
    ratio = f_img / (flux_e[phot] * ap_frac)
    k = float(np.median(ratio))
    bright = flux_e[phot] > 20000
    rel = ratio[bright] / k if bright.sum() >= 5 else ratio / k
    phot_scatter = float(mad_sigma(rel))

    noise_e = _binned_noise(sub, mask) / k

    fits_ = [fit_psf(sub, x, y) for x, y in xy[phot & (flux_e > 20000)][:60]]
    fits_ = np.array([f for f in fits_ if f is not None])
    fwhm = float(np.median(np.sqrt(fits_[:, 0] * fits_[:, 1]))) if len(fits_) else float("nan")
    ellip = float(np.median(1 - fits_[:, 1] / fits_[:, 0])) if len(fits_) else float("nan")

    sky_level = float(np.median(image[~mask]))
    flatness = _flatness(image, mask) / sky_level if sky_level > 0 else float("nan")

    faint = inside & (flux_e < 500)
    det = detect_stars(image, 3.0, min_fwhm=1.0)
    if len(det):
        d, _ = cKDTree(np.column_stack([det["x"], det["y"]])).query(xy[faint])
        completeness_sep = float(np.mean(d < 1.5))
    else:
        completeness_sep = 0.0
    psf_fwhm = fwhm if np.isfinite(fwhm) else true_fwhm
    point_noise, completeness = _matched_filter(
        sub, mask, xy, flux_e, phot & (flux_e < 20000), faint, psf_fwhm
    )

    result = {
        "stars_used": int(phot.sum()),
        "scale_k": k,
        "noise_e": float(noise_e),
        "fwhm": fwhm,
        "true_fwhm": true_fwhm,
        "fwhm_ratio": fwhm / true_fwhm,
        "ellipticity": ellip,
        "phot_scatter": phot_scatter,
        "flatness": float(flatness),
        "point_noise": point_noise,
        "completeness": completeness,
        "completeness_sep": completeness_sep,
    }
    if single is not None:
        single_scores = score(single, truth, band)
        result["noise_gain"] = single_scores["noise_e"] / result["noise_e"]
        result["single_completeness"] = single_scores["completeness"]
    result.update(_artefacts(sub, truth, band, m, k, mask, len(frames)))
    return result


def _matched_filter(sub, mask, xy, flux_e, calib, faint, fwhm, threshold=5.0):
    """Point-source noise (e- per frame) and faint-star completeness from a matched filter.

    The background-subtracted image is correlated with a Gaussian of the image's own FWHM; its
    robust sigma over star-free pixels, divided by the filter's response per truth electron
    (median over the ``calib`` stars), is the noise of a PSF-weighted flux.
    """
    s = fwhm / 2.3548
    filt = ndimage.gaussian_filter(sub.astype(np.float64), s, truncate=3.0)
    free = ~ndimage.binary_dilation(mask, iterations=int(3 * s) + 2)
    border = 20
    free[:border], free[-border:], free[:, :border], free[:, -border:] = False, False, False, False
    v = filt[free]
    sigma = float(mad_sigma(v))
    response = ndimage.map_coordinates(filt, [xy[calib, 1], xy[calib, 0]], order=1) / flux_e[calib]
    point_noise = sigma / float(np.median(response)) if calib.any() else float("nan")
    peaks = (filt == ndimage.maximum_filter(filt, 3)) & (filt > threshold * sigma)
    py, px = np.nonzero(peaks)
    if not len(px) or not faint.any():
        return point_noise, 0.0
    d, _ = cKDTree(np.column_stack([px, py])).query(xy[faint])
    return point_noise, float(np.mean(d < 1.5))


def _binned_noise(sub, mask, b=4):
    h, w = sub.shape
    h, w = h // b * b, w // b * b
    s = sub[:h, :w].reshape(h // b, b, w // b, b)
    mk = mask[:h, :w].reshape(h // b, b, w // b, b).any(axis=(1, 3))
    binned = s.mean(axis=(1, 3))[~mk]
    return mad_sigma(binned) * b


def _flatness(image, mask, tile=64):
    h, w = image.shape
    meds, ys, xs = [], [], []
    for y in range(0, h - tile + 1, tile):
        for x in range(0, w - tile + 1, tile):
            t = image[y : y + tile, x : x + tile][~mask[y : y + tile, x : x + tile]]
            if t.size > tile * tile // 4:
                meds.append(np.median(t))
                ys.append(y + tile / 2)
                xs.append(x + tile / 2)
    meds, ys, xs = map(np.asarray, (meds, ys, xs))
    a = np.column_stack([np.ones_like(xs), xs, ys])
    coef, *_ = np.linalg.lstsq(a, meds, rcond=None)
    return float(np.std(meds - a @ coef))


def _artefacts(sub, truth, band, sky_to_img, k, mask, n):
    """Mean residual / expected-if-kept for trails, cosmic rays and hot pixels."""
    h, w = sub.shape
    frames = [f for f in truth["frames"] if f["filter"] == band]
    trail_res, cr_res, hot_res = [], [], []
    hot = np.load(truth["_dir"] + "/truth/hot_pixels.npy") if "_dir" in truth else None
    dark = np.load(truth["_dir"] + "/truth/dark_current.npy") if "_dir" in truth else None
    for f in frames:
        f2i = _affine(sky_to_img) @ np.linalg.inv(_affine(f["sky_to_frame"]))
        if f["trail"]:
            t = f["trail"]
            ts = np.linspace(0.05, 0.95, 400)
            pts = np.column_stack([t["x0"] + ts * (t["x1"] - t["x0"]), t["y0"] + ts * (t["y1"] - t["y0"])])
            p = np.round(pts @ f2i[:2, :2].T + f2i[:2, 2]).astype(int)
            ok = (p[:, 0] >= 0) & (p[:, 0] < w) & (p[:, 1] >= 0) & (p[:, 1] < h)
            p = p[ok]
            ok = ~mask[p[:, 1], p[:, 0]]
            expected = t["rate"] * f["exposure"] * k / n
            trail_res.append(np.median(sub[p[ok, 1], p[ok, 0]]) / expected)
        hits = np.asarray(f["cosmics"], float)
        if len(hits):
            p = np.round(hits[:, 1::-1] @ f2i[:2, :2].T + f2i[:2, 2]).astype(int)
            ok = (p[:, 0] >= 0) & (p[:, 0] < w) & (p[:, 1] >= 0) & (p[:, 1] < h)
            p, e = p[ok], hits[ok, 2]
            ok = ~mask[p[:, 1], p[:, 0]]
            cr_res.append(np.sum(sub[p[ok, 1], p[ok, 0]]) / (np.sum(e[ok]) * k / n))
        if hot is not None:
            yx = np.argwhere(hot & (dark * f["exposure"] > 300))
            p = np.round(yx[:, ::-1] @ f2i[:2, :2].T + f2i[:2, 2]).astype(int)
            ok = (p[:, 0] >= 0) & (p[:, 0] < w) & (p[:, 1] >= 0) & (p[:, 1] < h)
            p, yx = p[ok], yx[ok]
            ok = ~mask[p[:, 1], p[:, 0]]
            expected = dark[yx[ok, 0], yx[ok, 1]] * f["exposure"] * k / n
            hot_res.append(np.sum(sub[p[ok, 1], p[ok, 0]]) / np.sum(expected))
    return {
        "trail_residual": float(np.mean(trail_res)) if trail_res else float("nan"),
        "cosmic_residual": float(np.mean(cr_res)) if cr_res else float("nan"),
        "hot_residual": float(np.mean(hot_res)) if hot_res else float("nan"),
    }
