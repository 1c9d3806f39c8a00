"""Live stacking: latency per 26 MP frame, memory over a long night, depth against the pipeline.

    python benchmarks/live.py [--latency-frames 8] [--long 200]

1. Latency: the speed benchmark's 26 MP night (6248×4176 uint16 L, seed 0) with the masters the
   pipeline made from its calibration frames (``--masters``). ``astroflow live`` watches an
   empty folder; each light is copied beside it and renamed in, as capture programs do, and the
   time runs from the rename until ``GET /api/status`` counts the frame (its stretched image is
   written before the count changes). Median over the frames; the frames' own step times
   (``frames.tsv``) say where the time goes.
2. Memory: ``--long`` lights of 512² present at start; the live process's RSS (``/proc``) against
   its frame count.
3. Depth: the 20 × 1024² night; the live stack and the pipeline's integration of the same
   frames scored against the truth (``astroflow.quality.score``).

Writes benchmarks/live.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from speed import night_path, snakemake_cmd
from vs_siril import ROOT, WORK

from astroflow.io import read_image
from astroflow.quality import score
from astroflow.synth import NightSpec, load_truth, make_night
from astroflow.tables import read_tsv

ASTROFLOW = str(Path(sys.executable).with_name("astroflow"))
STACK = "NGC_7000_L_120s_g100"
STEPS = ("t_read", "t_calibrate", "t_register", "t_stack", "t_write")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def frames_counted(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=10) as r:
        stacks = json.loads(r.read()).get("stacks", [])
    return stacks[0]["frames"] if stacks else 0


def rss_mb(pid: int) -> tuple[float, float]:
    """Current and peak resident memory (MB) of a process."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def start_live(watch: Path, out: Path, *extra: str):
    shutil.rmtree(out, ignore_errors=True)
    watch.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True)
    port = free_port()
    log = open(out.parent / f"{out.name}.log", "w")  # noqa: SIM115
    cmd = [ASTROFLOW, "live", "--watch", str(watch), "--out", str(out), "--port", str(port), *extra]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    while "http://" not in Path(log.name).read_text():
        if proc.poll() is not None:
            raise RuntimeError(Path(log.name).read_text())
        time.sleep(0.05)
    return proc, port


def latency(n_frames: int) -> dict:
    night = night_path("20x26MP")
    masters_out = WORK / "live_26MP_masters"
    masters = masters_out / "NGC_7000" / "masters"
    if not (masters / "AutoMasterFlat_L.fits").exists():
        subprocess.run(snakemake_cmd(night, masters_out, 2, "--until", "master", "-q"), cwd=ROOT, check=True)
    watch, out = WORK / "live_26MP_in", WORK / "live_26MP_out"
    shutil.rmtree(watch, ignore_errors=True)
    proc, port = start_live(watch, out, "--masters", str(masters))
    lights = sorted((night / "lights").rglob("*.fits"))[:n_frames]
    seconds, peak = [], 0.0
    try:
        for i, light in enumerate(lights, start=1):
            part = watch / f".{light.name}.part"
            shutil.copy(light, part)
            time.sleep(1.0)  # the copy's page-cache writes are not the frame's latency
            t0 = time.perf_counter()
            part.rename(watch / light.name)
            while frames_counted(port) < i:
                time.sleep(0.02)
            seconds.append(time.perf_counter() - t0)
            peak = max(peak, rss_mb(proc.pid)[1])
    finally:
        proc.terminate()
        proc.wait()
    rows = [r for r in read_tsv(out / STACK / "frames.tsv") if r["status"] == "accepted"]
    steps = {k: statistics.median(float(r[k]) for r in rows if r.get(k) is not None) for k in STEPS}
    return {"seconds": seconds, "median": statistics.median(seconds), "steps": steps, "peak_mb": peak}


def memory(n_frames: int) -> dict:
    night = WORK / f"night_{n_frames}x512x512"
    if not (night / "truth/truth.json").exists():
        make_night(night, NightSpec(frames=n_frames, width=512, height=512, seed=0))
    watch = WORK / "live_long_in"
    shutil.rmtree(watch, ignore_errors=True)
    shutil.copytree(night, watch, ignore=shutil.ignore_patterns("truth"))
    proc, port = start_live(watch, WORK / "live_long_out")
    samples, t0 = [], time.perf_counter()
    try:
        while True:
            samples.append(((n := frames_counted(port)), *rss_mb(proc.pid)))
            if n >= n_frames:
                break
            time.sleep(0.1)
        wall = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait()

    def rss_at(k):  # RSS when the count first reached k frames
        return next(rss for n, rss, _ in samples if n >= k)

    marks = [m for m in (10, 50, 100, n_frames // 2, n_frames) if m <= n_frames]
    return {
        "frames": n_frames,
        "wall": wall,
        "rss": {m: rss_at(m) for m in sorted(set(marks))},
        "peak": samples[-1][2],
    }


def depth() -> dict:
    night = night_path("20x1024")
    batch = WORK / "live_depth_batch"
    if not (batch / "NGC_7000/integration/Integration_L.fits").exists():
        subprocess.run(snakemake_cmd(night, batch, 2, "-q"), cwd=ROOT, check=True)
    watch, out = WORK / "live_depth_in", WORK / "live_depth_out"
    shutil.rmtree(watch, ignore_errors=True)
    shutil.copytree(night, watch, ignore=shutil.ignore_patterns("truth"))
    proc, port = start_live(watch, out)
    try:
        while frames_counted(port) < 20:
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait()
    truth = load_truth(night)
    keys = ("noise_e", "point_noise", "fwhm_ratio", "phot_scatter", "completeness", "trail_residual")
    live = score(read_image(out / STACK / "stack.fits")[0], truth, "L")
    pipe = score(read_image(batch / "NGC_7000/integration/Integration_L.fits")[0], truth, "L")
    return {"live": {k: live[k] for k in keys}, "pipeline": {k: pipe[k] for k in keys}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency-frames", type=int, default=8)
    ap.add_argument("--long", type=int, default=200)
    args = ap.parse_args()
    lat, mem, dep = latency(args.latency_frames), memory(args.long), depth()
    lines = [
        "# Live stacking: latency, memory, depth",
        "",
        f"Command: `python benchmarks/live.py --latency-frames {args.latency_frames} --long {args.long}` "
        "(2-core machine; generated uint16 L nights, seed 0; `astroflow live` with its default config).",
        "",
        "## Latency, 26 MP (6248×4176) lights, masters present",
        "",
        "From a light's rename into the watched folder to its count in `/api/status` (its stretched",
        "image already written):",
        "",
        "| frames | median (s) | min (s) | max (s) | peak RSS (GB) |",
        "|---|---|---|---|---|",
        f"| {len(lat['seconds'])} | {lat['median']:.2f} | {min(lat['seconds']):.2f} | {max(lat['seconds']):.2f} "
        f"| {lat['peak_mb'] / 1024:.2f} |",
        "",
        "Where it goes (median per frame, `frames.tsv`; the rest is the settle time, "
        "`live.settle_seconds` = 0.5 s, and the scan interval):",
        "",
        "| " + " | ".join(k[2:] for k in STEPS) + " |",
        "|" + "---|" * len(STEPS),
        "| " + " | ".join(f"{lat['steps'][k]:.2f}" for k in STEPS) + " |",
        "",
        "Raw latencies (s): " + ", ".join(f"{s:.2f}" for s in lat["seconds"]),
        "",
        f"## Memory over a {mem['frames']}-frame night (512² lights)",
        "",
        "| frames stacked | " + " | ".join(str(k) for k in mem["rss"]) + " |",
        "|---|" + "---|" * len(mem["rss"]),
        "| RSS (MB) | " + " | ".join(f"{v:.0f}" for v in mem["rss"].values()) + " |",
        "",
        f"Peak RSS {mem['peak']:.0f} MB; {mem['frames']} frames in {mem['wall']:.1f} s "
        f"({mem['wall'] / mem['frames']:.2f} s per frame).",
        "",
        "## Depth: live stack vs the pipeline's integration of the same 20 × 1024² frames",
        "",
        "| metric | live | pipeline | live / pipeline |",
        "|---|---|---|---|",
    ]
    for k, v in dep["live"].items():
        p = dep["pipeline"][k]
        lines.append(f"| {k} | {v:.4g} | {p:.4g} | {v / p if p else float('nan'):.3f} |")
    lines.append("")
    (ROOT / "benchmarks" / "live.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
