"""Stage ``frames_table``: ``frames.tsv``, every input file and what became of it."""

from __future__ import annotations

import json
from pathlib import Path

from .. import records
from .job import write_frame


def _selection(tables: list, cfg: dict):
    """SSWEIGHT and subframe-selection reason of every registered light, filter by filter: the
    same pure function of the same rows the integrate stage applies."""
    import pandas as pd

    from .. import subframes
    from ..plan import chunk_filter
    from ..tables import read_chunk_tables

    rows = []
    by_filter: dict[str, list[str]] = {}
    for d in tables:
        by_filter.setdefault(chunk_filter(Path(d).name), []).append(d)
    for dirs in by_filter.values():
        ok = sorted(
            (r for r in read_chunk_tables(dirs, "registration.tsv") if r.get("reg_status") == "ok"),
            key=lambda r: r["path"],
        )
        if ok:
            weights, reasons = subframes.select(ok, cfg["subframes"])
            rows += [
                {"path": r["path"], "ssweight": round(float(w), 6), "selection_reason": why}
                for r, w, why in zip(ok, weights, reasons, strict=True)
            ]
    return pd.DataFrame(rows, columns=["path", *records.SELECTION])


def frames_table(classified, registered_dirs: list[str], reference_json, data_dir, out, cfg: dict):
    """Merge classification, calibration, measurement, registration and subframe selection into
    ``frames.tsv``.

    A light is ``accepted`` only if it was classified, calibrated, registered and kept by subframe
    selection; ``reason`` holds the first problem met. Rows are keyed by the file's path; ``path``
    is written relative to ``data_dir`` (the table does not depend on where the night is).
    """
    import pandas as pd

    data_dir = Path(data_dir).resolve()
    table = classified.assign(path=[Path(p).relative_to(data_dir).as_posix() for p in classified["path"]])
    tables = [pd.read_csv(Path(d) / "registration.tsv", sep="\t") for d in registered_dirs]
    if tables:  # a target of stacks made elsewhere has none
        done = pd.concat(tables, ignore_index=True).drop(columns=["exptime", "reference"], errors="ignore")
        done = done.rename(columns={"reason": "calibration_reason", "file": "calibrated"})
        table = table.merge(done, on="path", how="left").merge(
            _selection(registered_dirs, cfg), on="path", how="left"
        )
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
