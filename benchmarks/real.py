"""Real nights: astroflow vs Siril 1.0.6 and 1.4 on the same stars of ../shared/real-nights.

    python benchmarks/real.py [--nights arcsat-lpseb35-g,seestar-ngc7023]

A real night has no truth, so the stacks are compared on what a user checks, star by star: the
stars astroflow's stack detects at 5σ inside the area every stack covers (the brightest
unsaturated 40, none within 6 FWHM of a brighter one), found again in each Siril stack by
matching the star lists (astroalign). Per star, in every stack alike: the aperture SNR (radius
1.5 × the stars' median FWHM over both stacks, sky from the 3-5 FWHM annulus) against the
scatter of the same aperture's sum at star-free places of that stack, so correlated noise counts
as it does for a star (a per-pixel sigma would reward the smoother warp); and the FWHM of a
fitted Gaussian. The table gives the median over the stars of each stack's SNR relative to
astroflow's (the same-star depth), the median FWHM, the frames each tool stacked and its wall
time. Siril runs the scripted pipeline of reference/baselines.md (the ARCSAT night with its bias,
darks and flats; the Seestar night, which has none, lights only: ``convert -debayer``, as
Siril's OSC default RCD); Siril 1.4 where its chroot is installed (../shared/tools/). Writes
``benchmarks/real.md``; skips, saying so, a night that is absent.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import astroalign
import numpy as np
import pandas as pd
import sep
from astropy.io import fits
from scipy.spatial import cKDTree
from speed import SIRIL_NEW
from vs_siril import ROOT, SIRIL_SCRIPT, WORK, timed

from astroflow.io import read_image
from astroflow.measure import detect_stars
from astroflow.quality import fit_psf

NIGHTS = ROOT.parent / "shared" / "real-nights"
# the target astroflow names (OBJECT) and its stack's band (Sloan g is filed as G), per night
TARGETS = {"arcsat-lpseb35-g": ("LPSEB35", "G"), "seestar-ngc7023": ("NGC_7023", "RGB")}
KINDS = {"BIAS": "bias", "DARK": "darks", "FLAT": "flats", "LIGHT": "lights"}
LIGHTS_ONLY_SCRIPT = """requires 1.0.0
cd lights
convert light -debayer -out=../process
cd ../process
register light
stack r_light rej w 3 3 -norm=addscale -out=../result
close
"""
STARS = 40


def siril_layout(night: Path, work: Path) -> bool:
    """``work/{bias,darks,flats,lights}/<kind>_NNNN.<ext>`` links to the night's frames by
    IMAGETYP, as the Siril scripts want them; True when it has calibration frames."""
    shutil.rmtree(work, ignore_errors=True)
    counts: dict[str, int] = {}
    for path in sorted(p for p in night.iterdir() if p.suffix.lower() in (".fits", ".fit")):
        imagetyp = str(fits.getheader(path).get("IMAGETYP", "LIGHT")).upper()
        kind = next((k for key, k in KINDS.items() if key in imagetyp), "lights")
        counts[kind] = counts.get(kind, 0) + 1
        (work / kind).mkdir(parents=True, exist_ok=True)
        os.symlink(path.resolve(), work / kind / f"{kind.rstrip('s')}_{counts[kind]:04d}{path.suffix}")
    return {"bias", "darks", "flats"} <= set(counts)


def run_siril(night: Path, work: Path, binary: str) -> tuple[float, float, Path]:
    """Siril ``binary`` on the night; (wall s, peak GB, stack path)."""
    calibrated = siril_layout(night, work)
    (work / "process").mkdir()
    script = SIRIL_SCRIPT if calibrated else LIGHTS_ONLY_SCRIPT
    if binary == "siril-cli-new":  # 1.4's names for 1.0's commands; its chroot sees only what it is told
        script = script.replace("preprocess", "calibrate").replace(
            "-dark=dark_stacked", "-dark=dark_stacked -cc=dark 0 3"
        )
        binds = [p for p in os.environ.get("SIRIL_NEW_BINDS", "").split(":") if p]
        os.environ["SIRIL_NEW_BINDS"] = ":".join(
            dict.fromkeys([*binds, str(night.resolve()), str(WORK.resolve())])
        )
    (work / "run.ssf").write_text(script)
    wall, peak = timed([binary, "-d", str(work), "-s", str(work / "run.ssf")], work)
    return wall, peak, work / "result.fit"


def run_astroflow(night: Path, out: Path) -> tuple[float, float, Path]:
    shutil.rmtree(out, ignore_errors=True)
    target, band = TARGETS[night.name]
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    stack = out / target / "integration" / f"Integration_{band}.fits"
    config = ["--cores", "2", "--config", f"data={night}", f"out={out}", "-q"]
    wall, peak = timed([snakemake, str(stack), *config], ROOT)
    # the frames table (untimed: not part of what Siril's script does)
    subprocess.run(
        [snakemake, str(out / target / "frames.tsv"), *config], cwd=ROOT, check=True, capture_output=True
    )
    return wall, peak, stack


def frames_stacked(tool: str, stack: Path) -> str:
    """The lights the tool stacked, as "k of n" (astroflow: frames.tsv; Siril: STACKCNT)."""
    if tool == "astroflow":
        frames = pd.read_csv(stack.parents[1] / "frames.tsv", sep="\t")
        lights = frames[frames["type"] == "light"]
        return f"{int(lights['accepted'].sum())} of {len(lights)}"
    total = len(list((stack.parent / "lights").iterdir()))
    return f"{fits.getheader(stack).get('STACKCNT', '?')} of {total}"


def luminance(path: Path) -> np.ndarray:
    """The stack as one plane (colour: the mean of its channels), background subtracted."""
    image = np.nan_to_num(read_image(path)[0].astype(np.float32))
    lum = np.ascontiguousarray(image.mean(axis=0) if image.ndim == 3 else image)
    return lum - sep.Background(lum, bw=64, bh=64).back()


def _aperture_snr(sub: np.ndarray, xy: np.ndarray, sky_xy: np.ndarray, fwhm: float) -> np.ndarray:
    """Aperture flux of the stars at ``xy`` over the robust scatter of the same aperture's sum
    at the star-free places ``sky_xy`` (both with the local annulus level subtracted)."""

    sub = sub.astype(np.float64)  # sep's sums want float64; converted once

    def sums(points):
        kw = {"bkgann": (3 * fwhm, 5 * fwhm), "subpix": 5}
        return sep.sum_circle(sub, points[:, 0], points[:, 1], 1.5 * fwhm, **kw)[0]

    sky = sums(sky_xy)
    return sums(xy) / (1.4826 * np.median(np.abs(sky - np.median(sky))))


def _fwhm(sub: np.ndarray, xy: np.ndarray) -> np.ndarray:
    fits_ = [fit_psf(sub, x, y) for x, y in xy]
    return np.array([np.sqrt(f[0] * f[1]) if f is not None else np.nan for f in fits_])


def same_stars(ours: Path, coverage: Path, others: dict[str, Path]) -> dict[str, dict]:
    """Per stack, the median same-star SNR relative to astroflow's and the median FWHM (px)."""
    ref = luminance(ours)
    full = fits.getdata(coverage)
    common = full == full.max()
    stars = detect_stars(ref, 5.0, saturated=ref >= 0.9 * ref.max())
    stars = stars[np.argsort(-stars["flux"])]  # brightest first
    xy = np.column_stack([stars["x"], stars["y"]])
    fwhm0 = float(np.median(stars["fwhm"][:100]))
    tree = cKDTree(xy)
    brighter = [min(tree.query_ball_point(p, 6 * fwhm0)) < i for i, p in enumerate(xy)]
    inner = _erode(common, int(12 * fwhm0))
    at = inner[np.round(xy[:, 1]).astype(int), np.round(xy[:, 0]).astype(int)]
    pick = np.flatnonzero(~stars["sat"] & at & ~np.array(brighter))[:STARS]
    rng = np.random.default_rng(0)
    faint = detect_stars(ref, 3.0)
    cand = np.column_stack([rng.uniform(0, ref.shape[1] - 1, 4000), rng.uniform(0, ref.shape[0] - 1, 4000)])
    far = cKDTree(np.column_stack([faint["x"], faint["y"]])).query(cand, 1)[0] > 5 * fwhm0
    cand = cand[far & inner[np.round(cand[:, 1]).astype(int), np.round(cand[:, 0]).astype(int)]][:500]

    stacks = {"astroflow": (ref, xy[pick], cand)}
    for tool, path in others.items():
        img = luminance(path)
        theirs = detect_stars(img, 5.0)
        theirs = theirs[np.argsort(-theirs["flux"])]
        txy = np.column_stack([theirs["x"], theirs["y"]])
        transform, _ = astroalign.find_transform(xy[:150], txy[:150])
        mapped = transform(xy[pick])
        d, j = cKDTree(txy).query(mapped, 1)
        stacks[tool] = (img, np.where((d < 2)[:, None], txy[j], mapped), transform(cand))
    fwhm = float(np.nanmedian(np.concatenate([_fwhm(img, p) for img, p, _ in stacks.values()])))
    snr = {tool: _aperture_snr(img, p, sky, fwhm) for tool, (img, p, sky) in stacks.items()}
    return {
        tool: {
            "snr": float(np.median(snr[tool])),
            "snr_vs_astroflow": float(np.median(snr[tool] / snr["astroflow"])),
            "fwhm": float(np.nanmedian(_fwhm(img, p))),
            "stars": len(p),
        }
        for tool, (img, p, _) in stacks.items()
    }


def _erode(mask: np.ndarray, radius: int) -> np.ndarray:
    import cv2

    return cv2.erode(mask.astype(np.uint8), np.ones((2 * radius + 1,) * 2, np.uint8)) > 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nights", default=",".join(TARGETS))
    args = ap.parse_args()
    binaries = {"Siril 1.0.6": "siril-cli"}
    if SIRIL_NEW.exists() and shutil.which("siril-cli-new"):
        binaries["Siril 1.4"] = "siril-cli-new"
    lines = [
        "# Real nights: astroflow vs Siril on the same stars",
        "",
        f"Command: `python benchmarks/real.py --nights {args.nights}`. "
        + ("Siril 1.4: run." if "Siril 1.4" in binaries else "Siril 1.4: not installed here, column absent."),
        "Same-star SNR: each star's aperture flux over the scatter of the same aperture at star-free"
        f" places of that stack (correlated noise counts), the median over the {STARS} brightest isolated"
        " unsaturated stars of the common area, relative to astroflow's; FWHM: the median of those stars'"
        " Gaussian fits.",
        "",
        "| night | tool | lights stacked | same-star SNR vs astroflow | median SNR | FWHM (px) | wall (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in args.nights.split(","):
        night = NIGHTS / name
        if not night.is_dir():
            lines.append(f"| {name} | absent here ({night}) | | | | | |")
            continue
        runs = {"astroflow": run_astroflow(night, WORK / f"real_{name}_astroflow")}
        for tool, binary in binaries.items():
            try:
                runs[tool] = run_siril(night, WORK / f"real_{name}_{binary}", binary)
            except RuntimeError as exc:
                lines.append(f"| {name} | {tool} failed: {str(exc).splitlines()[-1][:120]} | | | | | |")
        stack = runs["astroflow"][2]
        coverage = stack.with_name(stack.stem + "_coverage.fits")
        scores = same_stars(stack, coverage, {t: r[2] for t, r in runs.items() if t != "astroflow"})
        for tool, (wall, _, path) in runs.items():
            s = scores[tool]
            lines.append(
                f"| {name} | {tool} | {frames_stacked(tool, path)} | {s['snr_vs_astroflow']:.3f} |"
                f" {s['snr']:.1f} | {s['fwhm']:.2f} | {wall:.1f} |"
            )
        print(f"{name}: done", flush=True)
    (Path(__file__).parent / "real.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
