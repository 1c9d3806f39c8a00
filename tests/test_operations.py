"""Operating a results folder: locks after a killed run, results inside the data folder, the
saved configuration fed back, typed options on the command line, clear config errors."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS, ROOT, SNAKEMAKE, run_snakemake

from astroflow.synth import NightSpec, make_night


@pytest.fixture(scope="module")
def small_night(tmp_path_factory):
    path = tmp_path_factory.mktemp("small")
    make_night(path, NightSpec(filters=("L",), frames=6, width=256, height=256, seed=8))
    return path


@pytest.fixture(scope="module")
def small_run(small_night, tmp_path_factory):
    out = tmp_path_factory.mktemp("small_out")
    run_snakemake(small_night, out)
    return out


def _dry(data, out, *extra, cwd=ROOT):
    cmd = [
        SNAKEMAKE,
        "-s",
        str(ROOT / "Snakefile"),
        "-n",
        "--cores",
        "2",
        "--config",
        f"data={data}",
        f"out={out}",
    ]
    return subprocess.run([*cmd, *extra], cwd=cwd, capture_output=True, text=True)


def test_results_inside_the_data_folder_are_never_read_back(small_night, tmp_path, copy_night):
    night = copy_night(small_night, tmp_path / "night")
    out = night / "results"
    run_snakemake(night, out)
    proc = run_snakemake(night, out)
    assert "Nothing to be done" in proc.stdout + proc.stderr
    inputs = (out / "NGC_7000/provenance/inputs.tsv").read_text().splitlines()[1:]
    assert not [line for line in inputs if line.startswith("results/")]
    n_inputs = sum(1 for p in small_night.rglob("*.fits"))
    assert len(inputs) == n_inputs


def test_saved_config_runs_as_is_from_any_directory(small_night, small_run, tmp_path):
    saved = small_run / "NGC_7000/provenance/config.yaml"
    proc = _dry(small_night, small_run, "--configfile", str(saved), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Nothing to be done" in proc.stdout + proc.stderr
    command = (small_run / "NGC_7000/provenance/command.txt").read_text()
    assert f"--configfile {saved}" in command and f"data={small_night}" in command


def test_nested_options_from_the_command_line_keep_their_types(small_night, small_run):
    proc = _dry(small_night, small_run, "registration={max_rms: 0.8, clamping: false}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "rule integrate" in proc.stdout and "rule calibrate" not in proc.stdout


@pytest.mark.parametrize(
    "option,named",
    [
        ("registration={max_rms: lots}", "max_rms"),
        ("registration={max_rsm: 1}", "max_rsm"),
        ("stretch={method: magic}", "magic"),
    ],
)
def test_bad_options_are_named_before_any_job(small_night, small_run, option, named):
    proc = _dry(small_night, small_run, option)
    assert proc.returncode != 0 and named in proc.stdout + proc.stderr


def test_missing_data_folder_is_named(tmp_path):
    proc = _dry(tmp_path / "nowhere", tmp_path / "out")
    assert proc.returncode != 0 and f"{tmp_path / 'nowhere'}" in proc.stdout + proc.stderr


def test_a_killed_run_resumes_with_the_same_command_and_a_live_one_is_named(small_night, tmp_path):
    out = tmp_path / "out"
    cmd = [SNAKEMAKE, "--cores", "1", "--config", f"data={small_night}", f"out={out}"]
    run = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.time() + 60
        while not list((out / ".snakemake/locks").glob("*.lock")) and time.time() < deadline:
            time.sleep(0.2)
        assert run.poll() is None, "the run ended before it could be interrupted"
        # a second run on the same results folder, from another directory, is refused by name
        other = subprocess.run(
            [SNAKEMAKE, "-s", str(ROOT / "Snakefile"), *cmd[1:]], cwd=tmp_path, capture_output=True, text=True
        )
        assert other.returncode != 0 and str(out) in other.stdout + other.stderr
        assert "in use by another run" in other.stdout + other.stderr
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    assert list((out / ".snakemake/locks").glob("*.lock")), "kill -9 leaves Snakemake's lock behind"
    proc = run_snakemake(small_night, out)
    assert "removed the lock" in proc.stdout + proc.stderr
    assert (out / "NGC_7000/final/AutoMono/AutoMono.png").exists()


def test_flowchart_is_the_runs_dag_with_measured_times(small_run):
    dot = (small_run / "flowchart.dot").read_text()
    for edge in ('"master" -> "calibrate"', '"calibrate" -> "integrate"', '"integrate" -> "crop_area"'):
        assert edge in dot
    assert re.search(r'"calibrate" \[label="calibrate: 2 jobs, [0-9.]+ s"\]', dot), dot
    if shutil.which("dot"):  # Graphviz: installed by .ci/run and make install
        assert "<svg" in (small_run / "flowchart.svg").read_text()
        assert (small_run / "flowchart.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium not installed (.ci/run installs it)")
def test_report_renders_every_image_in_a_real_browser(small_night, small_run):
    from playwright.sync_api import sync_playwright

    report = small_run / "report.html"
    cmd = [
        SNAKEMAKE,
        "--cores",
        "1",
        "--report",
        str(report),
        "--config",
        f"data={small_night}",
        f"out={small_run}",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # category, then (for Frames) the figure, then the row whose eye shows the image
    expected = [
        ("Final images", "AutoMono"),
        ("Integrations", "L"),
        ("Frames", "per-frame metrics", "NGC_7000"),
    ]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(report.as_uri())
        for *clicks, row in expected:
            for text in clicks:
                page.get_by_text(text, exact=True).first.click()
            page.locator("tr", has_text=row).locator("a[iconname=eye]").first.click()
            shown = page.locator("img[src^='data:image/png'], img[src^='data:image/svg']").last
            shown.wait_for(timeout=10_000)
            assert shown.evaluate("i => i.complete && i.naturalWidth") > 0, clicks
            page.goto(report.as_uri())
        assert "frames.tsv" in page.content()
        browser.close()
