from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from astroflow.classify import filter_name, frame_type, sanitise, scan
from astroflow.plan import PlanError, build_plan

CFG = {
    "calibration": {"dark_temperature_tolerance": 5.0, "dark_scaling": False},
    "registration": {"reference_filter": "auto"},
    "batch_size": 4,
}


@pytest.mark.parametrize(
    "value,kind",
    [
        ("LIGHT", "light"),
        ("Light Frame", "light"),
        ("DARK", "dark"),
        ("Dark Frame", "dark"),
        ("FLAT", "flat"),
        ("Flat Field", "flat"),
        ("BIAS", "bias"),
        ("Bias Frame", "bias"),
        ("OFFSET", "bias"),
        ("flat dark", "flatdark"),
        ("Dark Flat", "flatdark"),
    ],
)
def test_imagetyp_spellings(value, kind):
    assert frame_type({"IMAGETYP": value}, "x.fits") == kind


def test_frame_type_falls_back_to_folder():
    assert frame_type({}, "/n/darks/a.fits") == "dark"
    assert frame_type({}, "/n/Flats/L/a.fits") == "flat"
    assert frame_type({}, "/n/misc/a.fits") is None


@pytest.mark.parametrize(
    "header,name,filt",
    [
        ({"FILTER": "Luminance"}, "a.fits", "L"),
        ({"FILTER": "Red"}, "a.fits", "R"),
        ({"FILTER": "Ha"}, "a.fits", "H"),
        ({"FILTER": "OIII"}, "a.fits", "O"),
        ({"FILTER": "SII"}, "a.fits", "S"),
        ({"FILTER": "Gr"}, "a.fits", "G"),  # first letter
        ({"FILTER": "F656N"}, "m16_Halpha_001.fits", "H"),  # Hubble names decided by file name
        ({}, "m31_B.fits", "B"),
        ({}, "m31_Luminance_003.fits", "L"),
        ({}, "m31_O_003.fits", "O"),
        ({}, "m31.fits", "RGB"),
        ({"FILTER": "No Filter"}, "a.fits", "RGB"),
    ],
)
def test_filter_rules(header, name, filt):
    assert filter_name(header, name) == filt


def test_sanitise():
    assert sanitise("NGC 7000 / M 31") == "NGC_7000_M_31"
    assert sanitise("  ") == "target"


def _write(path, header, shape=(16, 16)):
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.PrimaryHDU(np.zeros(shape, np.uint16), header=fits.Header(header)).writeto(path)


def test_scan_plan_and_overrides(tmp_path):
    base = {"EXPTIME": 60.0, "GAIN": 100, "CCD-TEMP": -10.0}
    for i in range(3):
        _write(
            tmp_path / f"lights/L/m42_{i}.fits",
            {**base, "IMAGETYP": "Light Frame", "FILTER": "L", "OBJECT": "M 42"},
        )
        _write(tmp_path / f"lights/x/m42_Ha_{i}.fits", {**base, "OBJECT": "M 42"})  # no IMAGETYP
        _write(tmp_path / f"darks/d60_{i}.fits", {**base, "IMAGETYP": "DARK"})
        _write(tmp_path / f"darks/d300_{i}.fits", {**base, "EXPTIME": 300.0, "IMAGETYP": "DARK"})
        _write(tmp_path / f"flats/f_{i}.fits", {**base, "EXPTIME": 1.0, "IMAGETYP": "FLAT", "FILTER": "L"})
    _write(
        tmp_path / "lights/L/odd.fits",
        {**base, "IMAGETYP": "LIGHT", "FILTER": "L", "OBJECT": "M 42"},
        shape=(8, 16),
    )
    (tmp_path / "lights/L/broken.fits").write_bytes(b"SIMPLE  =  not really a FITS file")
    overrides = [{"pattern": "lights/x/*Ha*", "type": "light", "filter": "H"}]
    table = scan(tmp_path, overrides)
    row = table.set_index(table["path"].map(lambda p: Path(p).name))
    assert row.loc["m42_Ha_0.fits", "type"] == "light" and row.loc["m42_Ha_0.fits", "filter"] == "H"
    assert not row.loc["broken.fits", "accepted"]
    assert "broken.fits" in row.loc["broken.fits", "reason"]
    plan, table = build_plan(table, CFG, tmp_path)
    row = table.set_index(table["path"].map(lambda p: Path(p).name))
    assert list(plan) == ["M_42"]
    assert plan["M_42"]["filters"] == ["L", "H"]
    assert not row.loc["odd.fits", "accepted"] and "differs" in row.loc["odd.fits", "reason"]
    # nearest exposure dark; H lights have no flat and say so
    assert row.loc["m42_0.fits", "dark"] == "AutoMasterDark_60s"
    assert row.loc["m42_0.fits", "flat"] == "AutoMasterFlat_L"
    assert "no flat" in row.loc["m42_Ha_0.fits", "notes"]
    assert "AutoMasterDark_300s" not in plan["M_42"]["masters"]  # unused masters are not built


def test_dark_temperature_tolerance(tmp_path):
    _write(
        tmp_path / "lights/a.fits", {"IMAGETYP": "LIGHT", "EXPTIME": 60.0, "CCD-TEMP": -10.0, "OBJECT": "x"}
    )
    _write(tmp_path / "darks/d.fits", {"IMAGETYP": "DARK", "EXPTIME": 60.0, "CCD-TEMP": 5.0})
    plan, table = build_plan(scan(tmp_path), CFG, tmp_path)
    light = table[table["type"] == "light"].iloc[0]
    assert light["dark"] == "" and "no dark within 5" in light["notes"]


def test_no_lights_is_a_clear_error(tmp_path):
    _write(tmp_path / "darks/d.fits", {"IMAGETYP": "DARK", "EXPTIME": 60.0})
    with pytest.raises(PlanError, match="no usable light frames"):
        build_plan(scan(tmp_path), CFG, tmp_path)


def test_dangling_links_and_results_folders_in_the_data(tmp_path):
    _write(tmp_path / "lights/a.fits", {"IMAGETYP": "LIGHT", "EXPTIME": 60.0, "OBJECT": "x"})
    (tmp_path / "lights/gone.fits").symlink_to(tmp_path / "nowhere.fits")
    _write(tmp_path / "old_results/x/integration/Integration_L.fits", {"IMAGETYP": "Master Light"})
    (tmp_path / "old_results/.astroflow").mkdir()
    table = scan(tmp_path).set_index(scan(tmp_path)["path"].map(lambda p: Path(p).name))
    assert not table.loc["gone.fits", "accepted"] and "gone.fits" in table.loc["gone.fits", "reason"]
    assert "Integration_L.fits" not in table.index  # a run's results are never inputs
