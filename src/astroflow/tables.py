"""The per-frame tables (``measure.tsv`` per chunk, ``registration/<F>.tsv`` per filter) as lists
of dicts, without pandas.

Calibrate jobs run once per chunk, and pandas alone costs ~0.2 s of every job's
start-up; these tables are small and flat, so the csv module does. Conventions: tab-separated,
a header row, columns in the order they first appear; ``None`` and NaN are written as empty
cells (pandas reads those as NaN) and read back as ``None``; ``True``/``False``, integers and
floats are restored on reading.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from .io import atomic_path, parse_number


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _parse(text: str):
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    return parse_number(text)


def write_tsv(rows: list[dict], path: str | Path) -> None:
    """Write ``rows`` atomically; columns are the union of their keys, in first-seen order."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in columns])


def read_tsv(path: str | Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(f, delimiter="\t")]


def read_chunk_tables(dirs: list[str], name: str) -> list[dict]:
    """The ``name`` table of every chunk folder, each row with its folder in ``dir``."""
    return [{**row, "dir": str(d)} for d in dirs for row in read_tsv(Path(d) / name)]


def number(value) -> float:
    """A table cell as a float (NaN when empty)."""
    return float("nan") if value is None else float(value)
