import numpy as np
import pytest

from astroflow.integrate import FrameNorm, auto_rejection, integrate, reject, reject_state, sorting_network


@pytest.mark.parametrize(
    "n,method",
    [
        (3, "percentile"),
        (7, "percentile"),
        (8, "sigma"),
        (19, "sigma"),
        (20, "linear"),
        (24, "linear"),
        (25, "esd"),
    ],
)
def test_auto2_rule(n, method):
    assert auto_rejection(n, "auto2") == method
    # astroflow's auto: the leave-one-out sigma clipping for small stacks too
    assert auto_rejection(n) == ("sigma" if method == "percentile" else method)


def test_auto1_rule():
    assert auto_rejection(30, "auto1") == "sigma"


def _stack(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(1000, 10, (n, 5000)).astype(np.float32)
    x[0, :500] += 400  # a satellite trail in frame 0
    x[1, 500:1000] -= 400  # a dead column in frame 1
    return x


@pytest.mark.parametrize(
    "method,params,n",
    [
        ("percentile", (0.2, 0.1), 6),
        (
            "sigma",
            (4.0, 3.0),
            8,
        ),  # robust deviation: a trail among 8 frames (Samuelson forbids it with the std)
        ("winsorized", (4.0, 3.0), 15),
        ("linear", (5.0, 4.0), 22),
        ("esd", (0.3, 0.05), 30),
    ],
)
def test_rejection_finds_outliers_and_little_else(method, params, n):
    x = _stack(n)
    lo, hi = reject(x, method, *params)
    assert hi[0, :500].mean() > 0.99
    assert lo[1, 500:1000].mean() > 0.99
    clean = np.ones_like(lo)
    clean[0, :500] = clean[1, 500:1000] = False
    assert (lo | hi)[clean].mean() < 0.02


def test_linear_fit_keeps_honest_tails_and_finds_paired_outliers():
    """Against normal scores, Gaussian tails are not outliers (the rank fit clipped ~1 %)."""
    rng = np.random.default_rng(3)
    x = rng.normal(0.0, 1.0, (20, 50000)).astype(np.float32)
    lo, hi = reject(x, "linear", 5.0, 4.0)
    keep = ~(lo | hi)
    assert (lo | hi).mean() < 0.001
    mean = (x * keep).sum(0) / keep.sum(0)
    assert mean.std() / x.mean(0).std() < 1.005  # under 0.5 % of the stack's SNR
    x[:3, :1000] += 50.0  # three frames share an outlier (trail crossings): no masking
    lo, hi = reject(x, "linear", 5.0, 4.0)
    assert hi[:3, :1000].mean() > 0.99


def test_nan_is_missing_data_not_an_outlier():
    x = _stack(10)
    x[3, :2500] = np.nan
    lo, hi = reject(x, "sigma", 4.0, 3.0)
    assert not (lo | hi)[3, :2500].any()
    assert hi[0, :500].mean() > 0.99


def test_integration_is_independent_of_memory_budget_and_averages_noise():
    rng = np.random.default_rng(1)
    n, shape = 16, (120, 90)
    frames = [rng.normal(500 + 10 * i, 20, shape).astype(np.float32) for i in range(n)]
    frames[2][40, :] = 5000  # trail
    norms = [FrameNorm(np.array([500.0 + 10 * i]), np.array([20.0]), 1.0) for i in range(n)]
    big = integrate(frames, norms, "sigma", 4.0, 3.0, reference=0, memory_mb=512)
    small = integrate(frames, norms, "sigma", 4.0, 3.0, reference=0, memory_mb=0.05)  # many bands
    np.testing.assert_array_equal(big[0], small[0])
    image, rej_lo, rej_hi, coverage = big
    assert abs(np.median(image) - 500) < 1  # normalised to the reference frame's level
    assert np.std(image) < 20 / np.sqrt(n) * 1.15
    assert rej_hi[40].mean() > 0.9 / n and abs(image[40].mean() - 500) < 3
    assert (coverage == n).all()


def test_weights_favour_the_cleaner_frame():
    a = np.full((10, 10), 100.0, np.float32)
    b = np.full((10, 10), 200.0, np.float32)
    norms = [
        FrameNorm(np.array([0.0]), np.array([1.0]), 3.0),
        FrameNorm(np.array([0.0]), np.array([1.0]), 1.0),
    ]
    image = integrate([a, b], norms, "none", 0, 0, normalisation="none")[0]
    np.testing.assert_allclose(image, 125.0)


def test_growth_rejects_trail_wings_and_leaves_clean_pixels():
    rng = np.random.default_rng(5)
    n, shape = 12, (60, 80)
    frames = [rng.normal(100, 5, shape).astype(np.float32) for _ in range(n)]
    yy = np.arange(shape[0])[:, None]
    frames[4] += (400 * np.exp(-0.5 * ((yy - 30) / 1.2) ** 2)).astype(np.float32)  # trail with wings
    norms = [FrameNorm(np.array([100.0]), np.array([5.0]), 1.0) for _ in range(n)]
    plain = integrate(frames, norms, "sigma", 4.0, 3.0, memory_mb=0.05)
    grown = integrate(frames, norms, "sigma", 4.0, 3.0, memory_mb=0.05, grow=1, grow_sigma=2.0, grow_seed=6.0)
    excess = lambda img: img[27:34].mean() - 100  # noqa: E731
    assert excess(plain[0]) > 2 * excess(grown[0])  # the wings' residual is mostly gone
    assert abs(excess(grown[0])) < 0.5
    assert grown[2][4, 40:].mean() < 0.02  # far from the trail, almost nothing more is rejected


def test_growth_takes_the_resampling_ring_around_a_cosmic_ray():
    """Resampled, a cosmic-ray hit rings: its neighbours dip below the sky in the same frame.
    They are within the low clip, but next to a strong high rejection they are rejected too."""
    rng = np.random.default_rng(9)
    frames = [rng.normal(100, 5, (40, 40)).astype(np.float32) for _ in range(10)]
    frames[3][20, 20] = 2000.0  # the hit
    frames[3][20, 21] = 88.0  # its ring: 2.4 sigma low
    norms = [FrameNorm(np.array([100.0]), np.array([5.0]), 1.0) for _ in range(10)]
    options = dict(memory_mb=0.05, grow=1, grow_sigma=2.0, grow_seed=6.0)
    plain = integrate(frames, norms, "sigma", 4.0, 3.0, memory_mb=0.05)
    grown = integrate(frames, norms, "sigma", 4.0, 3.0, **options)
    assert plain[1][20, 21] == 0 and grown[1][20, 21] + grown[2][20, 21] == pytest.approx(0.1)
    assert grown[2][20, 20] == pytest.approx(0.1)  # the hit itself, as before


def test_growth_does_not_clip_the_upper_tail_of_correlated_noise():
    """Resampled noise is correlated between neighbours: growing from every high rejection also
    rejects the high neighbours of noise spikes that barely passed the clip, a one-sided cut
    that biases the stack low. Seeds more than ``grow_seed`` deviations high only grow
    trails and cosmic rays."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(8)
    n, shape = 8, (200, 200)
    frames = [gaussian_filter(rng.normal(0, 1, shape), 0.8) for _ in range(n)]
    frames = [(100 + 5 * f / f.std()).astype(np.float32) for f in frames]
    norms = [FrameNorm(np.array([100.0]), np.array([5.0]), 1.0) for _ in range(n)]
    options = dict(memory_mb=0.5, grow=1, grow_sigma=2.0)
    plain = integrate(frames, norms, "sigma", 4.0, 3.0, memory_mb=0.5)
    every = integrate(frames, norms, "sigma", 4.0, 3.0, grow_seed=0.0, **options)
    strong = integrate(frames, norms, "sigma", 4.0, 3.0, grow_seed=6.0, **options)
    assert every[2].mean() > 3 * plain[2].mean()  # noise alone tripled the rejections
    assert strong[2].mean() < plain[2].mean() + 0.0005
    assert (plain[0] - every[0]).mean() > 5 * abs((plain[0] - strong[0]).mean())  # the bias


@pytest.mark.parametrize("combine", ["average", "median"])
def test_a_pixel_whose_values_are_all_rejected_is_their_median_not_zero(combine):
    """Percentile clipping around a median of 53 rejects 5, 6 (low) and 100, 200 (high): the
    pixel must not become 0, and the rejection maps must say it was fully rejected."""
    values = (5.0, 6.0, 100.0, 200.0)
    frames = [np.full((4, 4), 20.0, np.float32) for _ in values]
    for f, v in zip(frames, values, strict=True):
        f[1, 2] = v
    norms = [FrameNorm(np.array([0.0]), np.array([1.0]), 1.0) for _ in values]
    image, rej_lo, rej_hi, coverage = integrate(
        frames, norms, "percentile", 0.2, 0.1, normalisation="none", combine=combine
    )
    assert image[1, 2] == pytest.approx(53.0)
    assert rej_lo[1, 2] + rej_hi[1, 2] == 1.0 and coverage[1, 2] == 4
    assert (np.delete(image.ravel(), 6) == 20.0).all()


@pytest.mark.parametrize("n", [*range(1, 17), 20, 37, 64, 100])
def test_the_sorting_network_sorts_every_input(n):
    """A comparator network sorts every input if it sorts every 0-1 input (Knuth's 0-1
    principle): all 2**n of them up to 16 values, many random ones (with ties) beyond."""
    if n <= 16:
        x = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
    else:
        x = np.random.default_rng(n).integers(0, 3, (20000, n))
    for i, j in sorting_network(n):
        x[:, i], x[:, j] = np.minimum(x[:, i], x[:, j]), np.maximum(x[:, i], x[:, j])
    assert (np.diff(x, axis=1) >= 0).all()


def test_rejection_of_a_band_with_gaps_is_the_same_column_by_column():
    """Columns are sorted 16 at a time: a column's result must not depend on its neighbours,
    whatever the number of frames with data in each (NaN gaps, a ragged last tile)."""
    rng = np.random.default_rng(3)
    x = rng.normal(100, 5, (12, 4099)).astype(np.float32)
    x[rng.random(x.shape) < 0.2] = np.nan
    x[rng.random(x.shape) < 0.02] += 80
    lo, hi = reject(x, "linear", 5, 4)
    for j in rng.choice(x.shape[1], 40, replace=False):
        lo_j, hi_j = reject(x[:, j : j + 1], "linear", 5, 4)
        assert (lo_j[:, 0] == lo[:, j]).all() and (hi_j[:, 0] == hi[:, j]).all()
    assert hi.sum() > 100  # the outliers were found


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16, np.int32])
@pytest.mark.parametrize("size", [1, 2, 7, 1000, 65536, 65537])
def test_median_is_numpys_median(dtype, size):
    """numerics.median: the value and type np.median gives, by another selection."""
    from astroflow.numerics import mad_sigma, median, nanmedian

    values = np.random.default_rng(size).normal(1000, 300, size).astype(dtype)
    assert median(values) == np.median(values) and type(median(values)) is type(np.median(values))
    assert mad_sigma(values) == 1.4826 * np.median(np.abs(values - np.median(values)))
    if dtype in (np.float32, np.float64):
        values[::3] = np.nan
        assert np.isnan(median(values))
        if size > 1:
            assert nanmedian(values) == np.nanmedian(values)


@pytest.mark.parametrize("fraction", [0.0, 1e-4, 0.5, 1.0])
def test_pixels_where_is_numpys_nonzero(fraction):
    from astroflow.numerics import pixels_where

    mask = np.random.default_rng(3).random((37, 53)) < fraction
    for got, want in zip(pixels_where(mask), np.nonzero(mask), strict=True):
        assert got.dtype == want.dtype and (got == want).all()


def test_kernels_give_the_same_bits_on_any_number_of_threads():
    """The C kernels split columns, rows and frames over threads: every thread count must give
    the identical rejection, growth, combination and resampling."""
    from astroflow import kernels
    from astroflow.resample import lanczos_affine

    rng = np.random.default_rng(11)
    n, shape = 9, (64, 5000)  # more than one block of columns and of rows
    frames = [rng.normal(100, 5, shape).astype(np.float32) for _ in range(n)]
    frames[3][30:33] += 300  # a trail: high rejections that grow
    frames[5][rng.random(shape) < 0.1] = np.nan
    norms = [FrameNorm(np.array([100.0]), np.array([5.0]), 1.0 + i / 10) for i in range(n)]
    saved = kernels.get_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            kernels.set_threads(threads)
            stack = integrate(frames, norms, "winsorized", 4.0, 3.0, grow=1, grow_sigma=2.0, grow_seed=3.0)
            warped = lanczos_affine(
                frames[0], np.array([[1.0, 0.01, 0.3], [-0.01, 1.0, 0.6]]), np.empty(shape, np.float32)
            )
            results.append([*stack, warped])
    finally:
        kernels.set_threads(saved)
    assert results[0][2].max() > 0  # the trail was rejected
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            assert np.array_equal(a, b, equal_nan=True)


def test_the_c_kernels_are_part_of_the_code_hash_of_the_stages_calling_them():
    """A changed kernel must rerun the masters and integrations, which call it."""
    from astroflow.options import _module_code, code_modules

    for stage in ("astroflow.stages.master", "astroflow.stages.integrate"):
        assert "astroflow._kernels" in code_modules(stage)
    assert "astroflow._kernels" not in code_modules("astroflow.stages.gradient")
    assert len(_module_code("astroflow._kernels")[0]) == 64  # the C text's digest


@pytest.mark.parametrize("n", [5, 8, 12, 20])
def test_sigma_clipping_rejects_pure_noise_as_rarely_as_its_gaussian_tails(n):
    """The leave-one-out deviation of a few values is itself uncertain: at a plain 3 sigma, 8
    frames of pure noise lost 0.9 % of their values high (7× the Gaussian tail) and a star's
    core, whose values differ with the seeing, lost flux. Calibrated by Student's t, each
    threshold rejects noise at its Gaussian rate whatever the frame count, and a cosmic ray
    among 5 frames or a 6-sigma trail among 20 still goes."""
    from statistics import NormalDist

    rng = np.random.default_rng(n)
    x = rng.normal(1000, 10, (n, 200_000)).astype(np.float32)
    lo, hi = reject(x, "sigma", 4.0, 3.0)

    def tail(k):
        return 1 - NormalDist().cdf(k)

    assert 0.4 * tail(3.0) < hi.mean() < 1.5 * tail(3.0)
    assert lo.mean() < 1.5 * tail(4.0) + 3 / x.size
    spike = x[:, :1000].copy()
    spike[0] += 60 if n == 20 else 500  # a 6-sigma trail among 20; a cosmic ray is thousands of sigma
    assert reject(spike, "sigma", 4.0, 3.0)[1][0].mean() > (0.9 if n == 20 else 0.999)


@pytest.mark.parametrize("n", [3, 4, 5, 8])
def test_percentile_clipping_matches_its_definition_in_full_and_gappy_tiles(n):
    """Full 16-column tiles take a SIMD path, tiles with NaN or fewer columns the per-column one:
    both must give the percentile rule of |median| fractions exactly."""
    rng = np.random.default_rng(n)
    x = rng.normal(1000, 30, (n, 16 * 40 + 5)).astype(np.float32)
    x[rng.integers(0, n, 200), rng.integers(0, x.shape[1], 200)] *= np.float32(1.5)
    x[:, 20:40] *= np.float32(-1)  # negative medians: fractions of |median|
    x[0, 100:110] = np.nan  # gappy columns in one tile
    state = reject_state(x, "percentile", 0.2, 0.1)
    med = np.nanmedian(x.astype(np.float64), axis=0)
    v = x.astype(np.float64)
    want = np.where(med - v > 0.2 * np.abs(med), 1, np.where(v - med > 0.1 * np.abs(med), 2, 0))
    want[~np.isfinite(x)] = 0
    if n - 1 < 3:  # a gappy column of 2 values is not clipped
        want[:, 100:110] = 0
    assert np.array_equal(state, want.astype(np.uint8)) and (state > 0).sum() > 50
