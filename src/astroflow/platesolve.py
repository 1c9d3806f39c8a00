"""Plate solving with astrometry.net's ``solve-field`` — optional: found on PATH, never required.

We detect the stars ourselves (``measure.detect_stars``) and hand ``solve-field`` an x/y list,
so it never re-reads or re-detects the image; a scale hint from FOCALLEN and XPIXSZ
(``206.265 × XPIXSZ[µm] / FOCALLEN[mm]`` arcsec/px, ±10 %) and a position hint from RA/DEC or
OBJCTRA/OBJCTDEC make it fast (about 2 s instead of 20 s blind). The solution is the TAN+SIP
WCS that astrometry.net fits, in FITS convention (1-based CRPIX) for the image as given.

Offline index files: Debian's ``astrometry-data-tycho2-*`` packages (Tycho-2) solve fields
wider than ~20′ (see the README). No colours come with them: photometric colour calibration
still needs a catalogue with B−V (``colour.photometric.catalogue``).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from astropy.io import fits

from . import measure
from .io import copy_wcs


class SolveError(ValueError):
    """No plate solution (solver missing, too few stars, or no match in the index)."""


def pixel_scale(header: fits.Header) -> float | None:
    """Image scale in arcsec/px from XPIXSZ (µm, as binned) and FOCALLEN (mm), if both exist."""
    try:
        size, focal = float(header["XPIXSZ"]), float(header["FOCALLEN"])
    except (KeyError, TypeError, ValueError):
        return None
    return 206.264806 * size / focal if size > 0 and focal > 0 else None


def centre_hint(header: fits.Header) -> tuple[float, float] | None:
    """Approximate field centre (RA, Dec in degrees) from RA/DEC or OBJCTRA/OBJCTDEC."""
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    try:
        if "RA" in header and "DEC" in header:
            return float(header["RA"]), float(header["DEC"])
        if "OBJCTRA" in header and "OBJCTDEC" in header:
            c = SkyCoord(str(header["OBJCTRA"]), str(header["OBJCTDEC"]), unit=(u.hourangle, u.deg))
            return float(c.ra.deg), float(c.dec.deg)
    except (TypeError, ValueError):
        return None
    return None


def solve(
    image: np.ndarray,
    header: fits.Header,
    command: str = "solve-field",
    timeout: float = 60.0,
    radius: float = 5.0,
    max_stars: int = 300,
) -> fits.Header:
    """Plate-solve a mono image (any linear scale); returns a header holding only the WCS.

    ``header`` supplies the hints (see module doc); without them the search is blind and slower.
    ``radius`` (degrees) bounds the search around the position hint; ``timeout`` is seconds of
    solver CPU time. Raises ``SolveError`` with the reason when there is no solution.
    """
    exe = shutil.which(command)
    if exe is None:
        raise SolveError(f"astrometry.net's {command!r} is not installed (apt-get install astrometry.net)")
    img = np.nan_to_num(np.asarray(image, np.float32))
    stars = measure.detect_stars(img, 5.0, max_stars=max_stars)
    stars = stars[~stars["sat"]] if len(stars) else stars
    if len(stars) < 10:
        raise SolveError(f"only {len(stars)} stars detected; at least 10 are needed to plate-solve")
    h, w = img.shape
    with tempfile.TemporaryDirectory(prefix="astroflow-solve-") as tmp:
        xy = Path(tmp) / "stars.xyls"
        cols = [
            fits.Column("X", "E", array=stars["x"] + 1.0),  # FITS pixels are 1-based
            fits.Column("Y", "E", array=stars["y"] + 1.0),
            fits.Column("FLUX", "E", array=stars["flux"]),
        ]
        fits.BinTableHDU.from_columns(cols).writeto(xy)
        args = [exe, str(xy), "--dir", tmp, "--overwrite", "--no-plots", "--no-remove-lines"]
        args += ["--width", str(w), "--height", str(h), "--sort-column", "FLUX"]
        args += ["--cpulimit", str(int(timeout)), "--new-fits", "none", "--corr", "none"]
        args += ["--rdls", "none", "--match", "none", "--index-xyls", "none"]
        scale = pixel_scale(header)
        if scale:
            args += ["--scale-units", "arcsecperpix", "--scale-low", f"{0.9 * scale:.4f}"]
            args += ["--scale-high", f"{1.1 * scale:.4f}"]
        hint = centre_hint(header)
        if hint:
            args += ["--ra", f"{hint[0]:.5f}", "--dec", f"{hint[1]:.5f}", "--radius", f"{radius:g}"]
        try:
            run = subprocess.run(args, capture_output=True, text=True, timeout=timeout + 60)
        except subprocess.TimeoutExpired as e:
            raise SolveError(f"solve-field did not finish within {timeout + 60:.0f} s") from e
        solution = Path(tmp) / "stars.wcs"
        if not (Path(tmp) / "stars.solved").exists() or not solution.exists():
            tail = (run.stderr or run.stdout).strip().splitlines()[-1:] or [f"exit {run.returncode}"]
            hints = f"scale {scale:.3g}″/px" if scale else "no scale hint"
            raise SolveError(f"no plate solution from {len(stars)} stars ({hints}): {tail[0]}")
        return copy_wcs(fits.getheader(solution), fits.Header())
