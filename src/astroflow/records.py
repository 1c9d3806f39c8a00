"""The per-frame record of a light: every column the calibrate and register stages write, with
its type and meaning, in one place.

``measure.tsv`` (stage ``calibrate``) holds the :data:`MEASURE` columns of each light of a chunk,
``registration.tsv`` (stage ``register``) the same rows with the :data:`REGISTRATION` columns
added, and ``frames.tsv`` joins them to the classification (:mod:`astroflow.classify`). Colour
frames have a value per channel (R, G, B; ``_0`` only for mono): :func:`per_channel`.
"""

from __future__ import annotations

CHANNELS = 3
PER_CHANNEL = {
    "background": (float, "[ADU] sky level (median)"),
    "scale": (float, "[ADU] robust spread of the sky (normalisation scale)"),
    "noise": (float, "[ADU] Gaussian noise sigma"),
}

MEASURE = {
    "path": (str, "the light, relative to the data folder"),
    "exptime": (float, "[s] exposure"),
    "file": (str, "calibrated file in the chunk folder ('' when excluded)"),
    "status": (str, "ok or excluded"),
    "reason": (str, "why the light was excluded at calibration"),
    "bad_pixels": (int, "pixels repaired (master defect maps and isolated defects)"),
    "stars": (int, "stars detected"),
    "fwhm": (float, "[px] median FWHM of the stars"),
    "eccentricity": (float, "median star eccentricity (0 round)"),
    "snr": (float, "signal-to-noise estimate of the frame"),
    "psf_signal": (float, "median peak of the unsaturated stars / noise (SubframeSelector's PSF signal)"),
    "psf_power": (float, "mean squared peak of those stars / noise² (PSF power)"),
    **{f"{k}_{c}": (t, f"{d}, channel {c}") for c in range(CHANNELS) for k, (t, d) in PER_CHANNEL.items()},
}

REGISTRATION = {
    "reg_status": (str, "ok or excluded"),
    "reg_reason": (str, "why the light could not be registered"),
    "matches": (int, "stars matched with the reference"),
    "reg_rms": (float, "[px] residual of the matched stars"),
    "reg_method": (str, "votes, triangles, phase correlation, or reference"),
    "shift_x": (float, "[px] translation, x"),
    "shift_y": (float, "[px] translation, y"),
    "rotation": (float, "[deg] rotation"),
    "matrix": (str, "the 2x3 affine from reference to frame pixels, row-major"),
    "flux_scale": (float, "median reference/frame flux of the stars both show (photometric normalisation)"),
    "reference": (bool, "the registration reference"),
}

# written by frames_table from the filter's measurements (astroflow.subframes)
SELECTION = {
    "ssweight": (float, "SubframeSelector weight (subframes.weight); 0 when rejected"),
    "selection_reason": (str, "why subframe selection rejected the light"),
}


def per_channel(kind: str, channel: int) -> str:
    """Column of a per-channel measurement (``kind`` in :data:`PER_CHANNEL`)."""
    if kind not in PER_CHANNEL or not 0 <= channel < CHANNELS:
        raise KeyError(f"no per-channel column {kind}_{channel}")
    return f"{kind}_{channel}"


def measure_record(path: str, exptime: float) -> dict:
    """A light's record before calibration: excluded until it is calibrated."""
    return {"path": path, "exptime": exptime, "file": "", "status": "excluded", "reason": ""}


def check(record: dict, columns: dict) -> dict:
    """``record``, or ``KeyError`` naming any column not declared in ``columns``."""
    unknown = sorted(set(record) - set(columns))
    if unknown:
        raise KeyError(f"undeclared per-frame columns {unknown}: declare them in astroflow.records")
    return record
