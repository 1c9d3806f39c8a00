"""astroflow vs Siril on the same generated night, scored against its truth.

    python benchmarks/vs_siril.py [--frames 20] [--size 1024x1024] [--repeats 3]

Generates a 20-frame 1024² uint16 L night (+5 bias, 5 darks, 5 flats), runs the astroflow
workflow (`snakemake --cores 2`) and Siril (`siril-cli`, script as in reference/baselines.md:
winsorized masters, `preprocess`, `register`, `stack r_pp_light rej w 3 3 -norm=addscale`),
scores both stacks with `astroflow.quality.score`, and writes `benchmarks/results.md`.
Wall time is the median of ``--repeats`` cold runs; peak RSS is that of the largest process.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from astroflow.io import read_image
from astroflow.quality import score
from astroflow.synth import NightSpec, load_truth, make_night

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "work"

SIRIL_SCRIPT = """requires 1.0.0
cd bias
convert bias -out=../process
cd ../process
stack bias rej w 3 3 -nonorm
cd ../darks
convert dark -out=../process
cd ../process
stack dark rej w 3 3 -nonorm
cd ../flats
convert flat -out=../process
cd ../process
preprocess flat -bias=bias_stacked
stack pp_flat rej w 3 3 -norm=mul
cd ../lights
convert light -out=../process
cd ../process
preprocess light -dark=dark_stacked -flat=pp_flat_stacked
register pp_light
stack r_pp_light rej w 3 3 -norm=addscale -out=../result
close
"""


def _timed(cmd, cwd) -> tuple[float, float]:
    """Run a command; return (wall seconds, peak RSS in GB of the largest child process)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    peak = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return wall, peak / 2**20


def run_astroflow(night: Path, out: Path) -> tuple[float, float]:
    shutil.rmtree(out, ignore_errors=True)
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    return _timed([snakemake, "--cores", "2", "--config", f"data={night}", f"out={out}", "-q"], ROOT)


def run_siril(night: Path, work: Path) -> tuple[float, float]:
    shutil.rmtree(work, ignore_errors=True)
    for kind, src in (("bias", "bias"), ("darks", "darks"), ("flats", "flats/L"), ("lights", "lights/L")):
        (work / kind).mkdir(parents=True)
        for i, f in enumerate(sorted((night / src).glob("*.fits")), 1):
            os.symlink(f, work / kind / f"{kind.rstrip('s')}_{i:04d}.fits")
    (work / "process").mkdir()
    (work / "run.ssf").write_text(SIRIL_SCRIPT)
    return _timed(["siril-cli", "-d", str(work), "-s", str(work / "run.ssf")], work)


def _fmt(v, digits=3):
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--size", default="1024x1024")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if not shutil.which("siril-cli"):
        print("siril-cli not found: apt-get install siril", file=sys.stderr)
        return 2
    w, h = (int(v) for v in args.size.split("x"))
    night = WORK / f"night_{args.frames}x{w}x{h}"
    if not (night / "truth/truth.json").exists():
        make_night(night, NightSpec(filters=("L",), frames=args.frames, width=w, height=h, seed=0))
    truth = load_truth(night)

    times = {"astroflow": [], "Siril 1.0.6": []}
    rss = {"astroflow": 0.0, "Siril 1.0.6": 0.0}
    for _ in range(args.repeats):
        for name, fn, dest in (
            ("astroflow", run_astroflow, WORK / "astroflow_out"),
            ("Siril 1.0.6", run_siril, WORK / "siril"),
        ):
            wall, peak = fn(night, dest)
            times[name].append(wall)
            rss[name] = max(rss[name], peak)

    ours = WORK / "astroflow_out" / "NGC_7000"
    stack_a = read_image(ours / "integration/Integration_L.fits")[0]
    single_a = read_image(next((ours / "registered").glob("*/*_0001_r.fits")))[0]
    stack_s = read_image(WORK / "siril/result.fit")[0]
    single_s = read_image(WORK / "siril/process/r_pp_light_00001.fit")[0]
    scores = {
        "astroflow": score(stack_a, truth, "L", single=single_a),
        "Siril 1.0.6": score(stack_s, truth, "L", single=single_s),
    }
    rows = [
        (f"noise gain, binned 4×4 (√N = {np.sqrt(args.frames):.2f})", "noise_gain", "higher"),
        ("stack FWHM ÷ true FWHM", "fwhm_ratio", "lower"),
        ("ellipticity", "ellipticity", "lower"),
        ("trail residual", "trail_residual", "|lower|"),
        ("cosmic-ray residual", "cosmic_residual", "|lower|"),
        ("hot-pixel residual", "hot_residual", "|lower|"),
        ("flatness (σ of 64 px tiles / sky)", "flatness", "lower"),
        ("photometric scatter", "phot_scatter", "lower"),
        ("faint-star completeness (< 500 e-/frame)", "completeness", "higher"),
    ]
    lines = [
        "# astroflow vs Siril",
        "",
        f"Command: `python benchmarks/vs_siril.py --frames {args.frames} --size {args.size} --repeats {args.repeats}`",
        f"(`make benchmark`). Data: generated {args.frames} × {w}×{h} uint16 L lights + 5 bias, 5 darks, 5 flats",
        "(seed 0, the model of reference/baselines.md). Both stacks scored by `astroflow.quality.score`",
        "against the truth; wall time = median of the repeats on this 2-core machine; peak RSS = largest process.",
        "",
        "| metric | astroflow | Siril 1.0.6 | better |",
        "|---|---|---|---|",
    ]
    for label, key, better in rows:
        a, s = scores["astroflow"][key], scores["Siril 1.0.6"][key]
        if better == "higher":
            win = "astroflow" if a >= s else "Siril"
        elif better == "lower":
            win = "astroflow" if a <= s else "Siril"
        else:
            win = "astroflow" if abs(a) <= abs(s) else "Siril"
        lines.append(f"| {label} | {_fmt(a, 4)} | {_fmt(s, 4)} | {win} |")
    ta, ts = statistics.median(times["astroflow"]), statistics.median(times["Siril 1.0.6"])
    lines.append(f"| wall time (s) | {ta:.1f} | {ts:.1f} | ratio {ta / ts:.2f} |")
    lines.append(f"| peak RSS (GB) | {rss['astroflow']:.2f} | {rss['Siril 1.0.6']:.2f} | |")
    lines += [
        "",
        "Raw wall times (s): "
        + "; ".join(f"{k}: {', '.join(f'{t:.1f}' for t in v)}" for k, v in times.items()),
    ]
    text = "\n".join(lines) + "\n"
    (ROOT / "benchmarks" / "results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
