"""Subframe selection against AutoIntegrate's formulas (reference/peers.md §1.2.4)."""

import numpy as np
import pytest

from astroflow.subframes import best, outlier_limits, select, ssweight

FRAMES = [
    {
        "path": f"l{i}.fits",
        "fwhm": f,
        "eccentricity": e,
        "snr": s,
        "psf_signal": p,
        "psf_power": p * p,
        "stars": n,
    }
    for i, (f, e, s, p, n) in enumerate(
        [(2.0, 0.2, 30.0, 10.0, 100), (3.0, 0.4, 10.0, 5.0, 50), (2.5, 0.3, 20.0, 8.0, 80)]
    )
]
CFG = {
    "weight": "PSF Signal",
    "limits": dict.fromkeys(("fwhm", "eccentricity", "snr", "psf_signal", "psf_power", "stars"), 0),
    "outliers": {"method": "two sigma", "margin": 0.25, "fwhm": True, "eccentricity": True, "snr": False,
                 "psf_signal": False, "psf_power": False, "stars": True, "ssweight": False},
    "reference": "auto",
}  # fmt: skip


@pytest.mark.parametrize(
    "method,expected",
    [
        ("Generic", [20 + 15 + 25 + 40, 40, 10 + 7.5 + 12.5 + 40]),  # neg(FWHM), neg(Ecc), pos(SNR)
        ("Noise", [5 + 10 + 20 + 65, 65, 2.5 + 5 + 10 + 65]),
        ("Stars", [35 + 35 + 20 + 10, 10, 17.5 + 17.5 + 10 + 10]),
        ("PSF Signal", [10, 5, 8]),
        ("PSF Signal scaled", [100, 1, 99 * 0.6 + 1]),
        ("FWHM scaled", [100, 1, 50.5]),
        ("Eccentricity scaled", [100, 1, 50.5]),
        ("SNR scaled", [100, 1, 50.5]),
        ("Star count", [101, 51, 81]),
    ],
)
def test_ssweight_formulas(method, expected):
    np.testing.assert_allclose(ssweight(FRAMES, method), expected)


def test_outlier_methods():
    v = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    assert outlier_limits(v, "two sigma") == pytest.approx((4.5 - 2 * v.std(), 4.5 + 2 * v.std()))
    assert outlier_limits(v, "IQR") == pytest.approx(
        (3.0 - 1.5 * 4.0, 7.0 + 1.5 * 4.0)
    )  # sorted[2], sorted[6]


def test_limits_outliers_and_the_reference():
    rng = np.random.default_rng(0)
    frames = [
        {"path": f"l{i:02d}.fits", "fwhm": 3 + rng.normal(0, 0.1), "eccentricity": 0.3, "snr": 20.0,
         "psf_signal": 20 + rng.normal(0, 1), "psf_power": 400.0, "stars": int(rng.integers(40, 50))}
        for i in range(10)
    ]  # fmt: skip
    frames[2]["fwhm"], frames[5]["fwhm"] = 6.0, 5.0  # two defocused frames: both found
    frames[7]["stars"] = 3
    weights, reasons = select(frames, CFG)
    assert [i for i, r in enumerate(reasons) if r] == [2, 5, 7]
    assert "FWHM" in reasons[5] and "star count" in reasons[7] and weights[2] == 0
    few, _ = select(frames[:7], CFG)  # fewer than 8 frames: no outlier test
    assert (few > 0).all()
    limits = {**CFG, "limits": {**CFG["limits"], "fwhm": 3.05}}
    _, reasons = select(frames, limits)
    assert all("above the limit 3.05" in r for f, r in zip(frames, reasons, strict=True) if f["fwhm"] > 3.05)
    stars = np.array([f["stars"] for f in frames])
    pool = np.where((weights > 0) & (stars >= 0.9 * stars[weights > 0].max()))[0]
    assert best(frames, weights) == pool[np.argmax(weights[pool])]  # showing nearly the most stars
    frames[0]["stars"] = 200  # a frame with far more stars than any: the only candidate
    assert best(frames, weights) == 0
    assert best(frames, weights, "l04.fits") == 4
