"""Unit tests of the post-integration library: palettes, stretches, crop, gradients, colour, stars."""

import sys

import numpy as np
import pytest
from astropy.io import fits

from astroflow import background, combine, crop, enhance, palettes, stars, stretch
from astroflow.synth import _render_stars

RNG = np.random.default_rng(7)
CH = {k: RNG.uniform(0.01, 0.99, (20, 30)).astype(np.float32) for k in "HSORGB"}


@pytest.mark.parametrize(
    "name,formula",
    [
        ("SHO", lambda c: (c["S"], c["H"], c["O"])),
        ("HOO", lambda c: (c["H"], c["O"], c["O"])),
        (
            "Pseudo_RGB",
            lambda c: (
                0.75 * c["H"] + 0.25 * c["S"],
                0.5 * c["S"] + 0.5 * c["O"],
                0.3 * c["H"] + 0.7 * c["O"],
            ),
        ),
        ("Natural_HOO", lambda c: (c["H"], 0.8 * c["O"] + 0.2 * c["H"], 0.85 * c["O"] + 0.15 * c["H"])),
        (
            "L-eXtreme_SHO",
            lambda c: (c["H"], 0.5 * c["H"] + 0.5 * np.maximum(c["S"], c["O"]), np.maximum(c["S"], c["O"])),
        ),
        (
            "max_RGB_HOO",
            lambda c: (np.maximum(c["R"], c["H"]), np.maximum(c["G"], c["O"]), np.maximum(c["B"], c["O"])),
        ),
        # the numpy form of Foraxx given in reference/peers.md §1.2.8
        (
            "Dynamic_SHO",
            lambda c: (
                c["O"] ** (1 - c["O"]) * c["S"] + (1 - c["O"] ** (1 - c["O"])) * c["H"],
                (c["O"] * c["H"]) ** (1 - c["O"] * c["H"]) * c["H"]
                + (1 - (c["O"] * c["H"]) ** (1 - c["O"] * c["H"])) * c["O"],
                c["O"],
            ),
        ),
        (
            "HSO_Mix_2",
            lambda c: (0.4 * c["H"] + 0.6 * c["S"], 0.4 * c["O"] + 0.3 * c["H"] + 0.3 * c["S"], c["O"]),
        ),
    ],
)
def test_palettes_match_their_formulas_pixel_by_pixel(name, formula):
    got = palettes.apply(palettes.PALETTES[name], CH)
    want = np.clip(np.stack(formula(CH)), 0, 1)
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize(
    "expr,message",
    [
        ("H +* O", "syntax error"),
        ("H + X", "unknown channel 'X'"),
        ("__import__('os').system('true')", "may be called"),
        ("H.real", "Attribute is not allowed"),
        ("sqrt(H, key=1)", "only max, min"),
        ("'a' * 3", "only numbers"),
    ],
)
def test_expressions_are_checked_not_evaluated(expr, message):
    with pytest.raises(palettes.ExpressionError, match=message) as e:
        palettes.evaluate(expr, CH, "palettes.custom.mine.r")
    assert "palettes.custom.mine.r" in str(e.value)


def test_pixelmath_operators():
    c = {"H": np.array([0.25], np.float32), "O": np.array([0.5], np.float32)}
    assert palettes.evaluate("~H", c)[0] == pytest.approx(0.75)
    assert palettes.evaluate("O^2", c)[0] == pytest.approx(0.25)
    assert palettes.evaluate("max(H, O) - min(H, O) / 2", c)[0] == pytest.approx(0.375)


def test_palette_choice_and_missing_channels():
    assert palettes.auto_palette({"H", "O"}) == "HOO"
    assert palettes.auto_palette({"H", "O", "S"}) == "SHO"
    assert palettes.auto_palette({"L", "R", "G", "B", "H"}) == "max_RH_GB"
    names = {p.name for p in palettes.resolve("all", {"H", "O"}, {})}
    assert {"HOO", "Natural_HOO", "Dynamic_HOO", "HOO_Helix"} <= names and "SHO" not in names
    with pytest.raises(palettes.ExpressionError, match=r"palettes.use: palette SHO needs channel\(s\) S"):
        palettes.resolve(["SHO"], {"H", "O"}, {})


def test_auto_stf_puts_the_median_on_target_and_clips_little():
    img = (0.01 + RNG.normal(0, 0.001, (3, 300, 300))).astype(np.float32)
    out = stretch.auto_stf(img, 0.25, -2.8, linked=True)
    assert np.allclose(np.median(out, axis=(1, 2)), 0.25, atol=0.005)
    assert (out <= 0).mean() <= 0.0011
    assert stretch.mtf(0.2, np.float32(0.2)) == pytest.approx(0.5)


@pytest.mark.parametrize("method", ["histogram", "arcsinh", "ghs", "masked"])
def test_other_stretches_reach_their_target(method):
    img = stretch.normalise(0.01 + RNG.normal(0, 0.001, (200, 200)), 0, 1)
    cfg = {
        "target_background": 0.25,
        "shadows_clip": -2.8,
        "arcsinh_factor": 50,
        "arcsinh_black_point": 0.01,
        "arcsinh_iterations": 3,
        "masked_target": 0.125,
        "ghs_D": 5.0,
        "ghs_b": 2.0,
    }
    out = stretch.apply(img, method, cfg)
    target = 0.125 if method == "masked" else 0.25
    assert np.median(out) == pytest.approx(target, abs=0.01)
    assert out.min() >= 0 and out.max() <= 1


def test_largest_rectangle_of_a_dithered_stack():
    mask = np.zeros((300, 400), bool)
    mask[20:280, 30:390] = True
    mask[25:40, 100:105] = False  # a hole: the best rectangle lies below it
    assert crop.largest_rectangle(mask) == (40, 280, 30, 390)
    with pytest.raises(ValueError, match="no common area"):
        crop.common_area([np.eye(50)])


def _sky(ny=400, nx=600, nebula=True, heavy=False):
    """Sky with a gradient (6 %, or 30 % when ``heavy``) and a nebula (large when ``heavy``)."""
    yy, xx = np.mgrid[0:ny, 0:nx]
    k = 5 if heavy else 1
    grad = 1000 + k * (60 * xx / nx + 30 * (yy / ny) ** 2)
    sx, sy = (90, 70) if heavy else (60, 50)
    neb = 80 * np.exp(-(((xx - 250) / sx) ** 2 + ((yy - 220) / sy) ** 2) / 2) if nebula else 0 * xx
    img = grad + neb + RNG.normal(0, 5, (ny, nx))
    _render_stars(
        img, RNG.uniform(10, nx - 10, 150), RNG.uniform(10, ny - 10, 150), RNG.uniform(500, 50000, 150), 1.3
    )
    return img.astype(np.float32), grad, neb


@pytest.mark.parametrize("heavy", [False, True])
@pytest.mark.parametrize("model", ["polynomial", "rbf"])
def test_gradient_removed_and_nebula_kept(model, heavy):
    img, grad, neb = _sky(heavy=heavy)
    out, bg_model, _ = background.correct(img, model, degree=2, smoothing=1.0)
    residual = bg_model - grad
    assert np.ptp(residual - np.median(residual)) < 0.1 * np.ptp(grad)  # < 10 % of the gradient left
    core = neb > 40
    kept = np.median((out - np.median(out[neb < 1]))[core]) / np.median(neb[core])
    assert kept > 0.9


def test_linear_fit_recovers_gain_and_offset():
    img, _, _ = _sky(nebula=False)
    ref = 3.0 + 0.5 * img
    np.testing.assert_allclose(combine.linear_fit(img, ref)[::10, ::10], ref[::10, ::10], rtol=0.01)


def test_classical_star_removal_leaves_under_5_percent_of_star_flux():
    ny, nx = 300, 400
    yy, xx = np.mgrid[0:ny, 0:nx]
    base = 0.2 + 0.15 * np.exp(-(((xx - 200) / 70) ** 2 + ((yy - 150) / 50) ** 2) / 2)  # sky + nebula
    img = base + RNG.normal(0, 0.005, (ny, nx))
    sx, sy, sf = RNG.uniform(15, nx - 15, 60), RNG.uniform(15, ny - 15, 60), RNG.uniform(2, 20, 60)
    star_img = np.zeros((ny, nx))
    _render_stars(star_img, sx, sy, sf, 1.3)
    img = np.clip(img + star_img, 0, 1).astype(np.float32)
    starless, only_stars = stars.remove_stars(img)
    residual = (starless - base)[star_img > 0.01].sum() / star_img[star_img > 0.01].sum()
    assert abs(residual) < 0.05
    far = star_img < 1e-4
    assert np.abs(np.median((starless - base)[far])) < 0.002  # background and nebula survive
    np.testing.assert_allclose(stars.combine(starless, only_stars, "screen"), img, atol=2e-3)


def _star_field():
    ny, nx = 200, 200
    yy, xx = np.mgrid[0:ny, 0:nx]
    base = np.full((ny, nx), 0.25, np.float32)
    star = sum(
        a * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 8.0) for x, y, a in [(50, 50, 0.7), (150, 60, 0.4)]
    )
    img = np.clip(1 - (1 - base) * (1 - star), 0, 1).astype(np.float32)  # screened onto the sky
    r2 = (xx - 50.0) ** 2 + (yy - 50.0) ** 2
    return img, base, star, r2


@pytest.mark.parametrize(
    "method,weaker,stronger",
    [
        ("transfer", {"strength": 0.3}, {"strength": 0.05}),
        ("halo", {"strength": 0.3}, {"strength": 0.15}),
        ("star", {"iterations": 1, "mode": 3}, {"iterations": 2, "mode": 1}),
    ],
)
def test_blanshan_star_reduction_shrinks_stars_and_leaves_the_sky(method, weaker, stronger):
    img, base, star, r2 = _star_field()

    def flux_and_radius(x):
        excess = np.clip(x - base, 0, None)[:100, :100]  # the first star
        return excess.sum(), np.sqrt((excess * r2[:100, :100]).sum() / excess.sum())

    f0, rad0 = flux_and_radius(img)
    results = [flux_and_radius(stars.reduce_blanshan(img, base, method, **kw)) for kw in (weaker, stronger)]
    (f_weak, rad_weak), (f_strong, rad_strong) = results
    assert 0.05 * f0 < f_strong < f_weak < f0  # dimmer, more so when stronger, still there
    assert rad_strong < rad0 and rad_weak <= rad0 * 1.001  # and smaller, not spread out
    out = stars.reduce_blanshan(img, base, method)
    np.testing.assert_allclose(out[star < 1e-6], img[star < 1e-6], atol=1e-5)  # sky untouched
    assert (out >= base - 1e-6).all()  # never darker than the starless image


def test_narrowband_line_recovered_and_added_to_its_broadband_channel():
    ny, nx = 256, 256
    yy, xx = np.mgrid[0:ny, 0:nx]
    stars_img = np.zeros((ny, nx))
    rng = np.random.default_rng(3)
    _render_stars(
        stars_img, rng.uniform(10, nx - 10, 40), rng.uniform(10, ny - 10, 40), rng.uniform(0.5, 5, 40), 1.5
    )
    line = 0.02 * np.exp(-((xx - 160) ** 2 + (yy - 100) ** 2) / (2 * 40.0**2))  # line flux, broadband units
    q = 3 / 100
    red = 0.05 + stars_img + line + rng.normal(0, 1e-4, (ny, nx))
    ha = 3.7 * (0.002 + q * stars_img + line) + rng.normal(0, 1e-4, (ny, nx))  # other gain, 3 nm filter
    assert combine.continuum_scale(ha, red) == pytest.approx(1 / (3.7 * q), rel=0.05)
    got = combine.line_signal(ha, red, 3, 100, combine.continuum_scale(ha, red))
    assert np.abs(got - (line - np.median(line))).max() < 0.1 * line.max()  # stars cancel, line stays
    chans = {"R": red.astype(np.float32), "G": red.astype(np.float32), "H": ha.astype(np.float32)}
    out, notes = combine.add_narrowband(chans, {"R": ["H"]}, 1.2, {"R": 100, "H": 3})
    core = line > 0.015
    assert np.median((out["R"] - red)[core]) == pytest.approx(1.2 * np.median(line[core]), rel=0.1)
    np.testing.assert_array_equal(out["G"], chans["G"])  # unmapped channels untouched
    assert notes[0].startswith("R+1.2*H")
    _, notes = combine.add_narrowband(
        {"R": red.astype(np.float32), "H": np.zeros_like(ha, np.float32)},
        {"R": ["H"]},
        1.2,
        {"R": 100, "H": 3},
    )
    assert "skipped" in notes[0]  # no stars in the narrowband channel: reported, not guessed


def test_acdnr_cuts_background_noise_and_keeps_stars():
    rng = np.random.default_rng(5)
    ny, nx = 200, 200
    star = np.zeros((ny, nx))
    _render_stars(star, np.array([60.0, 140.0]), np.array([70.0, 120.0]), np.array([6.0, 4.0]), 1.3)
    clean = 0.25 + np.clip(star, 0, 0.7)
    img = np.clip(clean + rng.normal(0, 0.03, (3, ny, nx)), 0, 1).astype(np.float32)
    out = enhance.acdnr(img)
    sky = star < 1e-4

    def noise(x):
        return (x.mean(axis=0) - clean)[sky].std(), (x - x.mean(axis=0))[:, sky].std()

    (lum0, chroma0), (lum1, chroma1) = noise(img), noise(out)
    assert lum1 < 0.8 * lum0 and chroma1 < 0.5 * chroma0
    assert abs(np.median(out[:, sky]) - np.median(img[:, sky])) < 0.005
    peaks = [(60, 70), (140, 120)]
    for x, y in peaks:  # star cores survive
        assert out[:, y, x].mean() == pytest.approx(img[:, y, x].mean(), rel=0.05)


# --- photometric colour calibration -----------------------------------------------------------


def _red_field(tmp_path, n=150, median_bv=1.2, seed=3):
    """RGB image of a reddened field (median B-V 1.2) through the synthetic camera, with a WCS
    and a catalogue CSV; returns (rgb, header, catalogue path, camera response)."""
    from astroflow.colour import blackbody_rgb, bv_to_temperature
    from astroflow.synth import RGB_RESPONSE, NightSpec, sky_wcs

    rng = np.random.default_rng(seed)
    w, h = 400, 300
    x, y = rng.uniform(10, w - 10, n), rng.uniform(10, h - 10, n)
    bv = np.clip(rng.normal(median_bv, 0.3, n), -0.2, 2.0)
    flux = rng.uniform(2e3, 4e4, n)
    response = np.array([RGB_RESPONSE[c] for c in "RGB"])
    fr = blackbody_rgb(bv_to_temperature(bv)) * response
    rgb = np.zeros((3, h, w))
    for c in range(3):
        _render_stars(rgb[c], x, y, flux * fr[:, c], 1.3)
    rgb = rgb + 100.0 + rng.normal(0, 3.0, rgb.shape)
    wcs = sky_wcs(NightSpec(width=w, height=h))
    ra, dec = wcs.all_pix2world(x, y, 0)
    cat = tmp_path / "field.csv"
    cat.write_text(
        "ra,dec,b-v\n" + "".join(f"{a:.8f},{d:.8f},{b:.3f}\n" for a, d, b in zip(ra, dec, bv, strict=True))
    )
    return rgb.astype(np.float32), wcs.to_header(), cat, response


def test_photometric_colour_keeps_a_red_field_red_and_the_sun_white(tmp_path):
    from astroflow.colour import (
        SUN_BV,
        blackbody_rgb,
        bv_to_temperature,
        calibrate_by_stars,
        calibrate_photometric,
    )

    rgb, header, cat, response = _red_field(tmp_path)
    sun = blackbody_rgb(bv_to_temperature(SUN_BV))[0] * response  # a Sun-like star through the camera
    _, gains, info = calibrate_photometric(rgb, header, cat)
    assert info["stars"] >= 50 and max(info["scatter_mag"]) < 0.08  # photometric noise of faint stars
    white = sun * gains
    np.testing.assert_allclose(white / white[1], 1.0, atol=0.01)
    # star-based white balance makes the (red) average star white: the Sun turns blue
    _, gains_s = calibrate_by_stars(rgb)
    bluish = sun * gains_s
    assert bluish[2] / bluish[0] > 1.3


def test_photometric_colour_errors_name_the_problem(tmp_path):
    from astroflow.colour import calibrate_photometric

    rgb, header, cat, _ = _red_field(tmp_path)
    with pytest.raises(ValueError, match="no WCS"):
        calibrate_photometric(rgb, fits.Header(), cat)
    with pytest.raises(ValueError, match="no such file.*missing.csv"):
        calibrate_photometric(rgb, header, tmp_path / "missing.csv")
    (tmp_path / "bad.csv").write_text("ra,dec,vmag\n1,2,3\n")
    with pytest.raises(ValueError, match="no B-V"):
        calibrate_photometric(rgb, header, tmp_path / "bad.csv")
    # Tycho-2 columns (BT, VT) are converted: B-V = 0.85 (BT - VT)
    lines = cat.read_text().splitlines()
    tycho = ["ra,dec,BTmag,VTmag"] + [
        f"{ra},{dec},{10 + float(bv) / 0.85:.4f},10" for ra, dec, bv in (row.split(",") for row in lines[1:])
    ]
    (tmp_path / "tycho.csv").write_text("\n".join(tycho) + "\n")
    _, gains_t, _ = calibrate_photometric(rgb, header, tmp_path / "tycho.csv")
    _, gains, _ = calibrate_photometric(rgb, header, cat)
    np.testing.assert_allclose(gains_t, gains, rtol=0.01)


def test_starnet_adapter_runs_an_external_command(tmp_path):
    """A stand-in with StarNet2's command line (IN.tif OUT.tif) that replaces stars by the sky."""
    from astroflow.stars import starnet

    fake = tmp_path / "fake-starnet"
    fake.write_text(
        "#!" + sys.executable + "\n"
        "import sys, numpy as np, tifffile\n"
        "img = tifffile.imread(sys.argv[1])\n"
        "tifffile.imwrite(sys.argv[2], np.full_like(img, np.median(img)))\n"
    )
    fake.chmod(0o755)
    img = np.full((3, 40, 50), 0.2, np.float32)
    img[:, 20, 25] = 0.9  # a star
    starless, star_img = starnet(img, str(fake))
    np.testing.assert_allclose(starless, 0.2, atol=1e-4)
    assert star_img[:, 20, 25].min() > 0.8 and np.abs(star_img[:, :10]).max() < 1e-3
    with pytest.raises(RuntimeError, match="failed"):
        starnet(img, "false")
    with pytest.raises(FileNotFoundError, match="not found"):
        starnet(img, "no-such-starnet")
