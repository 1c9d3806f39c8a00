"""Quality on nights unlike the benchmark night: astroflow vs Siril 1.0.6 and 1.4 over a grid.

    python benchmarks/grid.py [--size 768x512] [--cells all|1,3,5] [--seeds 3]

Each cell is a generated night (``--seeds`` nights of its own seeds) varying the seeing (FWHM 2.2-4 px), the field
rotation between frames (0-2°), the number of lights (8, 20, 50), mono or one-shot colour
(RGGB) and uint16 or float32 data; every cell runs astroflow (to the integration), Siril 1.0.6
(the script of reference/baselines.md, `-cfa -equalize_cfa -debayer` for colour) and Siril 1.4
(``../shared/tools/siril_stack_new.sh``, when its chroot is installed), and scores the three
stacks against the truth (colour stacks on the mean of their channels) with
``astroflow.quality.score``: point-source noise (the error of a faint star's flux, in e- per
frame: the same stars' SNR is inversely proportional to it), per-pixel-binned noise, FWHM,
ellipticity, photometric scatter, faint-star completeness, flatness and the trail, cosmic-ray
and hot-pixel residuals, each the mean over the cell's seeds (± their standard deviation: one
night's photometric scatter and trail residual move by tens of per cent between seeds). A tool
that cannot stack a night is reported with its error. Writes ``benchmarks/grid.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from speed import SIRIL_NEW, run_siril_new
from vs_siril import TIE, WORK, _fmt, run_astroflow, run_siril

from astroflow.io import read_image
from astroflow.quality import score
from astroflow.synth import NightSpec, load_truth, make_night

RESULTS = WORK / "grid_results.json"  # per cell, so a failure later keeps what was measured
# stars per megapixel: at the benchmark night's 480, Siril 1.0.6 finds too few stars to register
# a 768×512 frame (it needs 6 matched pairs)
DENSITY = 1500.0
# (name, osc, frames, fwhm px, max rotation deg, dtype, seed)
CELLS = [
    ("mono-8-sharp", False, 8, 2.2, 0.0, "uint16", 11),
    ("mono-20-rot1-float", False, 20, 3.0, 1.0, "float32", 12),
    ("mono-20-soft-rot2", False, 20, 4.0, 2.0, "uint16", 13),
    ("mono-50-rot2", False, 50, 2.6, 2.0, "uint16", 14),
    ("osc-8", True, 8, 2.5, 0.5, "uint16", 15),
    ("osc-20-rot2", True, 20, 3.5, 2.0, "uint16", 16),
]
# (label, score key, better); binned noise is shown but not judged: it rewards kernels that
# smooth (and correlate) the noise, so point-source noise is the depth measure (baselines.md)
UNFAIR = {"noise_e"}
METRICS = [
    ("point-source noise (e-)", "point_noise", "lower"),
    ("binned noise (e-), not judged", "noise_e", "lower"),
    ("FWHM (px)", "fwhm", "lower"),
    ("ellipticity", "ellipticity", "lower"),
    ("photometric scatter", "phot_scatter", "lower"),
    ("faint-star completeness", "completeness", "higher"),
    ("flatness", "flatness", "lower"),
    ("trail residual", "trail_residual", "|lower|"),
    ("cosmic residual", "cosmic_residual", "|lower|"),
    ("hot residual", "hot_residual", "|lower|"),
]


def _why(exc: Exception) -> str:
    """The telling line of a failed tool's output (Siril says why in its log lines)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.strip().isdigit()]
    telling = [ln for ln in lines if any(w in ln.lower() for w in ("fail", "error", "require", "not allow"))]
    return (telling or lines or ["failed"])[-1][:160]


def _mono(image):
    return image.mean(axis=0) if image.ndim == 3 else image


def run_cell(cell, size: tuple[int, int], have_new: bool, seed: int) -> dict:
    name, osc, frames, fwhm, rotation, dtype, _ = cell
    night = WORK / f"grid_{name}_{size[0]}x{size[1]}_seed{seed}"  # --size makes other nights
    if not (night / "truth/truth.json").exists():
        spec = NightSpec(
            osc=osc, frames=frames, width=size[0], height=size[1], seed=seed, dtype=dtype,
            fwhm=fwhm, max_rotation_deg=rotation, stars_per_mpix=DENSITY,
        )  # fmt: skip
        make_night(night, spec)
    truth = load_truth(night)
    band = "RGB" if osc else "L"
    if osc:  # the mean of the debayered channels holds the mean of each star's R, G and B flux
        truth["stars"]["RGB"] = (truth["stars"]["R"] + truth["stars"]["G"] + truth["stars"]["B"]) / 3
    results = {}
    ours = WORK / "grid_astroflow"
    try:
        run_astroflow(night, ours, band=band)
        results["astroflow"] = score(
            _mono(read_image(ours / f"NGC_7000/integration/Integration_{band}.fits")[0]), truth, band
        )
    except RuntimeError as exc:
        results["astroflow"] = _why(exc)
    try:
        run_siril(night, WORK / "grid_siril", band, osc)
        results["Siril 1.0.6"] = score(_mono(read_image(WORK / "grid_siril/result.fit")[0]), truth, band)
    except (RuntimeError, FileNotFoundError, ValueError) as exc:
        results["Siril 1.0.6"] = _why(exc)
    if have_new:
        try:
            run_siril_new(night, WORK / "grid_siril14", band)
            stack = WORK / f"grid_siril14/run/result_{band}.fit"
            results["Siril 1.4"] = score(_mono(read_image(stack)[0]), truth, band)
        except (RuntimeError, FileNotFoundError, ValueError) as exc:
            results["Siril 1.4"] = _why(exc)
    shutil.rmtree(ours, ignore_errors=True)
    return results


def _mean_over_nights(nights: list[dict]) -> dict:
    """Per tool, ``{metric: (mean, standard deviation)}`` over the nights it stacked, or its
    error when it stacked none; a tool that failed some nights says how many in its metrics'
    place (its mean is over the others)."""
    out = {}
    for tool in nights[0]:
        ok = [n[tool] for n in nights if isinstance(n[tool], dict)]
        if not ok:
            out[tool] = next(n[tool] for n in nights)
            continue
        out[tool] = {
            k: (float(np.mean([r[k] for r in ok])), float(np.std([r[k] for r in ok]))) for k in ok[0]
        }
        if len(ok) < len(nights):
            print(f"{tool}: {len(nights) - len(ok)} of {len(nights)} nights failed", flush=True)
    return out


def paired_spread(nights: list[dict], tool: str, key: str) -> float:
    """Standard error of the mean night-by-night difference of ``key`` between astroflow and
    ``tool`` (the same nights: what the seeds change for both tools cancels)."""
    d = [
        n["astroflow"][key] - n[tool][key]
        for n in nights
        if all(isinstance(n[t], dict) for t in ("astroflow", tool))
    ]
    return float(np.std(d, ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0


def verdict(ours: float, theirs: float, key: str, better: str, spread: float = 0.0) -> str:
    """``better``: "lower", "higher" or "|lower|" (a residual: closer to 0, either sign).
    ``spread``: the standard error of the difference (:func:`paired_spread`); a difference
    within it, within 2 % or within the metric's noise floor is a tie."""
    if better == "|lower|":
        ours, theirs = abs(ours), abs(theirs)
    tie = TIE.get(key, 0.0)
    if abs(ours - theirs) <= max(tie, 0.02 * abs(theirs), spread):
        return "tie"
    return "lead" if (ours < theirs) == (better != "higher") else "behind"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1024x768")
    ap.add_argument("--cells", default="all", help="comma-separated 1-based cell numbers, or all")
    ap.add_argument("--seeds", type=int, default=3, help="nights per cell (seeds base, base + 1000, ...)")
    ap.add_argument("--reuse", action="store_true", help="keep the cells already in grid_results.json")
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    cells = CELLS if args.cells == "all" else [CELLS[int(i) - 1] for i in args.cells.split(",")]
    have_new = SIRIL_NEW.exists() and shutil.which("siril-cli-new") is not None
    lines = [
        "# Quality grid: astroflow vs Siril on nights unlike the benchmark night",
        "",
        f"Command: `python benchmarks/grid.py --size {args.size} --seeds {args.seeds}` ({len(cells)} cells of "
        f"{args.seeds} nights each, {size[0]}×{size[1]}, "
        f"{DENSITY:g} stars/MP, 5 bias/dark/flat each; colour stacks scored on the mean of their channels). Siril 1.4: "
        + ("run." if have_new else "not installed here (../shared/tools/siril-new-up.sh), column absent."),
        "Each value is the mean over a cell's nights (± their standard deviation). A verdict compares"
        " astroflow's mean with the better Siril's: tie within 2 %, within the standard error of the"
        " night-by-night difference (the same nights for both) or within the metric's noise floor;"
        " binned noise is not judged (smoothing kernels lower it without deepening the stack).",
        "",
    ]
    tally = {"lead": 0, "tie": 0, "behind": 0}
    saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for cell in cells:
        name, osc, frames, fwhm, rot, dtype, base = cell
        cell_key = f"{name} {args.size} x{args.seeds}"
        if not (args.reuse and cell_key in saved):
            saved[cell_key] = [run_cell(cell, size, have_new, base + 1000 * k) for k in range(args.seeds)]
            RESULTS.write_text(json.dumps(saved, indent=1, default=float))
        nights = saved[cell_key]
        results = _mean_over_nights(nights)
        tools = list(results)
        lines += [
            f"## {name}: {'OSC' if osc else 'mono'}, {frames} frames, FWHM {fwhm} px, rotation ≤ {rot}°, {dtype}",
            "",
            "| metric | " + " | ".join(tools) + " | astroflow vs best Siril |",
            "|---|" + "---|" * (len(tools) + 1),
        ]
        failed = {t: r for t, r in results.items() if isinstance(r, str)}
        for label, key, better in METRICS:
            cells_txt = [
                f"{_fmt(results[t][key][0], 4)} ± {_fmt(results[t][key][1], 4)}" if t not in failed else "–"
                for t in tools
            ]
            sirils = [t for t in tools if t != "astroflow" and t not in failed]
            v = ""
            if "astroflow" not in failed and sirils and key not in UNFAIR:
                means = {
                    t: abs(results[t][key][0]) if better == "|lower|" else results[t][key][0] for t in sirils
                }
                best = (max if better == "higher" else min)(means, key=means.get)
                ours, theirs = results["astroflow"][key], results[best][key]
                v = verdict(ours[0], theirs[0], key, better, paired_spread(nights, best, key))
                tally[v] += 1
            lines.append(f"| {label} ({better} better) | " + " | ".join(cells_txt) + f" | {v} |")
        lines += [f"- {t} failed: {msg}" for t, msg in failed.items()]
        lines.append("")
        print(f"{name}: done", flush=True)
    lines.insert(
        5,
        f"Over the grid: lead {tally['lead']}, tie {tally['tie']}, behind {tally['behind']} (cells × metrics).",
    )
    (Path(__file__).parent / "grid.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
