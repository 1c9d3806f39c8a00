"""Profile one job of each front-half stage (cProfile), as the Snakemake jobs run them.

    python benchmarks/profile_stages.py [RESULTS_TARGET] [--frames 2] [--top 12]

RESULTS_TARGET is a finished run's ``OUT/<target>`` folder, with its ``run/config.yaml``
(default: the 26 MP night of ``benchmarks/speed.py``, ``benchmarks/work/speed_20x26MP/NGC_7000``). Each stage function is
called in this process with one thread for OpenCV and numba (the jobs' ``threads: 1``) on
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("target", nargs="?", default=str(DEFAULT))
    ap.add_argument("--frames", type=int, default=2)
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()
    target = Path(args.target)
    record = target / "run/config.yaml"
    if not record.exists():
        sys.exit(f"{record} is missing: run `snakemake {record} --config data=NIGHT out=...` first")
    from astroflow import pipeline

    pipeline.setup_logging(Path(tempfile.gettempdir()) / "astroflow-profile.log", threads=1)
    saved = yaml.safe_load(record.read_text())
    cfg, plan = saved["config"], saved["plan"]
    chunk = sorted(plan["chunks"])[0]
    rows = plan["chunks"][chunk][: args.frames]
    scratch = Path(tempfile.mkdtemp(prefix="astroflow-profile-"))
    calibrated = sorted(str(p) for p in (target / "calibrated").iterdir())
    registered = sorted(str(p) for p in (target / "registered").iterdir())
    masters = plan["masters"]
    dark = next(n for n, m in masters.items() if m["kind"] == "dark")
    flat = next(n for n, m in masters.items() if m["kind"] == "flat")
    deps = {n: masters[n] for n in masters[flat]["calibrate_with"].values() if n}
    stages = {
        f"master ({dark})": lambda: pipeline.build_master(dark, masters[dark], {}, scratch / "d.fits", cfg),
        f"master ({flat}, with its bias)": lambda: pipeline.build_master(
            flat, masters[flat], deps, scratch / "f.fits", cfg
        ),
        f"calibrate ({len(rows)} frames)": lambda: pipeline.calibrate_chunk(
            rows, target / "masters", scratch / chunk, cfg
        ),
        f"register ({len(rows)} frames)": lambda: pipeline.register_chunk(
            scratch / chunk, calibrated, scratch / "registered", cfg
        ),
        f"integrate ({len(registered)} chunks)": lambda: pipeline.integrate_filter(
            registered,
            chunk.rsplit("_", 1)[0],
            {k: scratch / f"{k}.fits" for k in ("image", "rejection_low", "rejection_high", "coverage")},
            cfg,
            [],
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
