"""Master calibration frames and light calibration (all in ADU, float32).

* Master bias / dark / flat-dark: rejection-integrated without normalisation (same frame-count
  rule as lights, reference/peers.md §1.3).
* Master flat: each flat is calibrated (flat-dark, else bias), integrated with multiplicative
  normalisation and percentile clipping (0.2 / 0.1), then divided by its median so the master
  is ~1 on average; light / master_flat keeps the light's ADU level.
* Light: ``(light - dark) / flat`` when the dark contains the bias (default), or
  ``(light - bias - dark * t_light / t_dark) / flat`` when the dark was bias-subtracted
  (``dark_scaling``), or ``(light - bias) / flat`` without darks.
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from .io import FrameError, open_rows, read_header
from .numerics import nanmedian


class _Calibrated:
    """A frame's rows minus those of master(s) (bias, flat-dark), sliced like the frame."""

    def __init__(self, rows, subtract: list[np.ndarray]):  # subtract: one master at least
        self.rows, self.subtract, self.shape = rows, subtract, rows.shape

    def __getitem__(self, key):
        data = self.rows[key] - self.subtract[0][key]  # a new array: the frame's rows stay as read
        for m in self.subtract[1:]:
            data -= m[key]
        return data


def _row_step(ny: int) -> int:
    """Every how many rows a flat's level is sampled: ~512 rows give it to ~1e-5."""
    return max(1, ny // 512)


def _frame_median(frame) -> float:
    """Median (ADU) of a band-readable frame from ~512 of its rows: a flat's normalisation level."""
    ny = frame.shape[-2]
    step = _row_step(ny)
    sample = np.concatenate([np.ravel(frame[y : y + 1]) for y in range(0, ny, step)])
    return float(nanmedian(sample))


def equalize_cfa_flat(flat: np.ndarray, pattern: str) -> dict[str, float]:
    """Scale each colour's sites of a normalised CFA master flat (in place) to a median of 1
    (Siril's ``-equalize_cfa``, WBPP's separate CFA scaling): the flat then corrects vignetting,
    dust and pixel response, not the colour of the panel or sky it was taken with, and lights
    keep their own colour balance and each colour its own noise. Returns the levels divided
    out, per colour; both green sites share one level, so their response difference stays
    corrected."""
    sites = {c: [flat[i // 2 :: 2, i % 2 :: 2] for i in range(4) if pattern[i] == c] for c in "RGB"}
    levels = {}
    for colour, views in sites.items():
        level = float(nanmedian(np.concatenate([v.ravel() for v in views]))) if views else np.nan
        if np.isfinite(level) and level > 0:
            for v in views:
                v /= np.float32(level)
            levels[colour] = level
    return levels


def master(
    paths: list[str],
    kind: str,
    rejection: str = "auto",
    bias: np.ndarray | None = None,
    dark: np.ndarray | None = None,
    memory_mb: float = 512,
    equalize_cfa: bool = False,
    bayer: str | None = None,
):
    """Build a master of ``kind`` (bias, dark, flatdark, flat) from the given files.

    ``equalize_cfa``: a one-shot-colour flat (the flats' BAYERPAT, else ``bayer``, names its
    pattern) has each colour's sites scaled to a median of 1 (:func:`equalize_cfa_flat`).

    Frames are read band by band (``memory_mb``), so a master of many 26 MP frames needs no more
    memory than one of three. Unreadable files or frames whose shape differs from the first
    readable one are skipped with a note. Returns ``(data, header, notes)``; raises
    :class:`FrameError` when no frame is usable.
    """
    from . import integrate as integ  # the compiled kernels: only master and integration jobs

    frames, notes, headers = [], [], []
    for p in paths:
        try:
            header = read_header(p)
            rows = open_rows(p)
        except FrameError as exc:
            notes.append(f"skipped {exc}")
            continue
        if frames and rows.shape != frames[0].shape:
            notes.append(f"skipped {p}: shape {rows.shape} differs from {frames[0].shape}")
            continue
        subtract = [m for m in (bias, dark) if m is not None]  # flat-darks share the flats' exposure
        frames.append(_Calibrated(rows, subtract) if subtract else rows)
        headers.append(header)
    if not frames:
        raise FrameError(f"no usable {kind} frame among {len(paths)} file(s): " + "; ".join(notes))
    n = len(frames)
    if kind == "flat":
        method, low, high, norm = "percentile", 0.2, 0.1, "multiplicative"
    else:
        method = integ.auto_rejection(max(n, 3), "auto2") if rejection == "auto" else rejection
        low, high = integ.DEFAULT_PARAMS[method]
        norm = "none"
    if n < 3:
        method = "none" if n > 1 else "single frame"
    channels = 1 if len(frames[0].shape) == 2 else frames[0].shape[0]
    norms = []
    for f in frames:
        loc = np.full(channels, _frame_median(f) if norm != "none" else 0.0)
        norms.append(integ.FrameNorm(loc=loc, scale=np.ones(channels), weight=1.0))
    shape = frames[0].shape
    result = np.empty((channels, *shape[-2:]), np.float32)  # only the image: no rejection maps
    for y0, y1, image, *_ in integ.integrate_bands(
        frames, norms, "none" if n < 3 else method, low, high, normalisation=norm, memory_mb=memory_mb
    ):
        result[:, y0:y1] = image
    result = result.reshape(shape)
    if kind == "flat":
        # sampled as each flat's level is: the full frame's median took 0.4 s at 26 MP
        med = nanmedian(result[..., :: _row_step(shape[-2]), :])
        if not np.isfinite(med) or med <= 0:
            raise FrameError(f"master flat has non-positive median {med}: check the flat frames")
        result = result / np.float32(med)
    header = fits.Header()
    first = headers[0]
    for key in (
        "INSTRUME",
        "EXPTIME",
        "GAIN",
        "OFFSET",
        "XBINNING",
        "YBINNING",
        "CCD-TEMP",
        "FILTER",
        "BAYERPAT",
    ):
        if key in first:
            header[key] = first[key]
    header["IMAGETYP"] = f"Master {kind}"
    header["NCOMBINE"] = (len(frames), "frames integrated")
    header["HISTORY"] = f"astroflow master {kind}: {len(frames)} frames, rejection {method}"
    pattern = first.get("BAYERPAT") or bayer  # the flats' own pattern and offsets first
    if kind == "flat" and equalize_cfa and pattern and result.ndim == 2:
        from .debayer import header_pattern

        try:
            levels = equalize_cfa_flat(result, header_pattern(str(pattern), first, result.shape[0]))
            header["HISTORY"] = "CFA colours equalised: " + ", ".join(
                f"{c} {v:.4f}" for c, v in levels.items()
            )
        except ValueError as exc:  # an unreadable BAYERPAT costs the equalisation, not the flat
            notes.append(f"{paths[0]}: {exc}: CFA colours not equalised")
    if bias is not None:
        header["CALSTAT"] = "B"
    return result.astype(np.float32), header, notes


def calibrate_light(
    light: np.ndarray,
    exptime: float,
    bias: np.ndarray | None = None,
    dark: tuple[np.ndarray, float, bool] | None = None,
    flat: np.ndarray | None = None,
    inplace: bool = False,
) -> np.ndarray:
    """Calibrate one light (ADU). ``dark`` is ``(master, exptime, contains_bias)``.

    A dark that contains the bias is subtracted as is; a bias-subtracted dark is scaled by
    exposure ratio after subtracting ``bias``. ``inplace``: a float32 ``light`` is calibrated
    in its own buffer (a frame less in memory; the caller gives the raw frame up).
    """
    out = np.asarray(light, np.float32) if inplace else np.array(light, dtype=np.float32, copy=True)
    if dark is not None:
        master_dark, dark_exp, has_bias = dark
        if has_bias:
            out -= master_dark
        else:
            if bias is not None:
                out -= bias
            out -= master_dark * np.float32(exptime / dark_exp if dark_exp else 1.0)
    elif bias is not None:
        out -= bias
    if flat is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            out /= flat
        out[flat <= 0.05] = np.nan  # dead or unlit: repaired by the cosmetic correction
    return out
