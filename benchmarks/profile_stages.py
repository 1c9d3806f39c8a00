"""Profile one job of each front-half stage (cProfile), as the Snakemake jobs run them.

    python benchmarks/profile_stages.py [RESULTS_TARGET] [--data NIGHT] [--frames 2] [--top 12]

RESULTS_TARGET is a finished run's ``OUT/<target>`` folder, with its ``provenance/`` and NIGHT its
data folder (default: the 26 MP night of ``benchmarks/speed.py``,
``benchmarks/work/speed_20x26MP/NGC_7000`` of ``benchmarks/work/night_20x6248x4176``). Each stage function is
called in this process with one thread for OpenCV and the kernels (the jobs' ``threads: 1``) on
``--frames`` lights of the first chunk, its outputs going to a scratch folder; the integration
uses every registered frame. Prints wall time and the top functions by own time per stage.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "benchmarks/work/speed_20x26MP/NGC_7000"
DEFAULT_DATA = ROOT / "benchmarks/work/night_20x6248x4176"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("target", nargs="?", default=str(DEFAULT))
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--frames", type=int, default=2)
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()
    target = Path(args.target)
    record = target / "provenance"
    if not (record / "plan.yaml").exists():
        sys.exit(f"{record} is missing: run `snakemake {record}/plan.yaml --config data=NIGHT out=...` first")
    from astroflow.stages import calibrate, integrate, job, master

    job.setup_logging(Path(tempfile.gettempdir()) / "astroflow-profile.log", threads=1)
    cfg = yaml.safe_load((record / "config.yaml").read_text())
    plan = yaml.safe_load((record / "plan.yaml").read_text())  # paths relative to the night
    data = Path(args.data).resolve()
    for spec in plan["masters"].values():
        spec["files"] = [str(data / f) for f in spec["files"]]
    chunk = sorted(plan["chunks"])[0]
    rows = [{**r, "source": str(data / r["source"])} for r in plan["chunks"][chunk][: args.frames]]
    ref_filter = plan["reference_filter"]
    scratch = Path(tempfile.mkdtemp(prefix="astroflow-profile-"))
    calibrated = sorted(str(p) for p in (target / "calibrated").glob(f"{ref_filter}_*"))
    masters = plan["masters"]
    dark = next(n for n, m in masters.items() if m["kind"] == "dark")
    flat = next(n for n, m in masters.items() if m["kind"] == "flat")
    deps = {n: masters[n] for n in masters[flat]["calibrate_with"].values() if n}
    band_mb = cfg["integration"]["memory_mb"]
    stages = {
        f"master ({dark})": lambda: master.master(dark, masters[dark], {}, scratch / "d.fits", cfg, band_mb),
        f"master ({flat}, with its bias)": lambda: master.master(
            flat, masters[flat], deps, scratch / "f.fits", cfg, band_mb
        ),
        f"calibrate ({len(rows)} frames)": lambda: calibrate.calibrate(
            rows, target / "masters", scratch / chunk, cfg
        ),
        f"integrate ({len(calibrated)} chunks, registered on the way)": lambda: integrate.integrate(
            calibrated,
            calibrated,
            chunk.rsplit("_", 1)[0],
            {
                k: scratch / f"{k}.{'tsv' if k == 'registration' else 'fits'}"
                for k in ("registration", "image", "rejection_low", "rejection_high", "coverage")
            },
            cfg,
            [],
            band_mb,
        ),
    }
    for name, run in stages.items():
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.enable()
        run()
        prof.disable()
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(args.top)
        body = text.getvalue().split("ncalls", 1)[-1]
        print(f"## {name}: {time.perf_counter() - t0:.2f} s\n\n    ncalls{body}")
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
