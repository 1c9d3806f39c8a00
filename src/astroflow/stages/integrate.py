"""Stage ``integrate``: one filter's calibrated lights registered onto the target's reference,
then integrated, resampled band by band as they are read, into its integration, rejection maps
and coverage map; its registration table is written on the way."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from astropy.io import fits

from .. import records
from ..io import STACK_KEYWORDS, FitsWriter, add_history, copy_wcs, read_header
from ..tables import number

log = logging.getLogger("astroflow")


def integrate(
    calibrated_dirs: list[str],
    reference_dirs: list[str],
    filt: str,
    outputs: dict,
    cfg: dict,
    history: list[str],
    memory_mb: float,
) -> dict:
    """Register the filter's lights of ``calibrated_dirs`` onto the reference chosen among
    ``reference_dirs`` (:func:`astroflow.stages.register.register_lights`; frames.tsv records
    the same registration) and integrate them into image, rejection and coverage maps.

    Frames are resampled and read band by band within ``memory_mb`` MB (the result does not
    depend on it); they are combined in the order of their paths, whatever chunks they came in."""
    from .. import integrate as lib
    from .. import subframes
    from ..kernels import get_threads
    from .register import register_lights, registered_rows

    rows, reference = register_lights(calibrated_dirs, reference_dirs, cfg, workers=get_threads())
    ok = sorted((r for r in rows if r.get("reg_status") == "ok"), key=lambda r: r["path"])
    if not ok:
        return _empty(filt, "no frame could be calibrated and registered", reference, outputs, history)
    ssweight, reasons = subframes.select(ok, cfg["subframes"])
    for r, why in zip(ok, reasons, strict=True):
        if why:
            log.warning("%s: %s", r["path"], why)
    ssweight = np.array([w for w, why in zip(ssweight, reasons, strict=True) if not why])
    ok = [r for r, why in zip(ok, reasons, strict=True) if not why]
    if not ok:
        return _empty(filt, "subframe selection rejected every frame", reference, outputs, history)
    ic = cfg["integration"]
    n = len(ok)
    channels = sum(
        1
        for c in range(records.CHANNELS)
        if all(r.get(records.per_channel("scale", c)) is not None for r in ok)
    )
    noise, scale, loc = (
        np.array([[number(r[records.per_channel(k, c)]) for c in range(channels)] for r in ok])
        for k in ("noise", "scale", "background")
    )
    normalization = ic["normalization"]
    if normalization == "auto":  # the sky's spread says nothing of the stars of another exposure
        normalization = "photometric" if len({r["exptime"] for r in ok}) > 1 else "additive_scaling"
    if normalization == "photometric":
        scale, normalization = _photometric_scale(ok, scale), "additive_scaling"
    w = (
        ssweight / ssweight.max()
        if ic["weights"] == "ssweight"
        else lib.frame_weights(noise, scale, ic["weights"])
    )
    ref = subframes.best(ok, ssweight)  # the best SSWEIGHT: the normalisation reference
    method = ic["rejection"]
    if method in ("auto", "auto1", "auto2"):
        method = lib.auto_rejection(max(n, 3), method)
    low, high = ic["params"][method] if method in ic["params"] else lib.DEFAULT_PARAMS[method]
    norms = [lib.FrameNorm(loc[i], scale[i], float(w[i])) for i in range(n)]
    grid = read_header(reference["file"])  # the reference's grid and WCS
    shape = (int(grid["NAXIS2"]), int(grid["NAXIS1"]))
    sources = [registered_rows(Path(r["dir"]) / r["file"], r, shape, cfg) for r in ok]
    if n < 3:
        log.warning("filter %s: only %d frame(s): averaged without rejection", filt, n)
    head = read_header(Path(ok[ref]["dir"]) / ok[ref]["file"])
    h = fits.Header()
    for key in STACK_KEYWORDS:
        if key in head:
            h[key] = head[key]
    copy_wcs(grid, h)
    h["IMAGETYP"] = "Master light"
    h["FILTER"] = filt
    exps = np.array([float(r["exptime"]) for r in ok])
    h["EXPTIME"] = (float(np.median(exps)), "[s] single-frame exposure (median)")
    h["EXPTOTAL"] = (float(np.sum(exps)), "[s] total integrated exposure")
    h["NCOMBINE"] = (n, "frames integrated")
    h["FWHMMED"] = (
        float(np.nanmedian([number(r.get("fwhm")) for r in ok])),
        "[px] median FWHM of integrated frames",
    )
    h["REJECT"] = (method if n >= 3 else "none", "pixel rejection")
    h["NORMALIZ"] = (ic["normalization"], "normalisation (auto: photometric for mixed exposures)")
    h["WEIGHTS"] = (ic["weights"], "frame weighting")
    h["REFFRAME"] = (Path(ok[ref]["path"]).name[:68], "normalisation reference")
    add_history(h, history)
    shape = sources[0].shape
    log.info("filter %s: %d frames registered onto %s and integrated", filt, n, Path(reference["path"]).name)
    bands = lib.integrate_bands(
        sources,
        norms,
        method if n >= 3 else "none",
        low,
        high,
        normalisation=normalization,
        reference=ref,
        memory_mb=memory_mb,
        combine=ic["combination"],
        grow=ic["grow"] if n >= 3 else 0,
        grow_sigma=ic["grow_sigma"],
        grow_seed=ic["grow_seed"],
    )
    # the four maps are written band by band as they are made: memory stays at one band (two
    # with a job's threads: a band is written while the next is integrated)
    with (
        FitsWriter(outputs["image"], shape, h) as w_image,
        FitsWriter(outputs["rejection_low"], shape, h) as w_lo,
        FitsWriter(outputs["rejection_high"], shape, h) as w_hi,
        FitsWriter(outputs["coverage"], shape[-2:], h) as w_cov,
        ThreadPoolExecutor(1) as writer,
    ):
        squeeze = (lambda a: a[0]) if len(shape) == 2 else (lambda a: a)  # noqa: E731

        def write(y0, image, rej_lo, rej_hi, coverage):
            w_image.write_rows(y0, squeeze(image))
            w_lo.write_rows(y0, squeeze(rej_lo))
            w_hi.write_rows(y0, squeeze(rej_hi))
            w_cov.write_rows(y0, coverage)

        background, pending = get_threads() > 1, None
        for y0, _, *maps in bands:
            if pending is not None:
                pending.result()
            pending = writer.submit(write, y0, *maps) if background else write(y0, *maps)
        if pending is not None:
            pending.result()
    return {"frames": n, "rejection": method, "reference": ok[ref]["path"]}


def empty_reason(header) -> str | None:
    """Why an integration holds no frame (:func:`_empty`), or None for a real one."""
    return header.get("EMPTYWHY") if header.get("NCOMBINE", 1) == 0 else None


def _empty(filt: str, why: str, reference: dict, outputs: dict, history: list[str]) -> dict:
    """An integration of no frame: NCOMBINE = 0, zero coverage, the reason in EMPTYWHY, on the
    reference's grid (1×1 without one). It keeps the night going: the common area and the
    images that do not need this filter are made without it; crop_channel stops those that do,
    naming it (:func:`empty_reason`). Every light's reason is in frames.tsv."""
    from ..io import FitsRows

    log.error("filter %s: %s (see frames.tsv); the images that need it are not made", filt, why)
    shape = FitsRows(reference["file"]).shape if reference.get("path") else (1, 1)
    h = fits.Header()
    h["IMAGETYP"] = "Master light"
    h["FILTER"] = filt
    h["NCOMBINE"] = (0, "frames integrated: none")
    h["EMPTYWHY"] = (f"filter {filt}: {why}"[:68], "why no frame was integrated")
    add_history(h, history)
    for key in ("image", "rejection_low", "rejection_high", "coverage"):
        size = shape[-2:] if key == "coverage" else shape
        with FitsWriter(outputs[key], size, h) as w:
            w.write_rows(0, np.zeros(size, np.float32))
    return {"frames": 0, "rejection": "none", "reference": None}


def _photometric_scale(rows: list[dict], sky_scale: np.ndarray) -> np.ndarray:
    """Per frame and channel, the scale that puts its stars on the registration reference's
    flux (1 / ``flux_scale`` of registration.tsv): frames of other exposures, transparency or
    sessions, even with another pedestal, then agree where it matters, on the stars, and the
    noise weights become 1 / (noise × flux ratio)², the inverse variance on that common scale.
    A frame whose stars did not pair up keeps its sky scale, related to the others' through the
    median ratio of the two."""
    fs = np.array([number(r.get("flux_scale")) for r in rows], float)
    valid = np.isfinite(fs) & (fs > 0)
    if not valid.any():
        log.warning("no frame has a photometric scale: sky scales used")
        return sky_scale
    phot = (1 / np.where(valid, fs, 1))[:, None] * np.ones(sky_scale.shape[1])
    k = np.median(phot[valid] / sky_scale[valid], axis=0)
    return np.where(valid[:, None], phot, sky_scale * k)


def adopt(path, filt: str, outputs: dict, history: list[str]) -> None:
    """Take a stack made elsewhere (WBPP, Siril, AutoIntegrate) as the filter's integration:
    the image as it is, a coverage map of its NCOMBINE (1 if unknown) everywhere, so the common
    area is the whole image, and empty rejection maps."""
    from ..io import read_image

    image, header, _ = read_image(path)
    h = header.copy()  # FitsWriter replaces its structural cards
    h["FILTER"] = filt
    h["IMAGETYP"] = "Master light"
    h["HISTORY"] = f"integration made elsewhere: {Path(path).name}"[:70]
    add_history(h, history)
    frames = np.float32(header.get("NCOMBINE", 1) or 1)
    with (
        FitsWriter(outputs["image"], image.shape, h) as w_image,
        FitsWriter(outputs["rejection_low"], image.shape, h) as w_lo,
        FitsWriter(outputs["rejection_high"], image.shape, h) as w_hi,
        FitsWriter(outputs["coverage"], image.shape[-2:], h) as w_cov,
    ):
        w_image.write_rows(0, image)
        zeros = np.zeros(image.shape, np.float32)
        w_lo.write_rows(0, zeros)
        w_hi.write_rows(0, zeros)
        w_cov.write_rows(0, np.full(image.shape[-2:], frames, np.float32))
