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


def _calibration_night(tmp_path, lights, calibration):
    """Write lights and calibration frames: ``(name, header)`` pairs under lights/ and cal/."""
    for name, h in lights:
        _write(tmp_path / "lights" / name, {"IMAGETYP": "LIGHT", "OBJECT": "x", "FILTER": "L", **h})
    for name, h in calibration:
        _write(tmp_path / "cal" / name, h)
    plan, table = build_plan(scan(tmp_path), {**CFG, "calibration": CAL}, tmp_path)
    return plan["x"]["masters"], table.set_index(table["path"].map(lambda p: Path(p).name))


CAL = {"dark_temperature_tolerance": 5.0, "dark_scaling": "auto"}


def test_darks_of_two_temperatures_and_lights_of_two_gains_are_matched_per_light(tmp_path):
    lights = [(f"cold_{g}.fits", {"EXPTIME": 60.0, "CCD-TEMP": -10.0, "GAIN": g}) for g in (100, 200)]
    lights.append(("warm.fits", {"EXPTIME": 60.0, "CCD-TEMP": 10.2, "GAIN": 100}))
    darks = [
        (f"d{t}_{g}_{i}.fits", {"IMAGETYP": "DARK", "EXPTIME": 60.0, "CCD-TEMP": t, "GAIN": g})
        for t in (-10.0, 10.0)
        for g in (100, 200)
        for i in range(2)
    ]
    masters, row = _calibration_night(tmp_path, lights, darks)
    assert row.loc["cold_100.fits", "dark"] == "AutoMasterDark_60s_G100_-10C"
    assert row.loc["cold_200.fits", "dark"] == "AutoMasterDark_60s_G200_-10C"
    assert row.loc["warm.fits", "dark"] == "AutoMasterDark_60s_G100_10C"
    assert sorted(masters["AutoMasterDark_60s_G100_-10C"]["files"])[0].endswith("d-10.0_100_0.fits")
    assert not row.loc["d10.0_200_0.fits", "accepted"]  # no warm light at gain 200
    assert "unused" in row.loc["d10.0_200_0.fits", "reason"]


def test_a_dark_of_another_exposure_is_scaled_with_the_bias(tmp_path):
    lights = [("a.fits", {"EXPTIME": 60.0, "GAIN": 100})]
    cal = [(f"d{i}.fits", {"IMAGETYP": "DARK", "EXPTIME": 120.0, "GAIN": 100}) for i in range(2)]
    cal += [(f"b{i}.fits", {"IMAGETYP": "BIAS", "EXPTIME": 0.0, "GAIN": 100}) for i in range(2)]
    cal += [(f"b_other{i}.fits", {"IMAGETYP": "BIAS", "EXPTIME": 0.0, "GAIN": 300}) for i in range(2)]
    masters, row = _calibration_night(tmp_path, lights, cal)
    dark = row.loc["a.fits", "dark"]
    assert masters[dark]["calibrate_with"] == {"bias": row.loc["a.fits", "bias"]}
    assert "scaled to 60s" in row.loc["a.fits", "notes"]
    assert "settings (gain 300" in row.loc["b_other0.fits", "reason"]


def test_each_night_is_calibrated_with_its_own_frames(tmp_path):
    def night(day, hour):
        return f"2026-11-{day}T{hour}:00:00"

    lights = [
        (f"n{d}_{i}.fits", {"EXPTIME": 60.0, "DATE-OBS": night(d, 21 + i)})
        for d in (20, 25)
        for i in range(2)
    ]
    cal = [
        (
            f"{kind}{d}_{i}.fits",
            {"IMAGETYP": kind.upper(), "EXPTIME": e, "FILTER": "L", "DATE-OBS": night(d, 23)},
        )
        for d in (20, 25)
        for kind, e in (("dark", 60.0), ("flat", 1.0))
        for i in range(2)
    ]
    cal.append(("flat_R.fits", {"IMAGETYP": "FLAT", "EXPTIME": 1.0, "FILTER": "R"}))
    masters, row = _calibration_night(tmp_path, lights, cal)
    for d in (20, 25):
        for i in range(2):
            light = row.loc[f"n{d}_{i}.fits"]
            assert (
                light["dark"] == f"AutoMasterDark_60s_2026-11-{d}"
                and light["flat"] == f"AutoMasterFlat_L_2026-11-{d}"
            )
        assert all(f"dark{d}_" in Path(f).name for f in masters[f"AutoMasterDark_60s_2026-11-{d}"]["files"])
    assert row.loc["flat_R.fits", "reason"] == "unused: no light of filter R"
