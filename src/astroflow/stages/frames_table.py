"""Stage ``frames_table``: ``frames.tsv``, every input file and what became of it."""

from __future__ import annotations

import json
from pathlib import Path

from .. import records
from .job import write_frame


def _registration(calibrated_dirs: list[str], reference_dirs: list[str], cfg: dict):
    """Registration and subframe selection of every calibrated light, filter by filter: the
    same pure functions of the same files the integrate jobs apply (star matching costs
    milliseconds a frame), so the table is whole even when a filter's integration fails."""
    import pandas as pd

    from .. import subframes
    from ..plan import chunk_filter
    from .register import register_lights

    by_filter: dict[str, list[str]] = {}
    for d in calibrated_dirs:
        by_filter.setdefault(chunk_filter(Path(d).name), []).append(d)
    registered, selected = [], []
    for dirs in by_filter.values():
        rows, _ = register_lights(dirs, reference_dirs, cfg)
        registered += [{k: v for k, v in r.items() if k != "dir"} for r in rows]
        ok = sorted((r for r in rows if r.get("reg_status") == "ok"), key=lambda r: r["path"])
        if ok:
            weights, reasons = subframes.select(ok, cfg["subframes"])
            selected += [
                {"path": r["path"], "ssweight": round(float(w), 6), "selection_reason": why}
                for r, w, why in zip(ok, weights, reasons, strict=True)
            ]
    return pd.DataFrame(registered), pd.DataFrame(selected, columns=["path", *records.SELECTION])


def frames_table(
    classified,
    calibrated_dirs: list[str],
    reference_dirs: list[str],
    reference_json,
    data_dir,
    out,
    cfg: dict,
):
    """Merge classification, calibration, measurement, registration and subframe selection into
    ``frames.tsv``.

    A light is ``accepted`` only if it was classified, calibrated, registered and kept by subframe
    selection; ``reason`` holds the first problem met. Rows are keyed by the file's path; ``path``
    is written relative to ``data_dir`` (the table does not depend on where the night is).
    """

    data_dir = Path(data_dir).resolve()
    table = classified.assign(path=[Path(p).relative_to(data_dir).as_posix() for p in classified["path"]])
    if calibrated_dirs:  # a target of stacks made elsewhere has none
        registered, selected = _registration(calibrated_dirs, reference_dirs, cfg)
        done = registered.drop(columns=["exptime", "reference"], errors="ignore")
        done = done.rename(columns={"reason": "calibration_reason", "file": "calibrated"})
        table = table.merge(done, on="path", how="left").merge(selected, on="path", how="left")
    ref = json.loads(Path(reference_json).read_text())["path"] if reference_json else None
    table["reference"] = table["path"] == ref
    lights = (table["type"] == "light") & table["accepted"]
    for col in ("calibration_reason", "reg_reason", "selection_reason"):
        if col not in table:
            continue
        problem = lights & table[col].fillna("").astype(str).ne("")
        table.loc[problem, "reason"] = table.loc[problem, col]
        table.loc[problem, "accepted"] = False
        lights &= ~problem
    table = table.drop(
        columns=["calibration_reason", "reg_reason", "selection_reason", "status", "reg_status"],
        errors="ignore",
    )
    write_frame(table, Path(out))
    return table
