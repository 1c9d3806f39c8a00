"""Rerun granularity: after a full run, `snakemake -n` plans exactly the jobs a change can affect.

The workflow and the library are copied to a scratch folder (imported from there through
PYTHONPATH), so a test can edit a module without touching the checkout other tests run from.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from astropy.io import fits
from conftest import ROOT, SNAKEMAKE

from astroflow.synth import NightSpec, make_night

FINISH = {"crop_area", "crop_channel[L]", "gradient[L]"}  # L+R: only AutoMono is made (from L)


def _run(workflow, data, out, *extra, dry=False):
    cmd = [
        SNAKEMAKE,
        "--cores",
        "2",
        *(["-n"] if dry else []),
        "--config",
        f"data={data}",
        f"out={out}",
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": str(workflow / "src"), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, cwd=workflow, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def planned(workflow, data, out, *extra) -> set[str]:
    """Jobs a dry run plans, as ``rule[wildcard values]`` (the target's name left out)."""
    text = _run(workflow, data, out, *extra, dry=True)
    jobs, rule = set(), None
    for line in text.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):", line)
        if m:
            rule = m.group(1)
            if rule != "all":
                jobs.add(rule)
        elif rule and line.strip().startswith("wildcards:"):
            values = [v.split("=", 1)[1] for v in line.split(":", 1)[1].split(", ")]
            values = [v for v in values if v != "NGC_7000"]
            jobs.discard(rule)
            jobs.add(f"{rule}[{','.join(values)}]" if values else rule)
            rule = None
    return jobs


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("rerun")
    workflow = base / "astroflow"
    workflow.mkdir()
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for part in ("Snakefile", "workflow", "config", "scripts", "src", "envs", "profiles"):
        src = ROOT / part
        if src.is_dir():
            shutil.copytree(src, workflow / part, ignore=skip)
        else:
            shutil.copy(src, workflow / part)
    data, out = base / "night", base / "out"
    make_night(data, NightSpec(filters=("L", "R"), frames=6, width=256, height=256, seed=5))
    _run(workflow, data, out, "output={formats: [png, jpeg]}")
    return workflow, data, out


def _chunks(out, filt):
    return sorted(p.name for p in (out / "NGC_7000/calibrated").glob(f"{filt}_*"))


def test_nothing_to_do_after_a_run(setup):
    assert planned(*setup, "output={formats: [png, jpeg]}") == set()


def test_finishing_option_reruns_only_the_final_images(setup):
    for option in ("stretch={method: arcsinh}", "output={formats: [png, jpeg], jpeg_quality: 70}"):
        extra = ("output={formats: [png, jpeg]}", option)
        assert planned(*setup, *extra) == {"final_image[AutoMono]", "provenance"}, option


def test_registration_option_reruns_registration_not_calibration(setup):
    """Registration happens in the integrate jobs (and frames_table, which records it)."""
    jobs = planned(*setup, "output={formats: [png, jpeg]}", "registration={interpolation: cubic}")
    expected = {"integrate[L]", "integrate[R]", "frames_table", "frame_plots", "provenance"}
    expected |= {"preview[L]", "preview[R]"}
    assert jobs == expected | FINISH | {"final_image[AutoMono]"}


def test_integration_option_reruns_integration_and_after(setup):
    jobs = planned(*setup, "output={formats: [png, jpeg]}", "integration={rejection: winsorized}")
    after = {"preview[L]", "preview[R]", "provenance", "final_image[AutoMono]"}
    assert jobs == {"integrate[L]", "integrate[R]"} | after | FINISH


def one_chunk_of_r(chunk):
    """What a changed light of R reruns: its chunk, R's integration and what depends on it."""
    after = {
        "integrate[R]",
        "preview[R]",
        "frames_table",
        "frame_plots",
        "provenance",
        "final_image[AutoMono]",
    }
    return {f"calibrate[{chunk}]"} | after | FINISH


def _light(data, filt, i):
    return data / f"lights/{filt}/NGC7000_Light_{filt}_120s_{i:04d}.fits"


def test_one_new_light_reruns_its_chunk_and_its_filter_only(setup):
    workflow, data, out = setup
    new, junk = data / "lights/R/NGC7000_Light_R_120s_0099.fits", data / "lights/R/junk.fits"
    with fits.open(_light(data, "R", 1)) as hdul:
        hdul[0].header["DATE-OBS"] = "2026-01-01T23:59:00"
        hdul.writeto(new)
    junk.write_bytes(b"not a FITS file")
    try:
        jobs = planned(*setup, "output={formats: [png, jpeg]}")
    finally:
        new.unlink()
        junk.unlink()
    chunks = {j[len("calibrate[") : -1] for j in jobs if j.startswith("calibrate[")}
    assert len(chunks) == 1 and next(iter(chunks)).startswith("R_"), jobs
    chunk = chunks.pop()
    assert jobs == one_chunk_of_r(chunk)


def test_a_replaced_light_with_an_older_mtime_is_reprocessed(setup):
    workflow, data, out = setup
    light, other = _light(data, "R", 2), _light(data, "R", 3)
    saved = light.read_bytes()
    stat = light.stat()
    shutil.copyfile(other, light)
    os.utime(light, (stat.st_atime - 86400, stat.st_mtime - 86400))  # as `cp -p` of an old file
    try:
        jobs = planned(*setup, "output={formats: [png, jpeg]}")
    finally:
        light.write_bytes(saved)
        os.utime(light, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    chunk = next(r["chunk"] for r in _frames(out) if r["path"].endswith(light.name))
    assert jobs == one_chunk_of_r(chunk)


def _frames(out):
    import csv

    with open(out / "NGC_7000/frames.tsv") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_code_changes_rerun_only_the_stages_using_the_module(setup):
    workflow, data, out = setup
    module = workflow / "src/astroflow/background.py"
    saved = module.read_text()
    try:
        module.write_text(saved + "\n# a comment, and layout: no result can change\n\n")
        assert planned(*setup, "output={formats: [png, jpeg]}") == set()
        module.write_text(saved + "\nUNUSED_CONSTANT = 1\n")  # code: the stages importing it rerun
        jobs = planned(*setup, "output={formats: [png, jpeg]}")
    finally:
        module.write_text(saved)
    assert jobs == {"gradient[L]", "final_image[AutoMono]", "provenance"}
