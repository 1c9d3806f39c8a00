"""Stages ``reference`` and ``register``: the target's registration reference, chosen from the
measurements of its reference filter, and the registration of one chunk onto it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from .. import records
from ..io import FrameError, atomic_path, copy_wcs, read_header, read_image, write_fits
from ..tables import number, read_chunk_tables, read_tsv, write_tsv

log = logging.getLogger("astroflow")


def choose_reference(calibrated_dirs: list[str], cfg: dict) -> dict:
    """The registration reference among the lights of ``calibrated_dirs`` (the chunks of the
    target's reference filter, chosen by the plan): the best SSWEIGHT of subframe selection
    (:mod:`astroflow.subframes`, ``cfg['subframes']``) among the lights with 3 stars or more, or
    the user's ``subframes.reference``. A pure function of those files, so every register job
    computes it and no job waits for a separate reference step; :func:`reference` records it.
    Without any such light it is ``{"path": None, "reason": ...}``: every light of the target is
    then excluded with that reason, and listed in frames.tsv."""
    from .. import subframes

    ok = [
        r
        for r in read_chunk_tables(calibrated_dirs, "measure.tsv")
        if r["status"] == "ok" and (r.get("stars") or 0) >= 3
    ]
    if not ok:
        return {
            "path": None,
            "reason": "no registration reference: no calibrated light of the reference filter has 3 or more stars",
        }
    ok.sort(key=lambda r: r["path"])
    weights, _ = subframes.select(ok, cfg["subframes"])
    i = subframes.best(ok, weights, cfg["subframes"]["reference"])
    best = ok[i]
    stars = np.load(Path(best["dir"]) / "stars.npz")[best["file"]]
    return {
        "path": best["path"],
        "file": str(Path(best["dir"]) / best["file"]),
        "ssweight": float(weights[i]),
        "fwhm": number(best.get("fwhm")),
        "stars": stars[:, :3].tolist(),  # x, y, flux
    }


def reference(calibrated_dirs: list[str], out: str | Path, cfg: dict) -> dict:
    """Write ``reference.json``: the reference :func:`choose_reference` picks, and why. Its paths
    are relative (the light's to the data folder, its calibrated file's to the target's results),
    so the record does not depend on where the night or the results are."""
    ref = choose_reference(calibrated_dirs, cfg)
    record = (
        {**ref, "file": Path(ref["file"]).relative_to(Path(out).parent).as_posix()} if ref["path"] else ref
    )
    if not ref["path"]:
        log.error("%s", ref["reason"])
    with atomic_path(out) as tmp:
        Path(tmp).write_text(json.dumps(record, indent=1))
    return record


# ---------------------------------------------------------------------------------------------
# Registration of a chunk


def register(calibrated_dir, reference_dirs: list[str], out_dir, cfg: dict) -> None:
    """Register every measured light of a chunk onto the target's reference (chosen from the
    reference filter's ``reference_dirs``, :func:`choose_reference`); write ``<stem>_r.fits`` and
    ``registration.tsv`` (the chunk's ``measure.tsv`` rows with the registration's columns)."""
    from .. import register as reg_lib

    calibrated_dir, out_dir = Path(calibrated_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ref = choose_reference(reference_dirs, cfg)
    if not ref["path"]:
        rows = [
            {
                **r,
                "reg_status": "excluded",
                "reg_reason": ref["reason"] if r["status"] == "ok" else "not calibrated",
            }
            for r in read_tsv(calibrated_dir / "measure.tsv")
        ]
        log.error("%s: %s", calibrated_dir, ref["reason"])
        return _write_registration(rows, out_dir)
    ref_stars = np.asarray(ref["stars"], float)
    ref_xy = ref_stars[:, :2]
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
                raise reg_lib.RegistrationError(
                    f"size {img.shape[-2:][::-1]} differs from the reference {shape[::-1]}"
                )
            if str(src_path) == ref["file"]:
                reg = reg_lib.Registration(
                    np.array([[1.0, 0, 0], [0, 1.0, 0]]), len(ref_xy), 0.0, "reference"
                )
            else:
                xy = stars[row["file"]][:, :2]
                reg = reg_lib.register(
                    ref_xy,
                    xy,
                    rc["transform"],
                    rc["min_matches"],
                    images=lambda img=img: (reference_luminance(), luminance(img)),
                )
                if reg.rms > rc["max_rms"]:
                    raise reg_lib.RegistrationError(
                        f"star residual {reg.rms:.2f} px exceeds max_rms {rc['max_rms']} px"
                    )
            out = reg_lib.warp(img, reg.matrix, shape, rc["clamping"], rc["interpolation"])
            name = row["file"].replace("_c.fits", "_r.fits")
            header["HISTORY"] = f"registered to {Path(ref['path']).name} ({reg.method}, {reg.matches} stars)"
            copy_wcs(ref_header, header)
            write_fits(out_dir / name, out, header)
            a = reg.matrix
            scale = 1.0 if reg.method == "reference" else reg_lib.flux_scale(ref_stars, stars[row["file"]], a)
            rec.update(
                flux_scale=round(scale, 6),
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
        except (reg_lib.RegistrationError, FrameError) as exc:
            rec["reg_reason"] = f"{row['path']}: cannot register: {exc}"
            log.error("excluded %s", rec["reg_reason"])
    _write_registration(rows, out_dir)


def _write_registration(rows: list[dict], out_dir: Path) -> None:
    columns = {**records.MEASURE, **records.REGISTRATION}
    write_tsv([records.check(r, columns) for r in rows], out_dir / "registration.tsv")
