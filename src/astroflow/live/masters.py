"""Calibration frames that arrive during the night, grouped and built into the masters each
light matches (livestack's matching rules, with tolerances from the ``live`` config):

* dark: INSTRUME, GAIN, binning, size, CCD-TEMP rounded to ``temperature_step`` °C, and
  EXPTIME within ``exposure_tolerance`` (the nearest exposure wins);
* flat: INSTRUME, FILTER, GAIN, binning, size and the rounded temperature;
* bias: INSTRUME, GAIN, binning, size; flat-dark: the same and the flat's exposure.

A group becomes a master with the pipeline's own function (:func:`astroflow.calibrate.master`,
flats calibrated with the matching flat-dark, else bias) once it holds ``min_calibration_frames``
frames, and is rebuilt when more arrive; darks and flats carry their defect maps
(:func:`astroflow.stages.master.master_defects`). Masters are written to ``OUT/masters/`` with
the digest of their frames (``LIVESET``), so a restart reuses them. Masters the pipeline made
(``--masters``, IMAGETYP ``Master …``) are matched by the same rules and used when no group of
raw frames is large enough.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from .. import cosmetic
from ..classify import filter_name, frame_type, sanitise
from ..io import FrameError, read_extension, read_header, read_image, write_fits
from ..stages.calibrate import Masters

log = logging.getLogger("astroflow.live")
KINDS = ("bias", "dark", "flatdark", "flat")


def _number(header, key):
    try:
        return float(header[key]) if header.get(key) not in (None, "") else None
    except (TypeError, ValueError):
        return None


def frame_shape(header) -> tuple[int, int]:
    """``(ny, nx)`` of a frame from its header (FITS or XISF)."""
    return int(header.get("NAXIS2", 0)), int(header.get("NAXIS1", 0))


def _camera(header) -> tuple:
    binning = (int(_number(header, "XBINNING") or 1), int(_number(header, "YBINNING") or 1))
    return (
        str(header.get("INSTRUME", "") or "").strip(),
        _number(header, "GAIN"),
        binning,
        frame_shape(header),
    )


def _temperature(header, step: float):
    t = _number(header, "CCD-TEMP")
    return None if t is None else float(round(t / step) * step)


def group_key(kind: str, header, path, step: float) -> tuple:
    """The matching key of a calibration frame or light for masters of ``kind`` (exposure apart)."""
    if kind in ("bias", "flatdark"):  # a flat-dark's exposure is matched apart, as a dark's
        return _camera(header)
    if kind == "dark":
        return (*_camera(header), _temperature(header, step))
    return (*_camera(header), filter_name(header, path), _temperature(header, step))


def _describe(kind: str, key: tuple, exptime) -> str:
    instrument, gain, binning, _, *rest = key
    parts = [f"Live{kind.capitalize()}", instrument or "camera", f"g{gain:g}" if gain is not None else ""]
    parts.append(f"{binning[0]}x{binning[1]}")
    if kind == "flat":
        parts.append(rest[0])
    if kind in ("dark", "flat") and rest[-1] is not None:
        parts.append(f"{rest[-1]:g}C")
    if exptime is not None:
        parts.append(f"{exptime:g}s")
    return sanitise("_".join(p for p in parts if p))


@dataclass
class _Group:
    kind: str
    key: tuple
    exptime: float | None
    name: str
    files: list = field(default_factory=list)
    external: Path | None = None  # a master made elsewhere
    built: tuple | None = None  # (digest, data, header, defects)


class MasterLibrary:
    """Calibration frames by kind and key; :meth:`match` gives a light its masters."""

    def __init__(self, out_dir, cfg: dict):
        self.out_dir, self.cfg, self.live = Path(out_dir), cfg, cfg["live"]
        self.groups: dict[tuple, _Group] = {}

    def _group(self, kind, header, path) -> _Group:
        key = group_key(kind, header, path, self.live["temperature_step"])
        exptime = _number(header, "EXPTIME") if kind in ("dark", "flatdark") else None
        exptime = None if exptime is None else round(exptime, 3)
        gid = (kind, key, exptime)
        if gid not in self.groups:
            self.groups[gid] = _Group(kind, key, exptime, _describe(kind, key, exptime))
        return self.groups[gid]

    def add(self, path, header) -> str | None:
        """Add a calibration frame (or a master made elsewhere); returns its group's name, None
        if it is not a calibration frame."""
        kind = frame_type(header, path)
        if kind not in KINDS:
            return None
        group = self._group(kind, header, path)
        if "master" in str(header.get("IMAGETYP", "")).lower():
            group.external = Path(path)
        elif Path(path) not in group.files:
            group.files.append(Path(path))
            group.files.sort()
        return group.name

    def _candidates(self, kind, header, path):
        key = group_key(kind, header, path, self.live["temperature_step"])
        return [g for g in self.groups.values() if g.kind == kind and g.key == key and self._ready(g)]

    def _ready(self, g: _Group) -> bool:
        return len(g.files) >= self.live["min_calibration_frames"] or g.external is not None

    def _nearest(self, kind, header, path):
        """The group of ``kind`` matching ``header``: for darks and flat-darks the nearest
        exposure within the tolerance."""
        groups = self._candidates(kind, header, path)
        if kind not in ("dark", "flatdark"):
            return groups[0] if groups else None
        exptime = _number(header, "EXPTIME") or 0.0
        tol = self.live["exposure_tolerance"] * max(exptime, 1e-6)
        close = [g for g in groups if g.exptime is not None and abs(g.exptime - exptime) <= tol]
        return min(close, key=lambda g: abs(g.exptime - exptime)) if close else None

    def _load(self, g: _Group):
        """``(data, header, defects)`` of a group's master, built (or reused) when needed."""
        if len(g.files) < self.live["min_calibration_frames"]:
            data, header, _ = read_image(g.external)
            return data, header, read_extension(g.external, cosmetic.DEFECTS)
        digest = hashlib.sha1(
            "\n".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in g.files).encode()
        ).hexdigest()[:16]
        if g.built and g.built[0] == digest:
            return g.built[1:]
        out = self.out_dir / f"{g.name}.fits"
        if out.exists() and str(read_header(out).get("LIVESET", "")) == digest:
            data, header, _ = read_image(out)
            g.built = (digest, data, header, read_extension(out, cosmetic.DEFECTS))
            return g.built[1:]
        from ..calibrate import master as integrate_master
        from ..stages.master import master_defects

        bias = dark = None
        if g.kind == "flat":
            first = read_header(g.files[0])
            fd = self._nearest("flatdark", first, g.files[0])
            if fd is not None:
                dark = self._load(fd)[0]
            else:
                b = self._nearest("bias", first, g.files[0])
                bias = self._load(b)[0] if b is not None else None
        data, header, notes = integrate_master(
            [str(p) for p in g.files],
            g.kind,
            self.cfg["calibration"]["master_rejection"],
            bias=bias,
            dark=dark,
            equalize_cfa=self.cfg["calibration"]["equalize_cfa"],
        )
        for note in notes:
            log.warning("%s: %s", g.name, note)
        header["LIVESET"] = (digest, "digest of the frames integrated")
        defects = master_defects(g.kind, data, header, self.cfg, cfa=bool(header.get("BAYERPAT")))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_fits(out, data, header, extensions={cosmetic.DEFECTS: defects} if defects is not None else None)
        log.info("built master %s from %d frames", g.name, len(g.files))
        g.built = (digest, data, header, defects)
        return g.built[1:]

    def match(self, header, path) -> tuple[Masters, dict, list[str]]:
        """The masters of a light: ``(Masters, {kind: master name}, missing kinds)`` (missing
        counts only kinds in the ``require`` option)."""
        masters, used, missing = Masters(), {}, []
        for kind in ("bias", "dark", "flat"):
            g = self._nearest(kind, header, path)
            if g is None:
                if kind in self.live["require"]:
                    missing.append(kind)
                continue
            try:
                data, mh, defects = self._load(g)
            except FrameError as exc:
                log.error("master %s cannot be built: %s", g.name, exc)
                if kind in self.live["require"]:
                    missing.append(kind)
                continue
            used[kind] = g.name
            if kind == "bias":
                masters.bias = data
            elif kind == "dark":
                exptime = float(mh.get("EXPTIME", g.exptime or 0) or 0)
                masters.dark = (data, exptime, "B" not in str(mh.get("CALSTAT", "")))
            else:
                masters.flat = data
            if defects is not None:
                masters.defects.append(defects)
        return masters, used, missing
