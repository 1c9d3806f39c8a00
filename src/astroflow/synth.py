"""Synthetic night generator with known truth (the physical model of reference/baselines.md).

Per pixel, in electrons::

    signal = (sky * gradient + transparency * stars + nebula + trail) * flat
    e      = Poisson(signal + (dark_current + hot + amp_glow) * t) + cosmics + N(0, read_noise)
    ADU    = e / EGAIN + bias + column/pixel bias pattern + per-frame row noise   (uint16)

Coordinates: the *sky frame* is the pixel grid of an unrotated, unshifted frame (origin 0 at the
first pixel, x along columns). Frame ``i`` sees sky point ``s`` at ``p = M_i @ [s, 1]`` where
``M_i`` (2×3) is stored in ``truth/truth.json``. Stars, flats and defects are written under
``truth/`` as JSON/TSV/NPY so the pipeline's folder scan ignores them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from scipy.special import erf, erfinv

from .colour import blackbody_rgb, bv_to_temperature
from .io import write_fits

FILTER_NAMES = {
    "L": "Luminance",
    "R": "Red",
    "G": "Green",
    "B": "Blue",
    "H": "Halpha",
    "O": "OIII",
    "S": "SII",
}
# Sky brightness (e-/s/px), star throughput relative to L, nebula emission (e-/s/px at peak).
SKY = {"L": 5.0, "R": 1.7, "G": 1.7, "B": 1.6, "H": 0.15, "O": 0.15, "S": 0.12, "RGB": 1.7}
NEBULA = {"L": 0.0, "R": 0.0, "G": 0.0, "B": 0.0, "H": 0.6, "O": 0.3, "S": 0.2, "RGB": 0.0}
NB_STAR_THROUGHPUT = {"H": 0.01, "O": 0.008, "S": 0.006}
# Optics written to the headers and used for the WCS: pixel size (um), focal length (mm).
PIXEL_SIZE_UM, FOCAL_LENGTH_MM = 3.76, 550.0
# Camera + filter response of the R, G, B channels (not white-balanced, as a real camera).
RGB_RESPONSE = {"R": 0.92, "G": 1.0, "B": 0.85}


@dataclass
class NightSpec:
    """What to generate. Sizes in pixels, exposures in seconds."""

    filters: tuple[str, ...] = ("L",)
    osc: bool = False
    frames: int = 20
    width: int = 1024
    height: int = 1024
    seed: int = 0
    dtype: str = "uint16"
    n_bias: int = 5
    n_dark: int = 5
    n_flat: int = 5
    exposure: float = 120.0
    nb_exposure: float = 300.0
    max_shift: float = 20.0
    max_rotation_deg: float = 0.5
    fwhm: float = 3.0
    trails: int = 2
    object_name: str = "NGC 7000"
    egain: float = 1.0
    bias_level: float = 500.0
    read_noise: float = 3.5
    dark_current: float = 0.01
    stars_per_mpix: float = 480.0
    gradient: float = 0.03
    nebula: bool | None = None  # default: only for narrowband filters
    star_bv: float = 0.65  # median B-V of the field's stars (0.65: Sun-like; reddened fields ~1.2)
    ra: float = 314.75  # field centre, ICRS degrees (lights carry a TAN WCS)
    dec: float = 44.33
    extra: dict = field(default_factory=dict)


def _filter_exposure(spec: NightSpec, f: str) -> float:
    return spec.nb_exposure if f in NB_STAR_THROUGHPUT else spec.exposure


def _make_stars(rng, spec: NightSpec, margin: float):
    area = (spec.width + 2 * margin) * (spec.height + 2 * margin) / 1e6
    n = int(spec.stars_per_mpix * area)
    # Number counts grow as 10^(0.3 m) over 9.5 magnitudes (inverse-CDF sampling).
    u = rng.uniform(size=n)
    m = np.log10(1 + u * (10 ** (0.3 * 9.5) - 1)) / 0.3
    m[: max(3, n // 400)] = rng.uniform(-1.0, 0.5, size=max(3, n // 400))  # a few saturated stars
    flux_l = 1.0e6 / 120.0 * 10 ** (-0.4 * m)  # e-/s in L; m=0 saturates, m=9.5 ~1.5 sigma
    # B-V normally distributed (sigma 0.45) around the field's median; colour = B-V
    u = rng.uniform(-1, 1, size=n)
    bv = np.clip(spec.star_bv + 0.45 * np.sqrt(2) * erfinv(u * 0.999), -0.3, 2.0)
    # R, G, B: a blackbody of the star's temperature through the passbands and the camera
    rgb = blackbody_rgb(bv_to_temperature(bv)) * np.array([RGB_RESPONSE[c] for c in "RGB"])
    stars = {
        "x": rng.uniform(-margin, spec.width + margin, size=n),
        "y": rng.uniform(-margin, spec.height + margin, size=n),
        "mag": m,
        "colour": bv,
        "L": flux_l,
        "R": flux_l * rgb[:, 0],
        "G": flux_l * rgb[:, 1],
        "B": flux_l * rgb[:, 2],
    }
    for f, k in NB_STAR_THROUGHPUT.items():
        stars[f] = flux_l * k * rng.uniform(0.5, 1.5, size=n)
    return stars


def _vignetting_flat(rng, spec: NightSpec):
    """cos^4-like vignetting (corners 0.65), 1 % PRNU, dead pixels and dust donuts; mean ~1."""
    h, w = spec.height, spec.width
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    r = np.hypot(yy - cy, xx - cx)
    f = np.hypot(cy, cx) / np.tan(np.arccos(0.65**0.25))
    flat = np.cos(np.arctan(r / f)) ** 4
    flat *= 1 + 0.01 * rng.standard_normal((h, w))
    for _ in range(max(2, int(3 * w * h / 1024**2))):
        dy, dx = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
        rad = rng.uniform(0.015, 0.04) * min(w, h)
        d = np.hypot(yy - dy, xx - dx)
        donut = np.exp(-0.5 * ((d - rad) / (0.25 * rad)) ** 2) + 0.6 * (d < rad)
        flat *= 1 - rng.uniform(0.04, 0.08) * donut
    dead = rng.uniform(size=(h, w)) < 1e-4
    flat[dead] *= 0.05
    return flat, dead


def _camera(rng, spec: NightSpec):
    h, w = spec.height, spec.width
    bias = spec.bias_level + 2.0 * rng.standard_normal(w)[None, :] + rng.standard_normal((h, w))
    dark = np.full((h, w), spec.dark_current)
    yy, xx = np.mgrid[0:h, 0:w]
    dark += 0.05 * np.exp(-np.hypot(yy - h, xx - w) / (0.1 * w))  # amp glow, bottom-right
    hot = rng.uniform(size=(h, w)) < 5e-4
    dark[hot] += np.exp(rng.uniform(np.log(0.5), np.log(30.0), size=int(hot.sum())))
    col = int(rng.integers(w // 4, 3 * w // 4))
    y0 = int(rng.integers(0, h // 2))
    dark[y0 : y0 + h // 3, col] += 0.3  # warm column segment
    return bias, dark, hot


def _render_stars(img, xs, ys, fluxes, sigma):
    """Add pixel-integrated circular Gaussians (flux in e-) at (x, y), clipped to the image."""
    h, w = img.shape
    s2 = np.sqrt(2) * sigma
    for x, y, f in zip(xs, ys, fluxes, strict=False):
        rad = int(np.ceil(sigma * (4 + max(0.0, np.log10(max(f, 1.0)) - 3))))
        x0, x1 = max(int(x) - rad, 0), min(int(x) + rad + 2, w)
        y0, y1 = max(int(y) - rad, 0), min(int(y) + rad + 2, h)
        if x0 >= x1 or y0 >= y1:
            continue
        ex = np.arange(x0, x1 + 1) - 0.5 - x
        ey = np.arange(y0, y1 + 1) - 0.5 - y
        px = np.diff(erf(ex / s2)) / 2
        py = np.diff(erf(ey / s2)) / 2
        img[y0:y1, x0:x1] += f * np.outer(py, px)


def _nebula(spec: NightSpec, rng):
    """Smooth extended emission in sky coordinates (relative units, peak ~1)."""
    h, w = spec.height, spec.width
    yy, xx = np.mgrid[0:h, 0:w]
    neb = np.zeros((h, w))
    for _ in range(4):
        cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
        sx, sy = rng.uniform(0.05, 0.15) * w, rng.uniform(0.05, 0.15) * h
        neb += rng.uniform(0.4, 1.0) * np.exp(-0.5 * (((xx - cx) / sx) ** 2 + ((yy - cy) / sy) ** 2))
    return neb / neb.max()


def _cosmics(rng, img, n):
    """Deposit n short cosmic-ray tracks (500-5000 e- per pixel); returns ``[y, x, e]`` per pixel hit."""
    h, w = img.shape
    hits = []
    for _ in range(n):
        y, x = int(rng.integers(2, h - 6)), int(rng.integers(2, w - 6))
        length = int(rng.integers(1, 4))
        dy, dx = rng.choice([0, 1], size=2)
        e = rng.uniform(500, 5000)
        for k in range(length):
            img[y + k * dy, x + k * dx] += e
            hits.append([int(y + k * dy), int(x + k * dx), round(float(e), 1)])
    return hits


def _trail(rng, spec: NightSpec):
    """A satellite trail across the frame: endpoints on opposite edges, e-/px/s along the line."""
    h, w = spec.height, spec.width
    return {
        "x0": 0.0,
        "y0": float(rng.uniform(0.1, 0.9) * h),
        "x1": float(w - 1),
        "y1": float(rng.uniform(0.1, 0.9) * h),
        "width": 1.5,
        "rate": float(rng.uniform(2.0, 4.0)),
    }


def _render_trail(img, trail, exposure):
    h, w = img.shape
    yy, xx = np.mgrid[0:h, 0:w]
    dx, dy = trail["x1"] - trail["x0"], trail["y1"] - trail["y0"]
    dist = np.abs(dy * (xx - trail["x0"]) - dx * (yy - trail["y0"])) / np.hypot(dx, dy)
    img += trail["rate"] * exposure * np.exp(-0.5 * (dist / trail["width"]) ** 2)


def _to_adu(rng, electrons, spec, bias, dtype):
    h, w = electrons.shape
    e = rng.poisson(np.clip(electrons, 0, None)).astype(np.float64)
    e += spec.read_noise * rng.standard_normal((h, w))
    adu = e / spec.egain + bias + 0.5 * rng.standard_normal(h)[:, None]
    adu = np.clip(np.round(adu), 0, 65535)
    if dtype == "float32":
        return (adu / 65535.0).astype(np.float32)
    return adu.astype(np.uint16)


def _header(spec: NightSpec, imagetyp, exptime, date_index, filt=None, temp=-10.0):
    h = fits.Header()
    h["IMAGETYP"] = imagetyp
    h["EXPTIME"] = (float(exptime), "[s] exposure time")
    h["DATE-OBS"] = f"2026-11-20T{20 + date_index // 3600 % 4:02d}:{date_index // 60 % 60:02d}:" + (
        f"{date_index % 60:02d}.000"
    )
    h["XBINNING"], h["YBINNING"] = 1, 1
    h["GAIN"], h["OFFSET"], h["EGAIN"] = 100, 50, spec.egain
    h["CCD-TEMP"], h["SET-TEMP"] = round(temp, 2), -10.0
    h["XPIXSZ"], h["YPIXSZ"] = PIXEL_SIZE_UM, PIXEL_SIZE_UM
    h["INSTRUME"] = "ZWO ASI2600MC Pro" if spec.osc else "ZWO ASI2600MM Pro"
    h["TELESCOP"], h["FOCALLEN"] = "Sky-Watcher Esprit 100ED", FOCAL_LENGTH_MM
    if imagetyp.startswith("Light"):
        h["OBJECT"] = spec.object_name
    if spec.osc:
        h["BAYERPAT"], h["XBAYROFF"], h["YBAYROFF"] = "RGGB", 0, 0
        h["ROWORDER"] = "TOP-DOWN"
    elif filt is not None:
        h["FILTER"] = FILTER_NAMES[filt]
    return h


def sky_wcs(spec: NightSpec):
    """TAN WCS of the sky frame: north up, east left, pixel scale from XPIXSZ and FOCALLEN."""
    from astropy.wcs import WCS

    scale = PIXEL_SIZE_UM * 1e-3 / FOCAL_LENGTH_MM * 180 / np.pi  # degrees per pixel
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [spec.ra, spec.dec]
    wcs.wcs.crpix = [(spec.width + 1) / 2, (spec.height + 1) / 2]
    wcs.wcs.cd = [[-scale, 0.0], [0.0, scale]]
    return wcs


def _frame_wcs(spec: NightSpec, m: np.ndarray) -> fits.Header:
    """The sky WCS seen through frame pixel = A @ sky + t (``m`` = [A | t], 0-based pixels)."""
    wcs = sky_wcs(spec)
    a, t = m[:, :2], m[:, 2]
    wcs.wcs.cd = wcs.wcs.cd @ np.linalg.inv(a)
    wcs.wcs.crpix = a @ (wcs.wcs.crpix - 1) + t + 1
    return wcs.to_header()


def _bayer_channel_map(h, w):
    """Index 0/1/2 (R/G/B) of each pixel for an RGGB mosaic (origin at the first pixel)."""
    cmap = np.ones((h, w), dtype=np.int8)
    cmap[0::2, 0::2] = 0
    cmap[1::2, 1::2] = 2
    return cmap


def make_night(out_dir: str | Path, spec: NightSpec) -> dict:
    """Write a synthetic night under ``out_dir`` (lights/, darks/, flats/, bias/, truth/).

    Deterministic for a given ``spec`` (including ``seed``). Returns the truth dictionary that is
    also written to ``truth/truth.json``.
    """
    out = Path(out_dir)
    rng = np.random.default_rng(spec.seed)
    h, w = spec.height, spec.width
    margin = spec.max_shift + 0.01 * spec.max_rotation_deg * max(h, w) + 10
    stars = _make_stars(rng, spec, margin)
    flat, dead = _vignetting_flat(rng, spec)
    bias, dark, hot = _camera(rng, spec)
    bands = ["RGB"] if spec.osc else list(spec.filters)
    nebula_on = spec.nebula if spec.nebula is not None else any(f in NEBULA and NEBULA[f] for f in bands)
    neb = _nebula(spec, rng) if nebula_on else np.zeros((h, w))
    grad_angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w]
    ramp = ((xx - w / 2) * np.cos(grad_angle) + (yy - h / 2) * np.sin(grad_angle)) / max(h, w)
    gradient = 1 + spec.gradient * ramp
    cmap = _bayer_channel_map(h, w) if spec.osc else None

    truth = {
        "spec": {k: v for k, v in spec.__dict__.items() if k != "extra"},
        "sky_frame": "pixel grid of an unshifted, unrotated frame; origin 0",
        "filters": bands,
        "sky": {f: SKY[f] for f in bands},
        "frames": [],
    }
    frame_idx = 0
    trail_frames = set(rng.choice(spec.frames, size=min(spec.trails, spec.frames), replace=False))
    for f in bands:
        exposure = _filter_exposure(spec, f)
        for i in range(spec.frames):
            dx, dy = rng.uniform(-spec.max_shift, spec.max_shift, size=2)
            theta = np.deg2rad(rng.uniform(-spec.max_rotation_deg, spec.max_rotation_deg))
            fwhm = spec.fwhm * rng.uniform(0.9, 1.2)
            transp = rng.uniform(0.9, 1.0)
            sky_scale = rng.uniform(0.9, 1.1)
            c, s = np.cos(theta), np.sin(theta)
            cx, cy = (w - 1) / 2, (h - 1) / 2
            m = np.array([[c, -s, cx - c * cx + s * cy + dx], [s, c, cy - s * cx - c * cy + dy]])
            px = m[0, 0] * stars["x"] + m[0, 1] * stars["y"] + m[0, 2]
            py = m[1, 0] * stars["x"] + m[1, 1] * stars["y"] + m[1, 2]
            inside = (px > -15) & (px < w + 15) & (py > -15) & (py < h + 15)
            sigma = fwhm / 2.3548
            if spec.osc:
                img = np.zeros((h, w))
                for ch, name in enumerate("RGB"):
                    plane = np.zeros((h, w))
                    _render_stars(
                        plane, px[inside], py[inside], stars[name][inside] * exposure * transp, sigma
                    )
                    img[cmap == ch] = plane[cmap == ch]
                sky_rgb = np.array([1.0, 1.1, 0.9]) * SKY["RGB"]
                img += sky_rgb[cmap] * exposure * sky_scale * gradient
            else:
                img = np.zeros((h, w))
                _render_stars(img, px[inside], py[inside], stars[f][inside] * exposure * transp, sigma)
                img += SKY[f] * exposure * sky_scale * gradient
                if NEBULA[f] and nebula_on:
                    img += NEBULA[f] * exposure * transp * _warp_sky(neb, m)
            trail = None
            if i in trail_frames:
                trail = _trail(rng, spec)
                _render_trail(img, trail, exposure)
            img *= flat
            img += dark * exposure
            hits = _cosmics(rng, img, int(round(12 * exposure / 120 * h * w / 1024**2)))
            temp = -10.0 + rng.normal(0, 0.2)
            hdr = _header(spec, "Light Frame", exposure, frame_idx * int(exposure + 5), f, temp)
            hdr.update(_frame_wcs(spec, m))
            name = f"lights/{f}/{spec.object_name.replace(' ', '')}_Light_{f}_{exposure:g}s_{i + 1:04d}.fits"
            write_fits(out / name, _to_adu(rng, img, spec, bias, spec.dtype), hdr)
            truth["frames"].append(
                {
                    "file": name,
                    "filter": f,
                    "exposure": exposure,
                    "sky_to_frame": m.tolist(),
                    "fwhm": fwhm,
                    "transparency": transp,
                    "sky_scale": sky_scale,
                    "trail": trail,
                    "cosmics": hits,
                }
            )
            frame_idx += 1

    exposures = sorted({_filter_exposure(spec, f) for f in bands})
    for exposure in exposures:
        for i in range(spec.n_dark):
            img = dark * exposure
            _cosmics(rng, img, int(round(12 * exposure / 120 * h * w / 1024**2)))
            hdr = _header(spec, "Dark Frame", exposure, i, temp=-10.0 + rng.normal(0, 0.2))
            write_fits(
                out / f"darks/Dark_{exposure:g}s_{i + 1:04d}.fits",
                _to_adu(rng, img, spec, bias, spec.dtype),
                hdr,
            )
    for i in range(spec.n_bias):
        hdr = _header(spec, "Bias Frame", 0.0, i)
        write_fits(
            out / f"bias/Bias_{i + 1:04d}.fits", _to_adu(rng, np.zeros((h, w)), spec, bias, spec.dtype), hdr
        )
    flat_level = 25000.0
    for f in bands:
        ffilt = flat * (1.0 if f in ("L", "RGB") else rng.uniform(0.98, 1.02))
        colour = np.array([0.9, 1.0, 0.8])[cmap] if spec.osc else 1.0
        for i in range(spec.n_flat):
            img = flat_level * ffilt * colour + dark * 2.0
            hdr = _header(spec, "Flat Field", 2.0, i, None if spec.osc else f)
            write_fits(
                out / f"flats/{f}/Flat_{f}_{i + 1:04d}.fits", _to_adu(rng, img, spec, bias, spec.dtype), hdr
            )

    truth_dir = out / "truth"
    truth_dir.mkdir(parents=True, exist_ok=True)
    np.save(truth_dir / "flat.npy", flat.astype(np.float32))
    np.save(truth_dir / "dark_current.npy", dark.astype(np.float32))
    np.save(truth_dir / "hot_pixels.npy", hot)
    np.save(truth_dir / "dead_pixels.npy", dead)
    np.save(truth_dir / "nebula.npy", neb.astype(np.float32))
    cols = ["x", "y", "mag", "colour", "L", "R", "G", "B", "H", "O", "S"]
    with open(truth_dir / "stars.tsv", "w") as fh:
        fh.write("\t".join(cols) + "\n")
        for row in zip(*(stars[c] for c in cols), strict=False):
            fh.write("\t".join(f"{v:.6g}" for v in row) + "\n")
    # a catalogue of the field (every star, as a user's export of a real catalogue would be)
    ra, dec = sky_wcs(spec).all_pix2world(stars["x"], stars["y"], 0)
    vmag = stars["mag"] + 5.0
    with open(truth_dir / "catalogue.csv", "w") as fh:
        fh.write("ra,dec,vmag,b-v\n")
        for row in zip(ra, dec, vmag, stars["colour"], strict=True):
            fh.write(",".join(f"{v:.8f}" if i < 2 else f"{v:.3f}" for i, v in enumerate(row)) + "\n")
    with open(truth_dir / "truth.json", "w") as fh:
        json.dump(truth, fh, indent=1)
    return truth


def _warp_sky(img, m):
    """Resample a sky-frame image into frame coordinates given sky->frame matrix ``m``."""
    import cv2

    return cv2.warpAffine(
        img.astype(np.float32), m.astype(np.float64), img.shape[::-1], flags=cv2.INTER_LINEAR
    )


def load_truth(night_dir: str | Path) -> dict:
    """Truth dictionary plus the star table (as a dict of arrays) of a generated night."""
    night_dir = Path(night_dir)
    truth = json.loads((night_dir / "truth" / "truth.json").read_text())
    table = np.genfromtxt(night_dir / "truth" / "stars.tsv", names=True, delimiter="\t")
    truth["stars"] = {name: table[name] for name in table.dtype.names}
    truth["_dir"] = str(night_dir)
    return truth
