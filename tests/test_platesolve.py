"""Plate solving against the real Tycho-2 index (astrometry.net, Debian packages; see .ci/run)."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from astroflow import platesolve

INDEX = Path("/usr/share/astrometry/index-tycho2-10.littleendian.fits")
needs_solver = pytest.mark.skipif(shutil.which("solve-field") is None, reason="astrometry.net not installed")
RA, DEC, SCALE = 314.75, 44.33, 6.0  # NGC 7000; arcsec/px: a 1.7° × 1.3° field for the 60′+ index


def _truth_wcs(w, h, rot_deg=12.0):
    t = WCS(naxis=2)
    t.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    t.wcs.crval = [RA, DEC]
    t.wcs.crpix = [w / 2 + 0.5, h / 2 + 0.5]
    c, s = np.cos(np.radians(rot_deg)), np.sin(np.radians(rot_deg))
    t.wcs.cd = SCALE / 3600 * np.array([[-c, s], [s, c]])
    return t


def _tycho_stars(radius=1.3):
    """RA, Dec, VT of the index's own Tycho-2 stars around the field centre."""
    out = subprocess.run(
        ["query-starkd", "-r", str(RA), "-d", str(DEC), "-R", str(radius), "-T", str(INDEX)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return np.array([[float(v) for v in line.split(",")] for line in out.splitlines() if line[:1].isdigit()])


def _real_sky_image(w=1024, h=768, seed=0):
    """Gaussian stars at Tycho-2 positions over sky noise; returns (image, truth WCS, x, y, catalogue)."""
    from astroflow.synth import _render_stars

    cat = _tycho_stars()
    truth = _truth_wcs(w, h)
    x, y = truth.all_world2pix(cat[:, 0], cat[:, 1], 0)
    img = np.zeros((h, w))
    _render_stars(img, x, y, 3000.0 * 10 ** (-0.4 * (cat[:, 2] - 10.0)), 1.3)
    rng = np.random.default_rng(seed)
    return (img + rng.normal(100.0, 5.0, img.shape)).astype(np.float32), truth, x, y, cat


def _hints():
    return fits.Header(
        {"XPIXSZ": 3.76, "FOCALLEN": 206.264806 * 3.76 / SCALE, "RA": RA + 0.4, "DEC": DEC - 0.3}
    )


@needs_solver
def test_solves_a_real_sky_field_to_a_fraction_of_a_pixel():
    img, truth, *_ = _real_sky_image()
    solved = WCS(platesolve.solve(img, _hints(), timeout=60))
    h, w = img.shape
    px = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1], [w / 2, h / 2]], float)
    ra, dec = solved.all_pix2world(px[:, 0], px[:, 1], 0)
    back = np.column_stack(truth.all_world2pix(ra, dec, 0))
    assert np.abs(back - px).max() < 0.5  # corners and centre, in pixels


@needs_solver
def test_a_field_without_stars_is_a_clear_error():
    rng = np.random.default_rng(1)
    with pytest.raises(platesolve.SolveError, match="stars detected"):
        platesolve.solve(rng.normal(100, 5, (300, 400)).astype(np.float32), fits.Header())


def test_a_missing_solver_is_a_clear_error():
    img = np.zeros((10, 10), np.float32)
    with pytest.raises(platesolve.SolveError, match="not installed"):
        platesolve.solve(img, fits.Header(), command="no-such-solve-field")


def test_hints_from_headers():
    h = fits.Header({"XPIXSZ": 3.76, "FOCALLEN": 550.0, "OBJCTRA": "20 59 00", "OBJCTDEC": "+44 20 00"})
    assert platesolve.pixel_scale(h) == pytest.approx(1.410, abs=0.001)
    ra, dec = platesolve.centre_hint(h)
    assert ra == pytest.approx(314.75) and dec == pytest.approx(44.3333, abs=1e-3)
    assert platesolve.pixel_scale(fits.Header()) is None and platesolve.centre_hint(fits.Header()) is None


@needs_solver
def test_photometric_colour_plate_solves_an_image_without_wcs(tmp_path):
    """The finishing step solves the field, then calibrates colour from the catalogue's B-V."""
    from astroflow.colour import SUN_BV, blackbody_rgb, bv_to_temperature
    from astroflow.finish import _colour
    from astroflow.synth import RGB_RESPONSE, _render_stars

    lum, _, x, y, cat = _real_sky_image()
    rng = np.random.default_rng(2)
    bv = np.clip(rng.normal(1.1, 0.3, len(cat)), -0.2, 2.0)  # a reddened field: median B-V 1.1
    response = np.array([RGB_RESPONSE[c] for c in "RGB"])
    colours = blackbody_rgb(bv_to_temperature(bv)) * response
    flux = 3000.0 * 10 ** (-0.4 * (cat[:, 2] - 10.0))
    rgb = np.zeros((3,) + lum.shape)
    for c in range(3):
        _render_stars(rgb[c], x, y, flux * colours[:, c] / colours[:, 1], 1.3)
    rgb = (rgb + 100.0 + rng.normal(0, 2.0, rgb.shape)).astype(np.float32)
    csv = tmp_path / "field.csv"
    csv.write_text(
        "ra,dec,b-v\n"
        + "".join(f"{a},{d},{b:.3f}\n" for a, d, b in zip(cat[:, 0], cat[:, 1], bv, strict=True))
    )
    pc = {"catalogue": str(csv), "white_bv": SUN_BV, "match_radius": 2.0, "plate_solve": True}
    pc |= {
        "solve_field": "solve-field",
        "solve_timeout": 60,
        "bands": {"R": [600, 700], "G": [500, 600], "B": [400, 500]},
    }
    cfg = {"colour": {"background_neutralization": False, "calibration": "photometric", "photometric": pc}}
    header, notes = _hints(), {}
    out = _colour(rgb, header, cfg, notes)
    assert notes["PLTSOLVD"] and notes["COLCAL"].startswith("photometric")
    assert WCS(header).has_celestial  # the solution travels on to the final image's header
    sun = blackbody_rgb(bv_to_temperature(SUN_BV))[0] * response
    gains = np.array([float(g) for g in notes["CCGAINS"].split(",")])
    white = sun * gains
    np.testing.assert_allclose(white / white[1], 1.0, atol=0.03)  # the Sun comes out white
    assert out.shape == rgb.shape


def test_without_a_solver_photometric_colour_falls_back_to_stars(tmp_path, caplog):
    from astroflow.finish import _colour

    rng = np.random.default_rng(4)
    rgb = rng.normal(100, 2, (3, 64, 64)).astype(np.float32)
    (tmp_path / "c.csv").write_text("ra,dec,b-v\n1,2,0.5\n")
    pc = {"catalogue": str(tmp_path / "c.csv"), "white_bv": 0.65, "match_radius": 2.0, "plate_solve": True}
    pc |= {"solve_field": "no-such-solve-field", "solve_timeout": 5, "bands": {}}
    cfg = {
        "colour": {
            "background_neutralization": False,
            "calibration": "photometric",
            "photometric": pc,
            "white_reference": [1.0, 1.0, 1.0],
        }
    }
    notes = {}
    _colour(rgb, fits.Header(), cfg, notes)
    assert "not installed" in caplog.text and "PLTSOLVD" not in notes
    assert not notes.get("COLCAL", "").startswith("photometric")
