"""Header classification of a night's files: frame type, filter, target, camera settings.

Runs at DAG-build time from headers only (no pixel data), so ``snakemake -n`` shows every job.
Rules follow AutoIntegrate (reference/peers.md §1.1 step 1): IMAGETYP in any common spelling,
else the folder name; FILTER keyword by name and then first letter, else file-name suffix, else
colour. Filters are canonical ``L R G B H S O`` (mono) or ``RGB`` (one-shot colour / Bayer).
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path

import pandas as pd

from .io import FrameError, is_image_file, read_header

FRAME_TYPES = ("light", "dark", "flat", "bias", "flatdark", "integration")
FILTERS = ("L", "R", "G", "B", "H", "S", "O", "RGB")

_TYPE_WORDS = [
    # order matters: a stack ("Master Light") before "light"; "flat dark" / "dark flat" before
    # "flat" and "dark"
    (re.compile(r"master[\s_-]*light"), "integration"),
    (re.compile(r"flat[\s_-]*dark|dark[\s_-]*flat|flatdark|darkflat"), "flatdark"),
    (re.compile(r"bias|offset|zero"), "bias"),
    (re.compile(r"dark"), "dark"),
    (re.compile(r"flat"), "flat"),
    (re.compile(r"light|object|science"), "light"),
]
_FOLDER_TYPES = {
    "lights": "light",
    "light": "light",
    "darks": "dark",
    "dark": "dark",
    "flats": "flat",
    "flat": "flat",
    "bias": "bias",
    "biases": "bias",
    "offsets": "bias",
    "offset": "bias",
    "flatdarks": "flatdark",
    "flat_darks": "flatdark",
    "darkflats": "flatdark",
    "dark_flats": "flatdark",
}
_FILTER_WORDS = {
    "LUMINANCE": "L",
    "LUM": "L",
    "CLEAR": "L",
    "L": "L",
    "RED": "R",
    "R": "R",
    "GREEN": "G",
    "G": "G",
    "BLUE": "B",
    "B": "B",
    "HALPHA": "H",
    "HA": "H",
    "H": "H",
    "H-ALPHA": "H",
    "SII": "S",
    "S2": "S",
    "S": "S",
    "OIII": "O",
    "O3": "O",
    "O": "O",
    "COLOR": "RGB",
    "COLOUR": "RGB",
    "NO FILTER": "RGB",
    "NONE": "RGB",
    "L_EN": "RGB",
    "LC": "RGB",
    "LP": "RGB",
    "C": "RGB",
}
_NAME_FILTERS = [
    (re.compile(r"_(luminance|lum)_", re.I), "L"),
    (re.compile(r"_red_", re.I), "R"),
    (re.compile(r"_green_", re.I), "G"),
    (re.compile(r"_blue_", re.I), "B"),
    (re.compile(r"_(halpha|ha)_", re.I), "H"),
    (re.compile(r"_sii_", re.I), "S"),
    (re.compile(r"_oiii_", re.I), "O"),
]
_SUFFIX_FILTER = re.compile(r"_([LRGBHSO])(?=[._-]|$)")


_INTEGRATION_NAME = re.compile(r"^(Integration|masterLight)[_-]", re.IGNORECASE)


def frame_type(header, path: str | os.PathLike) -> str | None:
    """Canonical frame type from IMAGETYP (any common spelling), else from the folder names.
    ``integration``: a stack made elsewhere (WBPP's ``masterLight_*``, AutoIntegrate's or our
    ``Integration_<F>``, IMAGETYP ``Master Light``), which goes straight to the finishing steps."""
    if _INTEGRATION_NAME.match(Path(path).name):
        return "integration"
    value = str(header.get("IMAGETYP", header.get("FRAME", "")) or "").strip().lower()
    for pattern, kind in _TYPE_WORDS:
        if value and pattern.search(value):
            return kind
    for part in reversed(Path(path).parent.parts):
        kind = _FOLDER_TYPES.get(part.lower().replace(" ", "_").replace("-", "_"))
        if kind:
            return kind
    return None


def filter_name(header, path: str | os.PathLike) -> str:
    """Canonical filter by AutoIntegrate's rules; ``RGB`` means colour (OSC or unfiltered)."""
    raw = str(header.get("FILTER", "") or "").strip().upper()
    if raw and not raw.startswith("F"):  # F... are Hubble-style names, decided by file name
        if raw in _FILTER_WORDS:
            return _FILTER_WORDS[raw]
        if raw.replace(" ", "") in _FILTER_WORDS:
            return _FILTER_WORDS[raw.replace(" ", "")]
        if raw[0] in "LRGBHSO":
            return raw[0]
    name = Path(path).name
    for pattern, filt in _NAME_FILTERS:
        if pattern.search(name):
            return filt
    stem = re.sub(r"(\.fits|\.fit|\.fts|\.xisf|\.fz)+$", "", name, flags=re.I)
    m = _SUFFIX_FILTER.search(stem)
    if m:
        return m.group(1).upper()
    return "RGB"


def bayer_pattern(header) -> str | None:
    """Bayer pattern (RGGB/BGGR/GRBG/GBRG) as stored, or None for mono."""
    for key in ("BAYERPAT", "COLORTYP", "CFA-PAT"):
        value = str(header.get(key, "") or "").strip().upper()
        if len(value) == 4 and set(value) <= set("RGB"):
            return value
    return None


def sanitise(name: str) -> str:
    """A target name safe for folder names: 'NGC 7000 / M 31' -> 'NGC_7000_M_31'."""
    cleaned = re.sub(r"[^A-Za-z0-9.+-]+", "_", name.strip()).strip("_.")
    return cleaned or "target"


def _target(header, path: Path, data_dir: Path) -> str:
    obj = str(header.get("OBJECT", "") or "").strip()
    if obj:
        return sanitise(obj)
    rel = path.parent.relative_to(data_dir)
    parts = [p for p in rel.parts if p.lower() not in _FOLDER_TYPES and p.upper() not in FILTERS]
    return sanitise(parts[-1]) if parts else sanitise(data_dir.name)


def _num(header, *keys):
    for key in keys:
        value = header.get(key)
        if value is not None and value != "":
            try:
                return float(value)
            except (TypeError, ValueError):
                continue
    return None


COLUMNS = [
    "path",
    "type",
    "filter",
    "target",
    "exptime",
    "gain",
    "offset",
    "temperature",
    "xbinning",
    "ybinning",
    "width",
    "height",
    "instrument",
    "bayer",
    "date",
    "accepted",
    "reason",
]


RESULTS_MARKERS = (".astroflow", ".snakemake")  # a folder holding one is a run's results


def image_files(data_dir: Path, exclude=()) -> list[Path]:
    """Image files under ``data_dir``, recursively, including dangling links (they are reported,
    not skipped): never inside ``exclude`` or a folder holding a results marker, whose files are
    a run's outputs and would otherwise come back as lights and masters."""
    skip = {Path(p).resolve() for p in exclude}
    found = []
    for root, dirs, names in os.walk(data_dir, followlinks=True):
        if Path(root).resolve() in skip or any(m in dirs or m in names for m in RESULTS_MARKERS):
            dirs[:] = []
            continue
        dirs.sort()
        found += [Path(root, n) for n in names if is_image_file(n)]
    return found


def scan(
    data_dir: str | os.PathLike,
    overrides: list[dict] | None = None,
    osc: str = "auto",
    pattern: str = "auto",
    exclude: tuple[str | os.PathLike, ...] = (),
) -> pd.DataFrame:
    """One row per image file under ``data_dir`` (recursive, sorted), classified from headers.

    ``overrides`` is a list of ``{pattern, type?, filter?, target?}``: ``pattern`` is a glob on the
    path relative to ``data_dir``; later entries win. ``osc`` is ``auto`` (Bayer keyword decides),
    ``true`` or ``false``; ``pattern`` (``auto`` or RGGB/BGGR/GRBG/GBRG) overrides the header's
    Bayer pattern. Unreadable files get ``accepted=False`` and a reason naming the problem.
    Folders in ``exclude`` (the results folder) and results folders of any run are not scanned
    (:func:`image_files`).
    """
    data_dir = Path(data_dir).resolve()
    rows = []
    files = sorted(image_files(data_dir, exclude))
    for path in files:
        rel = path.relative_to(data_dir).as_posix()
        row = dict.fromkeys(COLUMNS)
        row.update(path=str(path), accepted=True, reason="")
        try:
            header = read_header(path)
        except FrameError as exc:
            row.update(type=frame_type({}, path) or "unknown", accepted=False, reason=str(exc))
            rows.append(row)
            continue
        kind = frame_type(header, path)
        bayer = bayer_pattern(header)
        if osc == "false":
            bayer = None
        filt = filter_name(header, path)
        if bayer or osc == "true":
            filt = "RGB"
            bayer = pattern if pattern != "auto" else (bayer or "RGGB")
        row.update(
            type=kind or "unknown",
            filter=filt,
            target=_target(header, path, data_dir),
            exptime=_num(header, "EXPTIME", "EXPOSURE"),
            gain=_num(header, "GAIN"),
            offset=_num(header, "OFFSET", "BLKLEVEL"),
            temperature=_num(header, "CCD-TEMP", "CCD_TEMP", "TEMPERAT"),
            xbinning=int(_num(header, "XBINNING", "BINNING") or 1),
            ybinning=int(_num(header, "YBINNING", "BINNING") or 1),
            width=int(header.get("NAXIS1", 0)),
            height=int(header.get("NAXIS2", 0)),
            instrument=str(header.get("INSTRUME", "") or "").strip(),
            bayer=bayer or "",
            date=str(header.get("DATE-OBS", "") or "").strip(),
        )
        if kind is None:
            row.update(
                accepted=False, reason="frame type unknown: no IMAGETYP and no lights/darks/flats/bias folder"
            )
        elif kind in ("light", "dark") and row["exptime"] is None:
            row.update(accepted=False, reason="EXPTIME missing: exposure unknown")
        for ov in overrides or []:
            if fnmatch.fnmatch(rel, ov["pattern"]) or fnmatch.fnmatch(path.name, ov["pattern"]):
                for key in ("type", "filter", "target"):
                    if ov.get(key):
                        row[key] = ov[key]
                if ov.get("type") and not row["reason"].startswith(str(path)):
                    row.update(accepted=True, reason="")
        if row["type"] == "integration" and row["height"] and header.get("NAXIS") == 3:
            row["filter"] = "RGB"  # a colour stack
        if row["type"] not in ("light", "integration"):
            row["target"] = ""
        if row["type"] in ("bias", "dark"):
            row["filter"] = ""
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)
