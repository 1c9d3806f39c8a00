import importlib.resources
import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from conftest import write_dng

from astroflow.io import FrameError, read_header, read_image, write_fits, write_xisf


def test_uint16_with_bzero_reads_as_adu(tmp_path):
    data = np.array([[0, 1000], [40000, 65535]], np.uint16)
    fits.PrimaryHDU(data).writeto(tmp_path / "a.fits")
    img, header, scale = read_image(tmp_path / "a.fits")
    assert img.dtype == np.float32 and scale == 1.0
    np.testing.assert_array_equal(img, data.astype(np.float32))


def test_normalised_float_is_scaled_to_adu(tmp_path):
    data = np.array([[0.0, 0.5], [0.25, 1.0]], np.float32)
    fits.PrimaryHDU(data).writeto(tmp_path / "a.fits")
    img, _, scale = read_image(tmp_path / "a.fits")
    assert scale == 65535.0
    np.testing.assert_allclose(img, data * 65535.0)


def test_float_in_adu_is_kept(tmp_path):
    data = np.array([[500.0, 1200.5], [3.0, 60000.0]], np.float32)
    fits.PrimaryHDU(data).writeto(tmp_path / "a.fits")
    img, _, scale = read_image(tmp_path / "a.fits")
    assert scale == 1.0
    np.testing.assert_array_equal(img, data)


@pytest.mark.parametrize("dtype", [np.float32, np.uint16, np.int32, np.float64])
def test_rows_read_into_a_band_are_the_pixels(tmp_path, dtype):
    """FitsRows reads float32 straight into the band and swaps it there; the other types convert."""
    from astroflow.io import FitsRows

    data = (np.random.default_rng(5).random((3, 40, 31)) * 60000).astype(dtype)
    fits.PrimaryHDU(data).writeto(tmp_path / "a.fits")
    rows = FitsRows(tmp_path / "a.fits")
    band = np.full((2, 7 * 31), np.nan, np.float32)
    rows.read_into(band[1], 30, channel=2)
    np.testing.assert_array_equal(band[1], data[2, 30:37].astype(np.float32).ravel())
    assert np.isnan(band[0]).all()  # nothing beside the row it was given


def test_tile_compressed_real_frame():
    path = importlib.resources.files("astropy") / "io/fits/hdu/compressed/tests/data/m13.fits"
    if not Path(str(path)).exists():
        pytest.skip("astropy's compressed M13 test file is not installed")
    img, header, _ = read_image(path)
    assert img.shape == (300, 300) and np.isfinite(img).all()
    assert read_header(path)["NAXIS1"] == 300


@pytest.mark.parametrize("compression", ["RICE_1", "GZIP_1", "HCOMPRESS_1"])
def test_tile_compressed_fits_is_read_not_called_truncated(tmp_path, compression):
    data = np.random.default_rng(0).integers(1000, 1016, (120, 200)).astype(np.uint16)  # sky-like
    header = fits.Header({"IMAGETYP": "Light Frame", "EXPTIME": 30.0})
    hdus = [fits.PrimaryHDU(), fits.CompImageHDU(data, header, compression_type=compression)]
    fits.HDUList(hdus).writeto(tmp_path / "a.fits.fz")
    assert (tmp_path / "a.fits.fz").stat().st_size < data.nbytes  # compressed, so "smaller than the image"
    h = read_header(tmp_path / "a.fits.fz")
    assert (h["NAXIS1"], h["NAXIS2"], h["EXPTIME"]) == (200, 120, 30.0)
    np.testing.assert_array_equal(read_image(tmp_path / "a.fits.fz")[0], data)


def test_one_unparsable_card_is_dropped_with_a_warning(tmp_path, caplog):
    header = fits.Header({"IMAGETYP": "Light", "EXPTIME": 30.0, "GAIN": 100, "INSTRUME": "ZWO ASI2600MM"})
    fits.PrimaryHDU(np.full((16, 16), 7, np.uint16), header).writeto(tmp_path / "a.fits")
    raw = bytearray((tmp_path / "a.fits").read_bytes())
    at = raw.find(b"GAIN    =")
    raw[at : at + 80] = b"GAIN    =                  1O0 / a typo".ljust(80)  # a malformed number
    raw[raw.find(b"ZWO ASI") + 3] = 7  # a control byte inside a string
    (tmp_path / "a.fits").write_bytes(bytes(raw))
    for read in (read_header, lambda p: read_image(p)[1]):
        h = read(tmp_path / "a.fits")
        assert "GAIN" not in h and "INSTRUME" not in h and h["EXPTIME"] == 30.0
    assert "a.fits: header card GAIN is unparsable" in caplog.text and "card INSTRUME" in caplog.text
    assert read_image(tmp_path / "a.fits")[0].mean() == 7


def test_camera_raw_frames_read_through_libraw(tmp_path):
    cfa = np.random.default_rng(0).integers(500, 4000, (64, 96)).astype(np.uint16)
    write_dng(tmp_path / "IMG_0001.dng", cfa, exposure=30.0, black=512, white=15000)
    h = read_header(tmp_path / "IMG_0001.dng")
    assert (h["NAXIS1"], h["NAXIS2"], h["BAYERPAT"], h["EXPTIME"]) == (96, 64, "RGGB", 30.0)
    assert (h["BLKLEVEL"], h["SATURATE"], h["DATE-OBS"]) == (512.0, 15000.0, "2026-11-20T21:30:00")
    data, _, scale = read_image(tmp_path / "IMG_0001.dng")
    assert scale == 1.0 and data.dtype == np.float32
    np.testing.assert_array_equal(data, cfa)
    (tmp_path / "IMG_0002.cr2").write_bytes(b"II*\x00 not really a Canon raw")
    with pytest.raises(FrameError, match="IMG_0002.cr2: not a readable camera raw"):
        read_header(tmp_path / "IMG_0002.cr2")


def test_xisf_round_trip(tmp_path):
    data = (np.arange(12, dtype=np.float32).reshape(3, 4) * 100).astype(np.float32)
    header = fits.Header({"IMAGETYP": "LIGHT", "EXPTIME": 30.0, "FILTER": "Ha"})
    write_xisf(tmp_path / "a.xisf", data, header)
    img, h, scale = read_image(tmp_path / "a.xisf")
    np.testing.assert_allclose(img, data, rtol=1e-5, atol=1e-3)
    assert h["IMAGETYP"] == "LIGHT" and h["EXPTIME"] == 30.0 and h["FILTER"] == "Ha"
    assert read_header(tmp_path / "a.xisf")["NAXIS1"] == 4


def test_truncated_and_garbage_files_name_the_file(tmp_path):
    fits.PrimaryHDU(np.zeros((64, 64), np.uint16)).writeto(tmp_path / "full.fits")
    raw = (tmp_path / "full.fits").read_bytes()
    (tmp_path / "cut.fits").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "junk.fits").write_text("this is not a FITS file")
    for name, message in (("cut.fits", "truncated"), ("junk.fits", "not a readable")):
        with pytest.raises(FrameError, match=message) as err:
            read_header(tmp_path / name)
        assert name in str(err.value)


def test_write_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "out.fits"
    write_fits(target, np.ones((4, 4), np.float32))
    before = target.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "pwrite", boom)  # the float32 writer's data writes
    with pytest.raises(OSError):
        write_fits(target, np.zeros((4, 4), np.float32))
    monkeypatch.setattr(fits.HDUList, "writeto", boom)  # other types go through astropy
    with pytest.raises(OSError):
        write_fits(target, np.zeros((4, 4), np.uint8))
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.fits"]


def test_per_frame_columns_are_declared_once():
    from astroflow import records

    assert records.per_channel("noise", 2) == "noise_2" and "noise_2" in records.MEASURE
    with pytest.raises(KeyError, match="declare them"):
        records.check({"path": "a.fits", "fhwm": 2.0}, records.MEASURE)
    assert not set(records.MEASURE) & set(records.REGISTRATION)
