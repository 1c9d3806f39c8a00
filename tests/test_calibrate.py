import numpy as np
import pytest

from astroflow import cosmetic
from astroflow.calibrate import calibrate_light
from astroflow.debayer import channel_masks, debayer, effective_pattern


def test_calibrate_with_dark_containing_bias():
    light = np.full((4, 4), 1600.0, np.float32)
    dark = np.full((4, 4), 600.0, np.float32)
    flat = np.full((4, 4), 0.5, np.float32)
    out = calibrate_light(light, 120.0, dark=(dark, 120.0, True), flat=flat)
    np.testing.assert_allclose(out, 2000.0)


def test_calibrate_inplace_reuses_the_frame_and_gives_the_same_result():
    rng = np.random.default_rng(0)
    light = rng.normal(1600, 30, (8, 8)).astype(np.float32)
    dark, flat = np.full((8, 8), 600.0, np.float32), rng.uniform(0.5, 1.0, (8, 8)).astype(np.float32)
    kept = calibrate_light(light, 120.0, dark=(dark, 120.0, True), flat=flat)
    assert not np.shares_memory(kept, light)
    own = calibrate_light(light, 120.0, dark=(dark, 120.0, True), flat=flat, inplace=True)
    assert own is light and np.array_equal(own, kept)
    counts = np.full((8, 8), 1600, np.uint16)  # not float32: converted, the input untouched
    assert calibrate_light(counts, 120.0, dark=(dark, 120.0, True), inplace=True) is not counts
    assert (counts == 1600).all()


def test_dark_scaling_with_bias():
    bias = np.full((4, 4), 500.0, np.float32)
    dark_current = np.full((4, 4), 100.0, np.float32)  # bias-subtracted, 300 s
    light = np.full((4, 4), 500 + 1000 + 40, np.float32)  # 120 s: 40 ADU of dark current
    out = calibrate_light(light, 120.0, bias=bias, dark=(dark_current, 300.0, False))
    np.testing.assert_allclose(out, 1000.0)


def test_dead_flat_pixels_become_nan_for_cosmetic_correction():
    flat = np.ones((4, 4), np.float32)
    flat[1, 1] = 0.0
    out = calibrate_light(np.full((4, 4), 10.0, np.float32), 1.0, flat=flat)
    assert np.isnan(out[1, 1]) and np.isfinite(out).sum() == 15


def test_bad_pixel_map_ignores_amp_glow_and_finds_hot_and_dead_pixels():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:200, 0:200]
    dark = 500 + rng.normal(0, 2, (200, 200)) + 40 * np.exp(-np.hypot(yy - 200, xx - 200) / 20)
    dark[50, 60] += 300
    dark[120, 30] += 80
    flat = np.ones((200, 200)) * (1 - 0.3 * (np.hypot(yy - 100, xx - 100) / 141) ** 2)
    flat[10, 10] = 0.05
    bpm = cosmetic.bad_pixel_map(dark.astype(np.float32), flat.astype(np.float32))
    assert bpm[50, 60] == cosmetic.HOT and bpm[120, 30] == cosmetic.HOT
    assert bpm[10, 10] == cosmetic.COLD
    assert (bpm[180:, 180:] != 0).mean() < 0.02  # glow corner is not a defect
    assert (bpm != 0).mean() < 0.01


def test_isolated_defects_spare_stars():
    from astroflow.synth import _render_stars

    rng = np.random.default_rng(1)
    img = rng.normal(100, 5, (100, 100))
    _render_stars(img, [40.2], [60.7], [50000], 1.3)
    img[20, 20] += 500
    img[70, 30] -= 80
    bad = cosmetic.isolated_defects(img.astype(np.float32), 6.0, 5.0)
    assert bad[20, 20] == cosmetic.HOT and bad[70, 30] == cosmetic.COLD
    assert not bad[55:66, 35:46].any()
    fixed = cosmetic.correct(img.astype(np.float32), bad)
    assert abs(fixed[20, 20] - 100) < 20


def test_isolated_defects_spare_a_pixel_centred_star():
    """A star centred on a pixel looks most like a hot pixel; its peak must not be 'repaired'."""
    from astroflow.synth import _render_stars

    img = np.full((60, 60), 100.0)
    _render_stars(img, [30.0], [30.0], [20000], 1.0)
    assert not cosmetic.isolated_defects(img.astype(np.float32), 6.0, 5.0).any()


@pytest.mark.parametrize("centre", [(30.0, 30.0), (30.5, 31.0), (31.0, 29.5)])
def test_isolated_defects_spare_a_sharp_red_star_on_a_cfa(centre):
    """In one colour's lattice a sharp star's core and wings stand alone (their same-colour
    neighbours are 2 px away); its nearest sites, of the other colours, carry it too. The red
    of a bright red star (green 0.3 of it, blue 0.1) must not be "repaired"; a hot pixel is."""
    from astroflow.synth import _render_stars

    rng = np.random.default_rng(3)
    sky = np.zeros((64, 64))
    _render_stars(sky, [centre[1]], [centre[0]], [400000], 2.5 / 2.3548)
    response = np.array([[1.0, 0.3], [0.3, 0.1]])  # RGGB
    cfa = 150 + np.tile(response, (32, 32)) * sky + rng.normal(0, 5, sky.shape)
    cfa[10, 50] += 200  # an isolated hot pixel, 40 sigma
    bad = cosmetic.isolated_defects(cfa.astype(np.float32), 6.0, 5.0, cfa=True)
    assert bad[10, 50] == cosmetic.HOT
    assert not bad[24:38, 24:38].any()


def test_isolated_defects_spare_the_flanks_of_undersampled_stars():
    """Stars of 2 px FWHM: a diagonal flank pixel's 3×3 median is the sky's, so the
    fine-structure test alone let it through; a hot pixel is its 3×3's peak, a flank is not."""
    from astroflow.synth import _render_stars

    rng = np.random.default_rng(5)
    img = rng.normal(500, 20, (200, 200))
    ys, xs = np.mgrid[20:200:20, 20:200:20].reshape(2, -1) + rng.uniform(-0.5, 0.5, (2, 81))
    _render_stars(img, list(xs), list(ys), list(rng.uniform(15000, 60000, 81)), 2.0 / 2.3548)
    img[10, 10] += 400
    bad = cosmetic.isolated_defects(img.astype(np.float32), 6.0, 20.0)
    assert bad[10, 10] == cosmetic.HOT
    by, bx = np.nonzero(bad)
    near = np.hypot(by[:, None] - ys[None], bx[:, None] - xs[None]).min(axis=1) < 4
    assert not near.any(), list(zip(by[near], bx[near], strict=True))


def test_repair_inside_a_star_keeps_its_flux():
    """A bad-pixel-map hit on a star's peak (most apertures hold one at 3 sigma) costs < 1 %."""
    from astroflow.synth import _render_stars

    img = np.zeros((40, 40))
    _render_stars(img, [20.0], [20.0], [10000], 1.27)  # sigma 1.27 px = FWHM 3 px
    bad = np.zeros(img.shape, bool)
    bad[20, 20] = True
    fixed = cosmetic.correct(img.astype(np.float32), bad)
    assert abs(fixed.sum() - img.sum()) / img.sum() < 0.01


def test_cfa_correction_uses_same_colour_neighbours():
    img = np.zeros((20, 20), np.float32)
    masks = channel_masks("RGGB", img.shape)
    img[masks[0]], img[masks[1]], img[masks[2]] = 100, 200, 300
    bad = np.zeros(img.shape, bool)
    bad[10, 10] = True  # a red site
    assert cosmetic.correct(img, bad, cfa=True)[10, 10] == 100


@pytest.mark.parametrize(
    "pattern,xoff,yoff,roworder,expected",
    [
        ("RGGB", 0, 0, "TOP-DOWN", "RGGB"),
        ("RGGB", 1, 0, "TOP-DOWN", "GRBG"),
        ("RGGB", 0, 1, "TOP-DOWN", "GBRG"),
        ("RGGB", 1, 1, "TOP-DOWN", "BGGR"),
        ("RGGB", 0, 0, "BOTTOM-UP", "GBRG"),
    ],
)
def test_effective_pattern(pattern, xoff, yoff, roworder, expected):
    assert effective_pattern(pattern, xoff, yoff, roworder, height=100) == expected


@pytest.mark.parametrize("method", ["bilinear", "ea", "mhc", "cd", "rcd"])
@pytest.mark.parametrize("pattern", ["RGGB", "BGGR", "GRBG", "GBRG"])
def test_debayer_recovers_smooth_colour(pattern, method):
    yy, xx = np.mgrid[0:40, 0:40]
    truth = np.stack([1000 + 5 * xx, 2000 + 0 * xx, 3000 + 5 * yy]).astype(np.float32)
    cfa = (truth * channel_masks(pattern, (40, 40))).sum(0)
    out = debayer(cfa, pattern, method)
    np.testing.assert_allclose(out[:, 3:-3, 3:-3], truth[:, 3:-3, 3:-3], atol=1.0)


def test_colour_difference_debayer_is_deeper_than_mhc_and_keeps_star_colours():
    """Against the truth of sharp (FWHM 2.5 px) coloured stars: ``cd`` measures a faint star's
    flux with 2 % less noise than ``mhc`` (matched filter, normalised by each method's own response
    to a star) and each channel's aperture flux within 2 % (RCD's scatter by ~20 % here)."""
    import cv2
    import sep

    rng = np.random.default_rng(1)
    n, sigma = 192, 2.5 / 2.3548
    yy, xx = np.mgrid[0:n, 0:n]
    pos = 20 + 25 * np.mgrid[0:7, 0:7].reshape(2, -1).T + rng.uniform(0, 1, (49, 2))  # x, y
    colours = rng.uniform(0.3, 1.7, (49, 3))
    r2 = (xx[None] - pos[:, 0, None, None]) ** 2 + (yy[None] - pos[:, 1, None, None]) ** 2
    psfs = np.exp(-r2 / (2 * sigma**2)) / (2 * np.pi * sigma**2)
    truth = np.einsum("sc,syx->cyx", 5000 * colours, psfs).astype(np.float32)
    masks = channel_masks("RGGB", (n, n))
    white = (psfs.sum(0) * masks.any(0)).astype(np.float32)  # unit-flux grey stars on every site
    noise = rng.normal(0, 10, (4, n, n)).astype(np.float32)
    kernel = cv2.getGaussianKernel(11, sigma) @ cv2.getGaussianKernel(11, sigma).T

    def point_noise(method):
        def matched(img):
            return cv2.filter2D(debayer(img, "RGGB", method).mean(0), cv2.CV_32F, kernel.astype(np.float32))

        response = matched(white)[np.round(pos[:, 1]).astype(int), np.round(pos[:, 0]).astype(int)].mean()
        return np.mean([matched(nz)[10:-10, 10:-10].std() for nz in noise]) / response

    rgb = debayer((truth * masks).sum(0), "RGGB", "cd")
    errors = [
        sep.sum_circle(rgb[c].astype(float), pos[:, 0], pos[:, 1], 6.25)[0]
        / sep.sum_circle(truth[c].astype(float), pos[:, 0], pos[:, 1], 6.25)[0]
        - 1
        for c in range(3)
    ]
    assert np.std(errors) < 0.02
    assert point_noise("cd") < 0.985 * point_noise("mhc")  # 0.977 here; rcd 0.980


def test_cfa_flat_colours_are_equalised_keeping_vignetting_and_green_response(tmp_path):
    """A tinted flat panel (R 0.9, B 0.8 of green) must not recolour the lights: each colour of
    the master flat is scaled to a median of 1, the vignetting stays, and the two green sites
    keep their response difference (a sensor property lights have too)."""
    from astropy.io import fits

    from astroflow.calibrate import master

    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:64, 0:96]
    vignetting = 1 - 0.3 * (np.hypot(yy - 32, xx - 48) / 58) ** 2
    tint = np.ones((64, 96))
    tint[0::2, 0::2], tint[1::2, 1::2] = 0.9, 0.8  # RGGB: R, B sites
    tint[1::2, 0::2] = 1.02  # second green 2 % more sensitive
    paths = []
    for i in range(3):
        img = 20000 * vignetting * tint + rng.normal(0, 20, tint.shape)
        paths.append(str(tmp_path / f"flat{i}.fits"))
        fits.PrimaryHDU(
            img.astype(np.float32), fits.Header({"BAYERPAT": "RGGB", "IMAGETYP": "Flat"})
        ).writeto(paths[-1])
    plain, _, _ = master(paths, "flat")
    flat, header, _ = master(paths, "flat", equalize_cfa=True)
    masks = channel_masks("RGGB", flat.shape)
    assert abs(np.median(plain[masks[2]]) / np.median(plain[masks[1]]) - 0.8 / 1.01) < 0.01  # tinted
    for m in masks:
        assert abs(np.median(flat[m]) - 1) < 0.002
    np.testing.assert_allclose(
        flat[0::2, 0::2] / flat[0::2, 0::2].max(), (vignetting / vignetting.max())[0::2, 0::2], atol=0.01
    )
    g2_over_g1 = np.median(flat[1::2, 0::2]) / np.median(flat[0::2, 1::2])
    assert abs(g2_over_g1 - 1.02) < 0.003
    assert any("CFA colours equalised" in str(h) for h in header["HISTORY"])
    # a neutral sky through the same sensor: its greens agree, red and blue agree, and green
    # stands above them only by the greens' mean response (1 %), not by the panel's tint
    response = np.ones_like(tint)
    response[1::2, 0::2] = 1.02
    out = calibrate_light((1000 * vignetting * response).astype(np.float32), 1.0, flat=flat)
    r, g1, g2, b = (np.median(out[i // 2 :: 2, i % 2 :: 2]) for i in range(4))
    assert abs(g1 / g2 - 1) < 0.002 and abs(r / b - 1) < 0.002 and abs(g1 / r - 1.01) < 0.003


def test_cfa_flat_with_an_unreadable_bayer_pattern_is_kept_unequalised(tmp_path):
    from astropy.io import fits

    from astroflow.calibrate import master

    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"flat{i}.fits"))
        img = np.full((16, 16), 20000.0 + i, np.float32)
        fits.PrimaryHDU(img, fits.Header({"BAYERPAT": "XYZW"})).writeto(paths[-1])
    flat, _, notes = master(paths, "flat", equalize_cfa=True)
    assert np.allclose(flat, 1.0) and any("flat0.fits" in n and "not equalised" in n for n in notes)


def test_stars_on_nebulosity_beyond_the_pixel_stack_are_all_found(monkeypatch):
    """Detection starts with SExtractor's pixel stack; a frame whose nebulosity overflows it is
    extracted again with room for every pixel, finding what one roomy extraction finds."""
    from astroflow import measure

    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:600, :600]
    img = rng.normal(0, 1, (600, 600)) + 20 * np.exp(-((yy - 300) ** 2 + (xx - 300) ** 2) / (2 * 60**2))
    for y, x in rng.uniform(40, 560, (40, 2)):
        img += 200 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 1.5**2))
    img = img.astype(np.float32)
    roomy = measure._extract(img, 3.0, 1.0)
    monkeypatch.setattr(measure, "PIXSTACK", 20_000)  # the nebula alone holds ~40 000 pixels
    tight = measure._extract(img, 3.0, 1.0)
    assert len(roomy) >= 25 and roomy["npix"].max() > 20_000 and (tight == roomy).all()
