"""Stages ``reference`` and ``register``: the target's registration reference, chosen from the
measurements of its reference filter, and the registration of one chunk onto it."""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

import numpy as np

from ..io import FrameError, atomic_path, read_image
from ..tables import number, read_chunk_tables

log = logging.getLogger("astroflow")


def choose_reference(calibrated_dirs: list[str], cfg: dict) -> dict:
    """The registration reference among the lights of ``calibrated_dirs`` (the chunks of the
    target's reference filter, chosen by the plan): the best SSWEIGHT of subframe selection
    (:mod:`astroflow.subframes`, ``cfg['subframes']``) among the lights with 3 stars or more, or
    the user's ``subframes.reference``. A pure function of those files, so every integrate job
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
# Registration of a filter's lights


def register_lights(
    calibrated_dirs: list[str], reference_dirs: list[str], cfg: dict, workers: int = 1
) -> tuple[list[dict], dict]:
    """Register every measured light of ``calibrated_dirs`` (one filter's chunks) onto the
    target's reference (chosen from the reference filter's ``reference_dirs``,
    :func:`choose_reference`) from their star lists alone: milliseconds per frame, the images
    are read only for the phase-correlation fallback. Returns the rows of the registration
    table (``measure.tsv`` rows with :data:`records.REGISTRATION`'s columns, ``dir`` the
    calibrated chunk folder) and the reference. The frames are resampled where they are read,
    by integration (:class:`astroflow.register.WarpedRows`).

    ``workers`` > 1 registers the lights in that many forked processes (star matching is small
    numpy operations that hold the GIL: threads would take turns); the rows are the same."""
    from ..io import FitsRows

    ref = choose_reference(reference_dirs, cfg)
    table = read_chunk_tables(calibrated_dirs, "measure.tsv")
    if not ref["path"]:
        log.error("%s", ref["reason"])
        return [
            {
                **r,
                "reg_status": "excluded",
                "reg_reason": ref["reason"] if r["status"] == "ok" else "not calibrated",
            }
            for r in table
        ], ref
    stars = {d: np.load(Path(d) / "stars.npz") for d in calibrated_dirs}
    todo = [(row, stars[row["dir"]][row["file"]]) for row in table if row["status"] == "ok"]
    global _REFERENCE
    _REFERENCE = (ref, np.asarray(ref["stars"], float), FitsRows(ref["file"]).shape[-2:], cfg["registration"])
    try:
        if workers > 1 and len(todo) >= PARALLEL_FRAMES:
            from concurrent.futures import ProcessPoolExecutor
            from multiprocessing import get_context

            # forked: the workers inherit the reference instead of unpickling it per frame
            with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
                done = list(pool.map(_register_one, todo, chunksize=-(-len(todo) // (4 * workers))))
        else:
            done = [_register_one(t) for t in todo]
    finally:
        _REFERENCE = None
        _reference_luminance.cache_clear()
    registered = iter(done)  # in the table's order, as todo was taken
    rows = [
        next(registered)
        if r["status"] == "ok"
        else {**r, "reg_status": "excluded", "reg_reason": "not calibrated"}
        for r in table
    ]
    return rows, ref


PARALLEL_FRAMES = 8  # matching takes ~30 ms a light, a pool ~50 ms: from 8 lights it pays
_REFERENCE = None  # (reference, its stars, its shape, registration options) while register_lights runs


@functools.cache
def _reference_luminance(path: str):  # read only if a frame needs phase correlation
    return _luminance(path)


def _luminance(path):
    img = read_image(path)[0]
    return img.mean(axis=0) if img.ndim == 3 else img


def _register_one(item) -> dict:
    """The registration-table row of one calibrated light ``(measure.tsv row, its stars)`` onto
    :data:`_REFERENCE`."""
    from .. import register as reg_lib
    from ..io import FitsRows

    row, src_stars = item
    ref, ref_stars, shape, rc = _REFERENCE
    ref_xy = ref_stars[:, :2]
    rec = {**row, "reg_status": "excluded", "reg_reason": ""}
    src_path = str(Path(row["dir"]) / row["file"])
    try:
        size = FitsRows(src_path).shape[-2:]
        if size != shape:
            raise reg_lib.RegistrationError(f"size {size[::-1]} differs from the reference {shape[::-1]}")
        if src_path == ref["file"]:
            reg = reg_lib.Registration(np.array([[1.0, 0, 0], [0, 1.0, 0]]), len(ref_xy), 0.0, "reference")
        else:
            reg = reg_lib.register(
                ref_xy,
                src_stars[:, :2],
                rc["transform"],
                rc["min_matches"],
                images=lambda: (_reference_luminance(ref["file"]), _luminance(src_path)),
                flux=(ref_stars[:, 2], src_stars[:, 2]),
            )
            if reg.rms > rc["max_rms"]:
                raise reg_lib.RegistrationError(
                    f"star residual {reg.rms:.2f} px exceeds max_rms {rc['max_rms']} px"
                )
        a = reg.matrix
        scale = 1.0 if reg.method == "reference" else reg_lib.flux_scale(ref_stars, src_stars, a)
        rec.update(
            flux_scale=round(scale, 6),
            reg_status="ok",
            matches=reg.matches,
            reg_rms=round(reg.rms, 4),
            reg_method=reg.method,
            shift_x=round(float(a[0, 2]), 3),
            shift_y=round(float(a[1, 2]), 3),
            rotation=round(float(np.degrees(np.arctan2(a[1, 0], a[0, 0]))), 4),
            matrix=reg_lib.matrix_text(a),
            reference=src_path == ref["file"],
        )
    except (reg_lib.RegistrationError, FrameError) as exc:
        rec["reg_reason"] = f"{row['path']}: cannot register: {exc}"
        log.error("excluded %s", rec["reg_reason"])
    return rec


def registered_rows(path, row: dict, shape: tuple[int, int], cfg: dict):
    """The calibrated light ``path`` as its registration-table ``row`` puts it on the reference
    grid ``shape``: a :class:`astroflow.register.WarpedRows`, resampled as its bands are read."""
    from ..io import FitsRows
    from ..register import WarpedRows, parse_matrix

    rc = cfg["registration"]
    return WarpedRows(FitsRows(path), parse_matrix(row["matrix"]), shape, rc["clamping"], rc["interpolation"])


def registered_image(
    target_dir, light: str, registration: dict | None = None, rows: list[dict] | None = None
):
    """The registered light of a finished run whose data path ends with ``light``, resampled
    onto the reference grid as integration reads it (:func:`registered_rows`; runs write no
    registered frames), from the transform frames.tsv records: returns the image, its header
    (the calibrated light's, with the reference's WCS and the light's SSWEIGHT) and its
    frames.tsv row. ``registration`` holds the run's ``clamping`` and ``interpolation`` (default:
    the schema's); ``rows`` are the run's frames.tsv rows, when the caller has read them."""
    from ..io import copy_wcs, read_header
    from ..options import with_defaults
    from ..tables import read_tsv

    target_dir = Path(target_dir)
    if rows is None:
        rows = read_tsv(target_dir / "frames.tsv") if (target_dir / "frames.tsv").exists() else []
    row = next((r for r in rows if r["path"].endswith(light) and r.get("reg_method")), None)
    ref = next((r for r in rows if r.get("reg_method") == "reference"), None)
    if row is None or ref is None:
        raise FileNotFoundError(f"{target_dir}: no registered light {light!r} (see frames.tsv)")
    grid = read_header(target_dir / "calibrated" / ref["chunk"] / ref["calibrated"])
    path = target_dir / "calibrated" / row["chunk"] / row["calibrated"]
    header = read_header(path)
    cfg = with_defaults({"registration": registration or {}})
    src = registered_rows(path, row, (grid["NAXIS2"], grid["NAXIS1"]), cfg)
    image = src[:] if len(src.shape) == 2 else np.stack([src[c, :] for c in range(src.shape[0])])
    header["HISTORY"] = (
        f"registered to {Path(ref['path']).name} ({row['reg_method']}, {row['matches']} stars)"
    )
    if row.get("ssweight") is not None:  # SubframeSelector's weight, as its output frames carry it
        header["SSWEIGHT"] = (float(row["ssweight"]), "subframe weight (0: rejected by selection)")
    return image, copy_wcs(grid, header), row
