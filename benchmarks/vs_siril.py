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
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from astroflow.io import read_image
from astroflow.quality import score
from astroflow.stages.register import registered_image
from astroflow.synth import NightSpec, load_truth, make_night
from astroflow.tables import read_tsv

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


def timed(cmd, cwd) -> tuple[float, float]:
    """Run a command; return (wall seconds, peak RSS in GB of its largest process).

    The command runs under a fresh Python parent so RUSAGE_CHILDREN covers only its own tree
    (in this process it would keep the maximum of every earlier run).
    """
    wrapper = (
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(r.returncode)"
    )
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", wrapper, *cmd], cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return wall, int(proc.stderr.strip().splitlines()[-1]) / 2**20


def run_astroflow(night: Path, out: Path, *config: str, band: str = "L") -> tuple[float, float]:
    shutil.rmtree(out, ignore_errors=True)
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    # the integration is what Siril's script makes too: finished images are not timed
    stack = out / f"NGC_7000/integration/Integration_{band}.fits"
    cmd = [snakemake, str(stack), "--cores", "2", "--config", f"data={night}", f"out={out}", *config, "-q"]
    return timed(cmd, ROOT)


def frames_table(night: Path, out: Path, *config: str) -> None:
    """The run's frames.tsv (untimed: the transforms a registered single frame is made from)."""
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    target = str(out / "NGC_7000/frames.tsv")
    cmd = [snakemake, target, "--cores", "2", "--config", f"data={night}", f"out={out}", *config, "-q"]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)


def run_siril(night: Path, work: Path, filt: str = "L", osc: bool = False) -> tuple[float, float]:
    """Siril 1.0.6 on a night's ``filt`` lights (``osc``: calibrated as CFA and debayered)."""
    shutil.rmtree(work, ignore_errors=True)
    for kind, src in (
        ("bias", "bias"),
        ("darks", "darks"),
        ("flats", f"flats/{filt}"),
        ("lights", f"lights/{filt}"),
    ):
        (work / kind).mkdir(parents=True)
        for i, f in enumerate(sorted((night / src).glob("*.fits")), 1):
            os.symlink(f, work / kind / f"{kind.rstrip('s')}_{i:04d}.fits")
    (work / "process").mkdir()
    script = SIRIL_SCRIPT
    if osc:
        script = script.replace("-flat=pp_flat_stacked", "-flat=pp_flat_stacked -cfa -equalize_cfa -debayer")
    (work / "run.ssf").write_text(script)
    return timed(["siril-cli", "-d", str(work), "-s", str(work / "run.ssf")], work)


# below these, a residual is "removed" / a field "flat": differences are noise, not quality
TIE = {"trail_residual": 0.01, "cosmic_residual": 0.01, "hot_residual": 0.01, "flatness": 0.0005}


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

    # variants, once, untimed: Siril's kind of kernel, and sigma clipping instead of Auto2's pick
    # (label, --config option, the registration options its single frame is resampled with)
    variants = {
        "linear": (
            "`interpolation: linear`",
            'registration={"interpolation": "linear"}',
            {"interpolation": "linear"},
        ),
        "sigma": ("`rejection: sigma`", 'integration={"rejection": "sigma"}', {}),
    }
    for name, (_, option, _) in variants.items():
        run_astroflow(night, WORK / f"astroflow_{name}", option)
    frames_table(night, WORK / "astroflow_out")
    for name, (_, option, _) in variants.items():
        frames_table(night, WORK / f"astroflow_{name}", option)
    ours = WORK / "astroflow_out" / "NGC_7000"
    stack_a = read_image(ours / "integration/Integration_L.fits")[0]
    stack_s = read_image(WORK / "siril/result.fit")[0]
    # the noise-gain single: the same raw frame, resampled by both (Siril's reference is frame 1,
    # ours is the registration reference); an unresampled reference would flatter its pipeline's gain
    ref_a = next(
        Path(row["path"]).name
        for row in read_tsv(ours / "frames.tsv")
        if row.get("reg_method") == "reference"
    )
    lights = sorted(p.name for p in (night / "lights/L").glob("*.fits"))
    k = next(i for i, name in enumerate(lights) if i > 0 and name != ref_a)
    single_a = registered_image(ours, lights[k])[0]
    single_s = read_image(WORK / f"siril/process/r_pp_light_{k + 1:05d}.fit")[0]
    scores = {
        "astroflow": score(stack_a, truth, "L", single=single_a),
        "Siril 1.0.6": score(stack_s, truth, "L", single=single_s),
    }
    for name in variants:
        d = WORK / f"astroflow_{name}" / "NGC_7000"
        scores[name] = score(
            read_image(d / "integration/Integration_L.fits")[0],
            truth,
            "L",
            single=registered_image(d, lights[k], variants[name][2])[0],
        )
    rows = [
        (f"noise gain, binned 4×4 (√N = {np.sqrt(args.frames):.2f})", "noise_gain", "higher"),
        ("stack FWHM ÷ true FWHM", "fwhm_ratio", "lower"),
        ("ellipticity", "ellipticity", "lower"),
        ("trail residual", "trail_residual", "|lower|"),
        ("cosmic-ray residual", "cosmic_residual", "|lower|"),
        ("hot-pixel residual", "hot_residual", "|lower|"),
        ("flatness (σ of 64 px tiles / sky)", "flatness", "lower"),
        ("photometric scatter", "phot_scatter", "lower"),
        ("faint-star completeness (< 500 e-/frame, matched filter 5σ)", "completeness", "higher"),
        ("point-source noise (e- per frame, matched filter)", "point_noise", "lower"),
        ("stack noise (e- per frame, 4×4 binned)", "noise_e", "lower"),
        ("faint-star completeness, `detect_stars` 3σ per-pixel", "completeness_sep", "higher"),
    ]
    lines = [
        "# astroflow vs Siril",
        "",
        f"Command: `python benchmarks/vs_siril.py --frames {args.frames} --size {args.size} --repeats {args.repeats}`",
        f"(`make benchmark`). Data: generated {args.frames} × {w}×{h} uint16 L lights + 5 bias, 5 darks, 5 flats",
        "(seed 0, the model of reference/baselines.md). Both stacks scored by `astroflow.quality.score`",
        "against the truth; wall time = median of the repeats on this 2-core machine; peak RSS = largest process.",
        "",
        "| metric | astroflow | Siril 1.0.6 | better | "
        + " | ".join(f"astroflow, {label}" for label, *_ in variants.values())
        + " |",
        "|---|---|---|---|" + "---|" * len(variants),
    ]
    for label, key, better in rows:
        a, s = scores["astroflow"][key], scores["Siril 1.0.6"][key]
        if better == "higher":
            win = "astroflow" if a >= s else "Siril"
        elif better == "lower":
            win = "astroflow" if a <= s else "Siril"
        else:
            win = "astroflow" if abs(a) <= abs(s) else "Siril"
        if key in TIE and max(abs(a), abs(s)) < TIE[key]:
            win = f"tie (both below {TIE[key]})"
        extra = " | ".join(_fmt(scores[name][key], 4) for name in variants)
        lines.append(f"| {label} | {_fmt(a, 4)} | {_fmt(s, 4)} | {win} | {extra} |")
    ta, ts = statistics.median(times["astroflow"]), statistics.median(times["Siril 1.0.6"])
    blank = " |" * len(variants)
    lines.append(f"| wall time (s) | {ta:.1f} | {ts:.1f} | ratio {ta / ts:.2f} |{blank}")
    lines.append(f"| peak RSS (GB) | {rss['astroflow']:.2f} | {rss['Siril 1.0.6']:.2f} | |{blank}")
    lines += [
        "",
        "How to read the noise rows. Resampling spreads each pixel's noise over its neighbours: a",
        "smoother kernel lowers per-pixel and even 4×4-binned σ without adding information (Siril's",
        "resampled frames have 0.65× the per-pixel σ of the calibrated frame, ours 0.89×). The",
        "point-source noise (σ of a PSF-weighted flux, measured on the matched-filtered image) and",
        "the matched-filter completeness (threshold on that filtered image's own σ) are not",
        "flattered that way; the per-pixel `detect_stars` completeness row is, and is kept to show it.",
        "The last columns are astroflow with Siril's kind of kernel and with sigma clipping.",
        "",
        "Where the point-source noise is won, measured on this night: the same raw frame calibrated",
        "by both tools has the same point-source noise (median ratio 1.002 over 10 frames), and so do",
        "the registered frames (median ratio 1.00 over 20). The stack is where they differ:",
        "- linear-fit clipping (AutoIntegrate's Auto2 choice for 20-24 frames) as PixInsight and Siril",
        "  fit it, against the rank, reads the tails of honest Gaussian noise as deviations: it clips",
        "  0.9 % of pure noise and costs 3 % of SNR; fitted against normal scores it costs 0.1 %",
        "  (`astroflow.integrate`);",
        "- trails and cosmic-ray hits have wings below any per-pixel threshold; growing each high",
        "  rejection by 1 px where the pixel is 2σ high (`integration.grow`) removes them: -0.8 % of",
        "  point-source noise, +1 % faint completeness, a smaller trail residual. Only rejections 6σ",
        "  high seed it (`grow_seed`): growing from noise spikes clipped correlated noise on 8-frame",
        "  stacks (benchmarks/grid.md, mono-8-sharp: point-source noise 39.6 -> 39.2 e-).",
        "Before both (stop 7): 31.03 e- and 0.894. The two per-pixel rows Siril still leads are the",
        "smoothing described above; the `interpolation: linear` column matches Siril there.",
        "What is left: the 3σ cosmetic map (AutoIntegrate's default) flags ~0.5 % of pixels, mostly",
        "noise, and their repair costs ~0.4 % of point-source noise on this night.",
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
