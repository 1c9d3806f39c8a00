"""The whole pipeline on the real nights of ../shared/real-nights (see its README): what a user of
that data checks. Skipped, saying why, where those files are absent."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from conftest import ROOT, run_snakemake

from astroflow.measure import detect_stars
from astroflow.stages.register import registered_image

NIGHTS = ROOT.parent / "shared" / "real-nights"
pytestmark = pytest.mark.skipif(
    not NIGHTS.is_dir(), reason=f"{NIGHTS} is absent (real nights are not redistributed)"
)


@pytest.fixture(scope="module")
def arcsat(tmp_path_factory):
    out = tmp_path_factory.mktemp("arcsat")
    run_snakemake(NIGHTS / "arcsat-lpseb35-g", out)
    return out / "LPSEB35"


@pytest.fixture(scope="module")
def seestar(tmp_path_factory):
    out = tmp_path_factory.mktemp("seestar")
    run_snakemake(NIGHTS / "seestar-ngc7023", out)
    return out / "NGC_7023"


def _star_snr(image: np.ndarray, xy: np.ndarray, fwhm: float) -> np.ndarray:
    """Aperture SNR (radius 1.5 FWHM, sky from an annulus of 3-5 FWHM) of the stars at ``xy``."""
    yy, xx = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    out = []
    for x, y in xy:
        r = np.hypot(xx - x, yy - y)
        ap, sky = image[r <= 1.5 * fwhm], image[(r >= 3 * fwhm) & (r <= 5 * fwhm)]
        level, sigma = np.median(sky), 1.4826 * np.median(np.abs(sky - np.median(sky)))
        out.append((ap - level).sum() / (sigma * np.sqrt(ap.size)))
    return np.array(out)


def _depth(target: Path) -> tuple[float, float]:
    """How much deeper the stack is than its best frame on the frames' own stars (the brightest
    unsaturated ones of the area every frame covers), and how much deeper it could be: the SNR of
    an ideally weighted stack, sqrt(sum of the frames' SNR²), over the best frame's (√N for N
    equal frames)."""
    frames = pd.read_csv(target / "frames.tsv", sep="\t")
    lights = frames[(frames["type"] == "light") & frames["accepted"]]
    filt = lights["filter"].iloc[0]
    stack = fits.getdata(target / "integration" / f"Integration_{filt}.fits").astype(np.float32)
    coverage = fits.getdata(target / "integration" / f"Integration_{filt}_coverage.fits")
    common = cv2.erode((coverage == coverage.max()).astype(np.uint8), np.ones((61, 61), np.uint8)) > 0
    lum = stack.mean(axis=0) if stack.ndim == 3 else stack
    stars = detect_stars(lum, 5.0)
    inside = common[np.round(stars["y"]).astype(int), np.round(stars["x"]).astype(int)]
    keep = stars[~stars["sat"] & inside][:25]
    xy, fwhm = np.column_stack([keep["x"], keep["y"]]), float(np.median(keep["fwhm"]))
    singles = []
    for _, r in lights.iterrows():
        img = registered_image(target, r["path"])[0]
        singles.append(np.median(_star_snr(img.mean(axis=0) if img.ndim == 3 else img, xy, fwhm)))
    best = max(singles)
    return float(np.median(_star_snr(lum, xy, fwhm)) / best), float(
        np.sqrt(np.sum(np.square(singles))) / best
    )


def _common_area_is_clean(target: Path, filt: str) -> None:
    stack = fits.getdata(target / "integration" / f"Integration_{filt}.fits")
    coverage = fits.getdata(target / "integration" / f"Integration_{filt}_coverage.fits")
    common = coverage == coverage.max()
    planes = stack if stack.ndim == 3 else stack[None]
    assert common.mean() > 0.5
    for p in planes:
        assert np.isfinite(p[common]).all() and (p[common] != 0).all()


def test_arcsat_every_light_calibrated_with_its_masters_and_registered(arcsat):
    frames = pd.read_csv(arcsat / "frames.tsv", sep="\t")
    lights = frames[frames["type"] == "light"]
    assert len(lights) == 20 and lights["accepted"].all()
    assert (lights["dark"] == "AutoMasterDark_30s").all() and lights["flat"].str.startswith(
        "AutoMasterFlat"
    ).all()
    assert (frames["type"] != "light").sum() == 15 and frames[
        "accepted"
    ].all()  # 7 bias, 5 darks, 3 flats used
    # a defect map for a CCD at -25 °C: the few truly hot pixels, not the warm ones the dark removes
    assert (lights["bad_pixels"] / (1024 * 1024) < 0.005).all()
    gain, expected = _depth(arcsat)
    # 87 % of the ideal: undithered frames share the noise of the 5-frame master dark, which
    # averaging cannot remove (14 ADU per frame, 3.6 in the dark: a 20-frame stack's floor)
    assert gain > 0.8 * expected, (gain, expected)
    _common_area_is_clean(arcsat, lights["filter"].iloc[0])


def test_arcsat_hot_pixels_of_the_undithered_frames_are_gone(arcsat):
    """Guided, not dithered: a hot pixel sits on the same sky pixel in every frame, so only the
    dark and the defect map can remove it."""
    filt = pd.read_csv(arcsat / "frames.tsv", sep="\t").query("type == 'light'")["filter"].iloc[0]
    stack = fits.getdata(arcsat / "integration" / f"Integration_{filt}.fits").astype(np.float32)
    dark = fits.getdata(arcsat / "masters/AutoMasterDark_30s.fits").astype(np.float32)
    hot = dark - cv2.medianBlur(dark, 5) > 25  # ADU above the neighbourhood: ~3900 pixels
    residual = stack - cv2.medianBlur(stack, 5)
    sigma = 1.4826 * np.median(np.abs(residual - np.median(residual)))
    assert hot.sum() > 1000
    assert (residual[hot] > 5 * sigma).mean() < 0.01


def test_seestar_both_sessions_registered_across_the_rotation_and_deeper(seestar):
    frames = pd.read_csv(seestar / "frames.tsv", sep="\t")
    lights = frames[frames["type"] == "light"]
    assert len(lights) == 6 and lights["accepted"].all() and (lights["bayer"] == "GRBG").all()
    rotations = np.sort(lights["rotation"].abs().to_numpy())
    assert (rotations[:2] < 0.1).all() and (abs(rotations[2:] - 121.5) < 0.5).all()  # README: -121.5°
    gain, expected = _depth(seestar)
    # two sessions, 10 s and 20 s with another pedestal: the stars put them on one scale
    # (normalization auto: photometric); 88 % of an ideally weighted stack of the same frames
    assert gain > 0.85 * expected, (gain, expected)
    _common_area_is_clean(seestar, "RGB")
