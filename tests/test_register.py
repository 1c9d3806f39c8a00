import numpy as np
import pytest
from astropy.io import fits

from astroflow.io import FitsRows, write_fits
from astroflow.register import RegistrationError, WarpedRows, apply, fit_transform, register, warp
from astroflow.synth import _render_stars


def _field(rng, n, size):
    return np.column_stack([rng.uniform(10, size - 10, n), rng.uniform(10, size - 10, n)])


def _similarity(theta_deg, dx, dy, c=256):
    t = np.radians(theta_deg)
    r = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return np.hstack([r, (np.array([c, c]) - r @ [c, c] + [dx, dy])[:, None]])


@pytest.mark.parametrize("n_stars", [200, 5])
def test_register_recovers_transform(n_stars):
    rng = np.random.default_rng(2)
    ref = _field(rng, n_stars, 512)
    truth = _similarity(0.4, 13.3, -7.8)
    src = apply(truth, ref) + rng.normal(0, 0.05, ref.shape)  # lists stay brightest-first
    if n_stars > 20:  # some stars lost, some spurious detections
        src = np.vstack(
            [np.delete(src, rng.choice(n_stars, 15, replace=False), axis=0), _field(rng, 10, 512)]
        )
    reg = register(ref, src)
    corners = np.array([[0, 0], [511, 0], [0, 511], [511, 511]], float)
    err = np.hypot(*(apply(reg.matrix, corners) - apply(truth, corners)).T)
    assert err.max() < 0.1


def test_unrelated_star_lists_fail_cleanly():
    rng = np.random.default_rng(3)
    with pytest.raises(RegistrationError, match="matched"):
        register(_field(rng, 40, 512), _field(rng, 40, 512), min_matches=10)
    with pytest.raises(RegistrationError, match="too few stars"):
        register(_field(rng, 40, 512), _field(rng, 2, 512))


def test_fit_models():
    rng = np.random.default_rng(4)
    ref = _field(rng, 30, 100)
    m = np.array([[1.01, 0.02, 3.0], [-0.01, 0.99, -2.0]])
    np.testing.assert_allclose(fit_transform(ref, apply(m, ref), "affine"), m, atol=1e-9)
    s = _similarity(1.0, 2.0, 3.0, 50)
    np.testing.assert_allclose(fit_transform(ref, apply(s, ref), "similarity"), s, atol=1e-9)


def test_warp_moves_a_star_to_the_right_place_without_ringing():
    img = np.zeros((64, 64))
    _render_stars(img, [30.3], [33.6], [1e5], 1.2)
    m = np.array([[1.0, 0.0, 2.5], [0.0, 1.0, -1.25]])  # reference -> source
    out = warp(img.astype(np.float32), m, (64, 64))
    yy, xx = np.mgrid[0:64, 0:64]
    w = np.nan_to_num(out)
    cx, cy = (w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()
    assert abs(cx - (30.3 - 2.5)) < 0.02 and abs(cy - (33.6 + 1.25)) < 0.02
    assert np.nanmin(out) >= -1e-3  # clamping: no negative ring
    assert np.isnan(out[:, -2:]).all()  # uncovered pixels are NaN, not zeros


def test_band_by_band_resampling_is_the_whole_frame_warp(tmp_path):
    """Integration resamples each band as it reads it: the same pixels as warping the whole
    frame (up to OpenCV's 1/32 px coordinate rounding), the same uncovered (NaN) border."""
    rng = np.random.default_rng(3)
    img = rng.normal(100, 10, (300, 400)).astype(np.float32)
    img[150, 200] = 5000  # a star: clamping at work
    write_fits(tmp_path / "c.fits", img, fits.Header())
    a = np.radians(1.7)
    m = np.array([[np.cos(a), -np.sin(a), 5.3], [np.sin(a), np.cos(a), -7.6]])
    whole = warp(img, m, (300, 400))
    rows = WarpedRows(FitsRows(tmp_path / "c.fits"), m, (300, 400))
    bands = np.concatenate([rows[y0 : min(300, y0 + 37)] for y0 in range(0, 300, 37)])
    assert np.array_equal(np.isnan(bands), np.isnan(whole)) and np.isnan(whole).sum() > 1000
    assert np.nanmax(np.abs(bands - whole)) < 0.05 * 10  # a twentieth of the noise at most
    assert np.nanmax(bands) == np.nanmax(whole)


@pytest.mark.parametrize(
    "rotation, scale", [(0.0, 1.0), (0.3, 1.0), (-0.45, 1.00001), (2.0, 1.001), (179.7, 1.0)]
)
def test_two_pass_lanczos_reproduces_a_smooth_image(rotation, scale):
    """The separable passes (long runs of one weight row for a night's small rotations, a
    weight row per column for strong scales and flips) reproduce a smooth image at its
    transformed coordinates, and an integer shift moves pixels exactly."""
    from astroflow.resample import lanczos_affine

    def image(x, y):
        return 1000 + 50 * np.sin(0.21 * x + 0.13 * y) + 30 * np.cos(0.07 * x - 0.17 * y)

    ny, nx = 300, 700
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    src = image(xx, yy).astype(np.float32)
    th = np.deg2rad(rotation)
    m = scale * np.array([[np.cos(th), -np.sin(th), 0.0], [np.sin(th), np.cos(th), 0.0]])
    m[:, 2] = (3.37, -2.71) if abs(rotation) < 90 else (nx - 4.37, ny + 1.71)
    u, v = m[0, 0] * xx + m[0, 1] * yy + m[0, 2], m[1, 0] * xx + m[1, 1] * yy + m[1, 2]
    inside = (u > 10) & (u < nx - 11) & (v > 10) & (v < ny - 11)
    ours = lanczos_affine(src, m, np.empty_like(src))
    assert inside.mean() > 0.7
    assert np.abs(ours - image(u, v))[inside].max() < 0.5  # of an 80 ADU swing
    shifted = lanczos_affine(src, np.array([[1.0, 0.0, 3.0], [0.0, 1.0, -2.0]]), np.empty_like(src))
    assert np.array_equal(shifted[2:-4, :-5], src[:-6, 3:-2])


def test_flux_weighted_fit_is_more_precise_when_faint_stars_dominate():
    """Sky-limited centroids err by ~1/flux: weighting the pairs (register's ``flux``) lets the
    few bright stars set the transform instead of the many faint ones."""
    rng = np.random.default_rng(5)
    truth = _similarity(0.3, 4.2, -2.9)
    grid = _field(rng, 50, 512)
    errors = {"equal": [], "weighted": []}
    for _ in range(20):
        ref = _field(rng, 150, 512)
        flux = np.sort(rng.pareto(1.5, len(ref)) * 1000 + 300)[::-1]  # brightest first, mostly faint
        jitter = 0.6 * 300 / flux  # px, per coordinate and per list
        src = apply(truth, ref + rng.normal(0, 1, ref.shape) * jitter[:, None])
        src += rng.normal(0, 1, ref.shape) * jitter[:, None]
        for kind, weights in (("equal", None), ("weighted", (flux, flux))):
            m = register(ref, src, flux=weights).matrix
            errors[kind].append(np.sqrt(np.mean(np.sum((apply(m, grid) - apply(truth, grid)) ** 2, axis=1))))
    assert np.median(errors["weighted"]) < 0.85 * np.median(errors["equal"]), errors
