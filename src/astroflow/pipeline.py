"""The pipeline's stages as functions over files: one call per Snakemake job.

Each stage reads its inputs, writes its outputs atomically and records every decision (excluded
frames and why) in a TSV next to its images, so ``frames.tsv`` can be assembled at the end and a
later ``astroflow live`` can call the same functions on a watched folder. Per-frame work is done
in chunks (one job per chunk of frames), never one job per frame.

Modules a stage alone needs (numba kernels, pandas, scipy) are imported inside it: every job
pays the imports of this module, and a small night's run is mostly job start-ups.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from . import __version__, cosmetic, measure
from .calibrate import calibrate_light
from .io import (
    FitsRows,
    FitsWriter,
    FrameError,
    add_history,
    atomic_path,
    copy_wcs,
    read_extension,
    read_header,
    read_image,
    write_fits,
)
from .tables import number, read_chunk_tables, read_tsv, write_tsv

log = logging.getLogger("astroflow")


def setup_logging(path: str | Path, threads: int = 1) -> None:
    """Send the library's log (and warnings) to a job's log file, and keep OpenCV's and numba's
    thread pools to the job's ``threads`` (Snakemake's budget); used by the Snakemake scripts."""
    import cv2

    threads = max(1, int(threads))
    cv2.setNumThreads(threads)
    os.environ["NUMBA_NUM_THREADS"] = str(threads)  # read when numba is imported
    if "numba" in sys.modules:
        from .integrate import set_threads

        set_threads(threads)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        filename=str(path), level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True
    )
    logging.captureWarnings(True)


def _stem(path: str) -> str:
    name = Path(path).name
    for suffix in (".fits.fz", ".fit.fz", ".fits", ".fit", ".fts", ".xisf", ".fz"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def _write_frame(df, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False)


# ---------------------------------------------------------------------------------------------
# Masters

DEFECTS = "DEFECTS"  # extension of a master dark or flat: its defect map (cosmetic codes)


def _integrate_master(spec: dict, deps: dict, cfg: dict):
    """``(data, header, notes)`` of a master from its frames; the masters it is calibrated with
    (bias, flat-dark) are integrated here too, from ``deps`` (name -> spec), with the same
    function: bit-identical to their own files, and no master job waits for another."""
    from .calibrate import master

    with_ = spec.get("calibrate_with", {})
    bias = _integrate_master(deps[with_["bias"]], deps, cfg)[0] if with_.get("bias") else None
    dark = _integrate_master(deps[with_["dark"]], deps, cfg)[0] if with_.get("dark") else None
    return master(
        spec["files"],
        spec["kind"],
        cfg["calibration"]["master_rejection"],
        bias=bias,
        dark=dark,  # flat-darks share the flats' exposure: subtracted as is
        memory_mb=cfg["integration"]["memory_mb"],
    )


def build_master(name: str, spec: dict, deps: dict, out: str | Path, cfg: dict) -> None:
    """Integrate one master (``spec`` from the plan; ``deps`` the specs of the masters it is
    calibrated with) and write it to ``out``.

    A master dark carries its hot/cold pixel map, a master flat its dead pixels, in a
    ``DEFECTS`` image extension (uint8, :mod:`astroflow.cosmetic` codes): found once per master,
    applied to every light calibrated with it.
    """
    data, header, notes = _integrate_master(spec, deps, cfg)
    for note in notes:
        log.warning("%s: %s", name, note)
        header["HISTORY"] = note[:70]
    header["HISTORY"] = f"astroflow {__version__}"
    extensions = {}
    if spec["kind"] in ("dark", "flat") and data.ndim == 2:
        cc = cfg["cosmetic"]
        is_dark = spec["kind"] == "dark"
        defects = cosmetic.bad_pixel_map(
            data if is_dark else None,
            None if is_dark else data,
            cc["hot_sigma"],
            cc["cold_sigma"],
            cfa=bool(spec.get("cfa")),
        )
        header["HOT"] = (int((defects == cosmetic.HOT).sum()), "hot pixels (DEFECTS extension)")
        header["COLD"] = (int((defects == cosmetic.COLD).sum()), "cold pixels (DEFECTS extension)")
        header["HISTORY"] = f"defects: hot sigma {cc['hot_sigma']}, cold sigma {cc['cold_sigma']}"
        extensions[DEFECTS] = defects
    write_fits(out, data, header, extensions=extensions)


# ---------------------------------------------------------------------------------------------
# Calibration + measurement of a chunk of lights


def _saturation_level(header) -> float:
    for key in ("SATURATE", "DATAMAX"):
        if header.get(key):
            return float(header[key]) * 0.98
    return 65535.0 * 0.98


def calibrate_chunk(rows: list[dict], masters_dir, out_dir, cfg: dict) -> None:
    """Calibrate, correct, debayer and measure each light of a chunk.

    Each light's bad pixels are the defects of its master dark and flat (their ``DEFECTS``
    extensions) plus, with ``cosmetic.auto_detect``, the isolated ones found in the light.
    Writes ``<stem>_c.fits``, ``stars.npz`` and ``measure.tsv`` (one row per light, with
    ``status`` = ok/excluded and a ``reason``) into ``out_dir``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    masters_dir = Path(masters_dir)
    cache: dict[str, tuple] = {}

    def load(name):
        if name not in cache:
            path = masters_dir / f"{name}.fits"
            data, header, _ = read_image(path)
            cache[name] = (data, header, read_extension(path, DEFECTS))
        return cache[name]

    cc, det = cfg["cosmetic"], cfg["registration"]
    records, stars_out = [], {}
    for row in rows:
        rec = {
            "index": row["index"],
            "path": row["path"],
            "exptime": row["exptime"],
            "file": "",
            "status": "excluded",
            "reason": "",
        }
        t0 = time.perf_counter()
        try:
            raw, header, _ = read_image(row["path"])
            if raw.ndim != 2:
                raise FrameError(f"{row['path']}: expected a 2-D raw frame, got shape {raw.shape}")
            nan_frac = float(np.mean(~np.isfinite(raw)))
            if nan_frac > 0.5:
                raise FrameError(f"{row['path']}: {nan_frac:.0%} of pixels are NaN")
            saturated = raw >= _saturation_level(header)
            bias = load(row["bias"])[0] if row.get("bias") else None
            dark = None
            defects = [load(row[k])[2] for k in ("dark", "flat") if row.get(k)]
            if row.get("dark"):
                d, dh, _ = load(row["dark"])
                dark = (d, float(dh.get("EXPTIME", row["exptime"])), "B" not in str(dh.get("CALSTAT", "")))
            flat = load(row["flat"])[0] if row.get("flat") else None
            for name, m in (("bias", bias), ("flat", flat), ("dark", dark[0] if dark else None)):
                if m is not None and m.shape != raw.shape:
                    raise FrameError(f"{row['path']}: size {raw.shape} differs from master {name} {m.shape}")
            img = calibrate_light(raw, row["exptime"], bias, dark, flat)
            del raw  # only the saturation map is needed from here on
            cfa = bool(row.get("bayer"))
            bad = np.zeros(img.shape, np.uint8)
            for m in defects:
                if m is not None:
                    np.maximum(bad, m, out=bad)
            noise = measure.noise_sigma(img)  # defects are clipped out of it: valid after repair too
            if cc["enabled"] and cc["auto_detect"]:
                bad |= cosmetic.isolated_defects(img, cc["auto_sigma"], noise, cfa=cfa)
            if cc["enabled"]:
                img = cosmetic.correct(img, bad, cfa=cfa)
            else:
                img = cosmetic.correct(img, np.zeros(img.shape, np.uint8), cfa=cfa)  # NaNs only
            if cfa:
                from .debayer import debayer, effective_pattern

                pattern = effective_pattern(
                    row["bayer"],
                    int(header.get("XBAYROFF", 0) or 0),
                    int(header.get("YBAYROFF", 0) or 0),
                    str(header.get("ROWORDER", "TOP-DOWN")),
                    img.shape[0],
                )
                img = debayer(img, pattern, cfg["debayer"]["method"])
                lum = img.mean(axis=0)
            else:
                lum = img
            stars = measure.detect_stars(lum, det["detection_sigma"], saturated=saturated)
            planes = img if img.ndim == 3 else img[None]
            stats = measure.frame_stats(lum, stars, None if cfa else noise)
            per_channel = [measure.frame_stats(p, stars[:0]) for p in planes] if img.ndim == 3 else [stats]
            out_name = f"{_stem(row['path'])}_c.fits"
            hdr = header.copy()
            hdr["HISTORY"] = (
                f"astroflow {__version__}: calibrated ({', '.join(k for k in ('bias', 'dark', 'flat') if row.get(k)) or 'no masters'})"
            )
            if cfa:
                hdr["HISTORY"] = f"debayered {pattern} ({cfg['debayer']['method']})"
                for key in ("BAYERPAT", "XBAYROFF", "YBAYROFF"):
                    hdr.remove(key, ignore_missing=True)
            write_fits(out_dir / out_name, img, hdr)
            stars_out[out_name] = np.column_stack([stars["x"], stars["y"], stars["flux"]])
            rec.update(file=out_name, status="ok", bad_pixels=int(np.count_nonzero(bad)))
            rec.update(
                {k: v for k, v in stats.as_dict().items() if k not in ("background", "scale", "noise")}
            )
            for c, st in enumerate(per_channel):
                rec[f"background_{c}"], rec[f"scale_{c}"], rec[f"noise_{c}"] = (
                    st.background,
                    st.scale,
                    st.noise,
                )
        except FrameError as exc:
            rec["reason"] = str(exc)
            log.error("excluded %s", exc)
        rec["seconds"] = round(time.perf_counter() - t0, 3)
        records.append(rec)
    with atomic_path(out_dir / "stars.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **stars_out)
    write_tsv(records, out_dir / "measure.tsv")


# ---------------------------------------------------------------------------------------------
# Reference choice


def choose_reference(calibrated_dirs: list[str]) -> dict:
    """Pick the registration reference among all calibrated lights of a target.

    The filter with the most stars (median per frame) is preferred; within it, among frames with
    at least 90 % of the best star count, the best AutoIntegrate 'Generic' weight (FWHM,
    eccentricity, SNR). A pure function of the chunks' ``measure.tsv``: every register job
    computes it (no job waits for a separate reference step) and :func:`write_reference` records it.
    """
    ok = [
        r
        for r in read_chunk_tables(calibrated_dirs, "measure.tsv")
        if r["status"] == "ok" and (r.get("stars") or 0) >= 3
    ]
    if not ok:
        raise RuntimeError("no calibrated light has 3 or more stars: nothing can be registered")
    by_filter: dict[str, list[dict]] = {}
    for r in ok:
        by_filter.setdefault(Path(r["dir"]).name.rsplit("_", 1)[0], []).append(r)
    medians = {f: float(np.median([r["stars"] for r in rs])) for f, rs in sorted(by_filter.items())}
    best_filter = max(medians, key=medians.get)  # first of equals, in name order
    cand = by_filter[best_filter]
    stats = [{k: number(r.get(k)) for k in ("fwhm", "eccentricity", "snr")} for r in cand]
    weights = measure.generic_weight(stats)
    # a reference must show the stars the others share: only frames near the best star count
    most = max(r["stars"] for r in cand)
    pool = [(w, r) for w, r in zip(weights, cand, strict=True) if r["stars"] >= 0.9 * most]
    weight, best = min(pool, key=lambda wr: (-wr[0], wr[1]["path"]))
    stars = np.load(Path(best["dir"]) / "stars.npz")[best["file"]]
    return {
        "path": best["path"],
        "file": str(Path(best["dir"]) / best["file"]),
        "filter": best_filter,
        "weight": float(weight),
        "fwhm": number(best.get("fwhm")),
        "stars": stars[:, :2].tolist(),
    }


def write_reference(calibrated_dirs: list[str], out: str | Path) -> dict:
    """Write ``reference.json``: the reference :func:`choose_reference` picks, and why."""
    ref = choose_reference(calibrated_dirs)
    with atomic_path(out) as tmp:
        Path(tmp).write_text(json.dumps(ref, indent=1))
    return ref


# ---------------------------------------------------------------------------------------------
# Registration of a chunk


def register_chunk(calibrated_dir, calibrated_dirs: list[str], out_dir, cfg: dict) -> None:
    """Register every measured light of a chunk onto the target's reference (chosen from all
    its ``calibrated_dirs``, :func:`choose_reference`); write ``<stem>_r.fits`` and
    ``registration.tsv`` (the chunk's ``measure.tsv`` rows with the registration's columns)."""
    from . import register

    calibrated_dir, out_dir = Path(calibrated_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ref = choose_reference(calibrated_dirs)
    ref_xy = np.asarray(ref["stars"], float)
    ref_header = read_header(ref["file"])
    shape = (int(ref_header["NAXIS2"]), int(ref_header["NAXIS1"]))
    ref_lum = []  # read only if a frame needs phase correlation

    def luminance(img):
        return img.mean(axis=0) if img.ndim == 3 else img

    def reference_luminance():
        if not ref_lum:
            ref_lum.append(luminance(read_image(ref["file"])[0]))
        return ref_lum[0]

    rc = cfg["registration"]
    table = read_tsv(calibrated_dir / "measure.tsv")
    stars = np.load(calibrated_dir / "stars.npz")
    rows = []
    for row in table:
        rec = {**row, "reg_status": "excluded", "reg_reason": "", "registered": ""}
        rows.append(rec)
        if row["status"] != "ok":
            rec["reg_reason"] = "not calibrated"
            continue
        src_path = calibrated_dir / row["file"]
        try:
            img, header, _ = read_image(src_path)
            if img.shape[-2:] != shape:
                raise register.RegistrationError(
                    f"size {img.shape[-2:][::-1]} differs from the reference {shape[::-1]}"
                )
            if str(src_path) == ref["file"]:
                reg = register.Registration(
                    np.array([[1.0, 0, 0], [0, 1.0, 0]]), len(ref_xy), 0.0, "reference"
                )
            else:
                xy = stars[row["file"]][:, :2]
                reg = register.register(
                    ref_xy,
                    xy,
                    rc["transform"],
                    rc["min_matches"],
                    images=lambda img=img: (reference_luminance(), luminance(img)),
                )
                if reg.rms > rc["max_rms"]:
                    raise register.RegistrationError(
                        f"star residual {reg.rms:.2f} px exceeds max_rms {rc['max_rms']} px"
                    )
            out = register.warp(img, reg.matrix, shape, rc["clamping"], rc["interpolation"])
            name = row["file"].replace("_c.fits", "_r.fits")
            header["HISTORY"] = f"registered to {Path(ref['path']).name} ({reg.method}, {reg.matches} stars)"
            copy_wcs(ref_header, header)
            write_fits(out_dir / name, out, header)
            a = reg.matrix
            rec.update(
                reg_status="ok",
                registered=name,
                matches=reg.matches,
                reg_rms=round(reg.rms, 4),
                reg_method=reg.method,
                shift_x=round(float(a[0, 2]), 3),
                shift_y=round(float(a[1, 2]), 3),
                rotation=round(float(np.degrees(np.arctan2(a[1, 0], a[0, 0]))), 4),
                matrix=" ".join(f"{v:.8g}" for v in a.ravel()),
                reference=str(src_path) == ref["file"],
            )
        except (register.RegistrationError, FrameError) as exc:
            rec["reg_reason"] = f"{row['path']}: cannot register: {exc}"
            log.error("excluded %s", rec["reg_reason"])
    write_tsv(rows, out_dir / "registration.tsv")


# ---------------------------------------------------------------------------------------------
# Integration of one filter


def integrate_filter(
    registered_dirs: list[str], filt: str, outputs: dict, cfg: dict, history: list[str]
) -> dict:
    """Integrate all registered frames of one filter; write image, rejection and coverage maps."""
    from . import integrate

    rows = read_chunk_tables(registered_dirs, "registration.tsv")
    ok = sorted((r for r in rows if r.get("reg_status") == "ok"), key=lambda r: r["path"])
    if not ok:
        raise RuntimeError(f"filter {filt}: no frame could be calibrated and registered (see frames.tsv)")
    ic = cfg["integration"]
    n = len(ok)
    channels = sum(1 for c in range(3) if all(r.get(f"scale_{c}") is not None for r in ok))
    noise, scale, loc = (
        np.array([[number(r[f"{k}_{c}"]) for c in range(channels)] for r in ok])
        for k in ("noise", "scale", "background")
    )
    # noise weights on the normalised scale: w = 1 / (noise * s_ref / s_i)^2, up to a constant
    if ic["weights"] == "noise":
        w = 1.0 / np.mean((noise / scale) ** 2, axis=1)
    else:
        w = np.ones(n)
    w = w / w.max()
    ref = int(np.argmax(w))
    method = ic["rejection"]
    if method in ("auto", "auto1", "auto2"):
        method = integrate.auto_rejection(max(n, 3), "auto1" if method == "auto1" else "auto2")
    low, high = ic["params"][method] if method in ic["params"] else integrate.DEFAULT_PARAMS[method]
    norms = [integrate.FrameNorm(loc[i], scale[i], float(w[i])) for i in range(n)]
    sources = [FitsRows(Path(r["dir"]) / r["registered"]) for r in ok]
    if n < 3:
        log.warning("filter %s: only %d frame(s): averaged without rejection", filt, n)
    head = read_header(Path(ok[ref]["dir"]) / ok[ref]["registered"])
    h = fits.Header()
    for key in (
        "OBJECT",
        "INSTRUME",
        "TELESCOP",
        "FOCALLEN",
        "XPIXSZ",
        "XBINNING",
        "YBINNING",
        "GAIN",
        "OFFSET",
    ):
        if key in head:
            h[key] = head[key]
    copy_wcs(head, h)
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
    h["NORMALIZ"] = (ic["normalization"], "normalisation")
    h["WEIGHTS"] = (ic["weights"], "frame weighting")
    h["REFFRAME"] = (Path(ok[ref]["path"]).name[:68], "normalisation reference")
    add_history(h, history)
    shape = sources[0].shape
    bands = integrate.integrate_bands(
        sources,
        norms,
        method if n >= 3 else "none",
        low,
        high,
        normalisation=ic["normalization"],
        reference=ref,
        memory_mb=ic["memory_mb"],
        combine=ic["combination"],
        grow=ic["grow"] if n >= 3 else 0,
        grow_sigma=ic["grow_sigma"],
    )
    # the four maps are written band by band as they are made: memory stays at one band
    with (
        FitsWriter(outputs["image"], shape, h) as w_image,
        FitsWriter(outputs["rejection_low"], shape, h) as w_lo,
        FitsWriter(outputs["rejection_high"], shape, h) as w_hi,
        FitsWriter(outputs["coverage"], shape[-2:], h) as w_cov,
    ):
        squeeze = (lambda a: a[0]) if len(shape) == 2 else (lambda a: a)  # noqa: E731
        for y0, _, image, rej_lo, rej_hi, coverage in bands:
            w_image.write_rows(y0, squeeze(image))
            w_lo.write_rows(y0, squeeze(rej_lo))
            w_hi.write_rows(y0, squeeze(rej_hi))
            w_cov.write_rows(y0, coverage)
    return {"frames": n, "rejection": method, "reference": ok[ref]["path"]}


# ---------------------------------------------------------------------------------------------
# The frame table


def frame_table(classified, registered_dirs: list[str], reference_json, out):
    """Merge classification, calibration, measurement and registration into ``frames.tsv``.

    A light is ``accepted`` only if it was classified, calibrated and registered; ``reason`` holds
    the first problem met.
    """
    import pandas as pd

    tables = [pd.read_csv(Path(d) / "registration.tsv", sep="\t") for d in registered_dirs]
    done = pd.concat(tables, ignore_index=True).drop(columns=["path", "exptime"])
    done = done.rename(columns={"reason": "calibration_reason", "file": "calibrated"})
    table = classified.rename_axis(None).copy()
    table["index"] = table.index
    table = table.merge(done, on="index", how="left")
    ref = json.loads(Path(reference_json).read_text())["path"]
    table["reference"] = table["path"] == ref
    lights = (table["type"] == "light") & table["accepted"]
    for col in ("calibration_reason", "reg_reason"):
        problem = lights & table[col].fillna("").astype(str).ne("")
        table.loc[problem, "reason"] = table.loc[problem, col]
        table.loc[problem, "accepted"] = False
        lights &= ~problem
    table = table.drop(
        columns=["index", "calibration_reason", "reg_reason", "status", "reg_status", "reference_y"],
        errors="ignore",
    )
    table = table.rename(columns={"reference_x": "reference"})
    _write_frame(table, Path(out))
    return table


def run_record(cfg: dict, plan: dict, code: str, config_out, versions_out) -> None:
    """Archive the effective configuration (with the plan) and the versions of the software used."""
    import importlib.metadata as md
    import platform

    import yaml

    with atomic_path(config_out) as tmp:
        Path(tmp).write_text(
            yaml.safe_dump({"astroflow": code, "config": cfg, "plan": plan}, sort_keys=False, width=110)
        )
    rows = [("python", platform.python_version()), ("astroflow", code)]
    for pkg in (
        "numpy",
        "scipy",
        "astropy",
        "astroalign",
        "sep",
        "opencv-python-headless",
        "xisf",
        "tifffile",
        "pandas",
        "snakemake",
    ):
        try:
            rows.append((pkg, md.version(pkg)))
        except md.PackageNotFoundError:
            rows.append((pkg, "not installed"))
    write_tsv([{"package": p, "version": v} for p, v in rows], Path(versions_out))
