"""``astroflow live`` on generated nights with known truth: the running stack's rejection, frame
judgement, master matching, restarts after ``kill -9``, bad input, and the web page in a real
browser. Sessions are stepped by hand where a test needs control of time (``Session.step`` with a
given clock); the restart and browser tests run the real command."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from astropy.io import fits
from conftest import CHROMIUM, CHROMIUM_ARGS

from astroflow.io import read_image
from astroflow.live.ledger import Ledger
from astroflow.live.running import RunningStack
from astroflow.live.session import Session
from astroflow.options import with_defaults
from astroflow.quality import score
from astroflow.synth import NightSpec, load_truth, make_night

ASTROFLOW = str(Path(sys.executable).with_name("astroflow"))
STACK = "NGC_7000_L_120s_g100"


def live_cfg(**live):
    return with_defaults({"live": {"settle_seconds": 0, "partial_timeout": 0, **live}})


def drain(session: Session, scans: int = 3) -> None:
    """Scan until every file present has settled and been taken (settle 0: two scans)."""
    clock = drain.clock = getattr(drain, "clock", 0.0)
    for i in range(scans):
        session.step(now=clock + i)
    drain.clock = clock + scans


def calibration_only(night: Path, dst: Path) -> Path:
    for kind in ("bias", "darks", "flats"):
        shutil.copytree(night / kind, dst / kind)
    return dst


def lights(night: Path) -> list[Path]:
    return sorted((night / "lights").rglob("*.fits"))


def status(session) -> dict:
    return json.loads(session.snapshot)


@pytest.fixture(scope="module")
def live_night(tmp_path_factory):
    """10 L lights of 384² with two satellite trails, and calibration frames."""
    path = tmp_path_factory.mktemp("live_night")
    make_night(path, NightSpec(frames=10, width=384, height=384, seed=21))
    return path


# -- the running stack --------------------------------------------------------------------


def test_running_stack_rejects_a_trail_during_and_after_the_warmup():
    rng = np.random.default_rng(0)
    truth = np.full((1, 64, 64), 100.0, np.float32)
    stack = RunningStack(truth.shape, warmup=4)
    for i in range(20):
        frame = truth + rng.normal(0, 2.0, truth.shape).astype(np.float32)
        if i in (1, 12):  # a satellite: one row, far above the noise
            frame[0, 30] += 500
        if i == 15:
            frame[0, :, :8] = np.nan  # outside this frame's footprint
        _, high = stack.add(frame, 1.0, [2.0])
        if i == 12:
            assert 0.01 < high < 0.03  # the row's 64 pixels of 4096, and little else
    image = stack.image()[0]
    assert abs(float(image[30].mean()) - 100) < 1.0  # no trace of either trail
    assert abs(float(image.std()) - 2.0 / np.sqrt(20)) < 0.1  # as deep as 20 frames
    coverage = stack.coverage().astype(float)
    assert abs(coverage[:, 8:].mean() - coverage[:, :8].mean() - 1) < 0.1  # one frame had no data
    assert coverage[:, 8:].mean() > 19.6  # honest noise is hardly ever rejected


# -- a night, frame by frame --------------------------------------------------------------


def test_live_stack_is_as_deep_as_the_pipelines_and_uses_its_masters(mono_night, mono_run, tmp_path):
    """The mono night's lights alone, with the pipeline's masters: every frame stacked, the
    trails rejected, and the noise within 3 % of the pipeline's integration of the same frames."""
    out, _ = mono_run
    watch = tmp_path / "in"
    shutil.copytree(mono_night / "lights", watch)
    session = Session(watch, tmp_path / "out", live_cfg(), masters_dir=out / "NGC_7000" / "masters")
    drain(session)
    st = status(session)["stacks"]
    assert [(s["name"], s["frames"], s["rejected"]) for s in st] == [(STACK, 12, 0)]
    assert all("dark=" in r["masters"] and "flat=" in r["masters"] for r in st[0]["rows"])
    truth = load_truth(mono_night)
    live = score(read_image(tmp_path / "out" / STACK / "stack.fits")[0], truth, "L")
    batch = score(read_image(out / "NGC_7000" / "integration" / "Integration_L.fits")[0], truth, "L")
    assert live["noise_e"] <= 1.03 * batch["noise_e"], (live["noise_e"], batch["noise_e"])
    assert abs(live["trail_residual"]) < 0.05 and live["fwhm_ratio"] < 1.1


def _write_variant(src: Path, dst: Path, change) -> None:
    with fits.open(src) as hdul:
        data = hdul[0].data.astype(np.float32)
        header = hdul[0].header.copy()
    data = change(data)
    fits.PrimaryHDU(np.clip(data, 0, 65535).astype(np.uint16), header).writeto(dst)


def test_bad_frames_are_rejected_with_their_reason(live_night, tmp_path):
    watch = calibration_only(live_night, tmp_path / "in")
    frames = lights(live_night)
    for f in frames[:6]:
        shutil.copy(f, watch)
    raw = fits.getdata(frames[6]).astype(np.float32)
    sky = float(np.median(raw))
    sky_noise = 1.4826 * float(np.median(np.abs(raw - sky)))
    rng = np.random.default_rng(1)
    line = np.zeros((1, 15), np.float32)
    line[0] = 1 / 15
    variants = {
        "defocused.fits": lambda d: cv2.GaussianBlur(d, (0, 0), 3.0),
        # clouds dim the stars, the sky's noise stays
        "clouds.fits": lambda d: sky + (d - sky) * 0.1 + rng.normal(0, sky_noise, d.shape).astype(np.float32),
        "trailed.fits": lambda d: cv2.filter2D(d, -1, line),
    }
    for name, change in variants.items():
        _write_variant(frames[6], watch / name, change)
    session = Session(watch, tmp_path / "out", live_cfg())
    drain(session)
    rows = {r["file"]: r for r in status(session)["stacks"][0]["rows"]}
    assert sum(r["status"] == "accepted" for r in rows.values()) == 6
    assert rows["defocused.fits"]["reason"].startswith("blurred")
    assert rows["clouds.fits"]["reason"].startswith(("clouds", "no stars"))
    assert rows["trailed.fits"]["reason"].startswith("trailed")
    table = (tmp_path / "out" / STACK / "frames.tsv").read_text()
    assert "blurred" in table and "trailed" in table


def test_bad_input_is_reported_and_the_night_goes_on(live_night, tmp_path):
    watch = calibration_only(live_night, tmp_path / "in")
    frames = lights(live_night)
    for f in frames[:5]:
        shutil.copy(f, watch)
    (watch / "notes.fits").write_text("not a FITS file at all\n")
    partial = watch / "partial.fits"
    partial.write_bytes(frames[5].read_bytes()[:100_000])  # a writer still at it
    small = fits.getdata(frames[6])[:200, :300]
    fits.PrimaryHDU(small, fits.getheader(frames[6])).writeto(watch / "small.fits")
    before = {p: p.read_bytes() for p in watch.rglob("*") if p.is_file()}
    session = Session(watch, tmp_path / "out", live_cfg(partial_timeout=60))
    drain(session)
    st = status(session)
    rows = {r["file"]: r for r in st["stacks"][0]["rows"]}
    assert st["stacks"][0]["frames"] == 5
    assert "size (300, 200) differs" in rows["small.fits"]["reason"]
    assert [u["file"] for u in st["unusable"]] == ["notes.fits"] and "unreadable" in st["unusable"][0][
        "reason"
    ]
    assert "partial.fits" not in rows  # still waiting for its writer
    partial.write_bytes(frames[5].read_bytes())  # ... which finishes
    before[partial] = partial.read_bytes()
    drain(session)
    assert status(session)["stacks"][0]["frames"] == 6
    assert {p: p.read_bytes() for p in watch.rglob("*") if p.is_file()} == before  # inputs untouched
    # results that cannot be written: reported, and the frame is stacked once they can
    shutil.copy(frames[7], watch)
    blocker = tmp_path / "out" / STACK / "stack.jpg"
    blocker.unlink()
    blocker.mkdir()  # a folder where the image goes: every write of it fails
    drain(session)
    assert any("cannot write results" in e for e in status(session)["errors"])
    assert status(session)["stacks"][0]["frames"] == 7  # in memory; not in the ledger yet
    blocker.rmdir()
    drain.clock += 20  # past the retry delay
    drain(session)
    assert status(session)["errors"] == []


def test_masters_are_matched_by_temperature_and_lights_wait_for_them(live_night, tmp_path):
    watch = tmp_path / "in"
    shutil.copytree(live_night / "flats", watch / "flats")
    shutil.copytree(live_night / "bias", watch / "bias")
    warm = watch / "darks_warm"
    warm.mkdir()
    for f in sorted((live_night / "darks").glob("*.fits")):  # the same darks, taken at +10 °C
        with fits.open(f) as hdul:
            hdul[0].header["CCD-TEMP"] = 10.0
            hdul.writeto(warm / f.name)
    for f in lights(live_night)[:3]:
        shutil.copy(f, watch)
    session = Session(watch, tmp_path / "out", live_cfg(unmatched="hold"))
    drain(session)
    st = status(session)
    assert st["stacks"] == [] and len(st["held"]) == 3
    assert all("dark" in h["reason"] for h in st["held"])
    shutil.copytree(live_night / "darks", watch / "darks")  # the -10 °C darks arrive
    drain(session)
    st = status(session)
    assert st["held"] == [] and st["stacks"][0]["frames"] == 3
    assert all("-10C_120s" in r["masters"] for r in st["stacks"][0]["rows"])


def test_a_new_target_starts_a_new_stack_and_osc_is_debayered(live_night, osc_night, tmp_path):
    watch = calibration_only(live_night, tmp_path / "in")
    frames = lights(live_night)
    for f in frames[:4]:
        shutil.copy(f, watch)
    for i, f in enumerate(frames[4:7]):  # the mount went elsewhere, OBJECT unchanged
        with fits.open(f) as hdul:
            hdul[0].header["RA"], hdul[0].header["DEC"] = 83.8, -5.4
            hdul[0].data = np.ascontiguousarray(np.rot90(hdul[0].data, 1 + i % 2))
            hdul.writeto(watch / f"moved_{i}.fits")
    other = tmp_path / "other_field"  # same headers and pointing, other stars: nothing registers
    make_night(other, NightSpec(frames=3, width=384, height=384, seed=98))
    for f in lights(other):
        shutil.copy(f, watch / f"zz_{f.name}")
    shutil.copytree(osc_night / "lights", watch / "osc")
    session = Session(watch, tmp_path / "out", live_cfg())
    drain(session)
    stacks = {s["name"]: s for s in status(session)["stacks"]}
    assert stacks[STACK]["frames"] == 4 and stacks[STACK + "_2"]["frames"] == 3
    assert stacks[STACK + "_3"]["frames"] == 3  # three failures in a row: a new stack of them
    osc = [s for s in stacks.values() if s["key"]["filter"] == "RGB"]
    assert len(osc) == 1 and osc[0]["frames"] == 8
    image = fits.getdata(tmp_path / "out" / osc[0]["name"] / "stack.fits")
    assert image.shape == (3, 320, 448) and np.isfinite(image).all()


# -- the command: restarts, the page ------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(watch, out, port):
    log = open(Path(out).parent / f"live_{port}_{time.monotonic_ns()}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [ASTROFLOW, "live", "--watch", str(watch), "--out", str(out), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    end = time.monotonic() + 60
    while "http://127.0.0.1:" not in Path(log.name).read_text():  # bound to 127.0.0.1 by default
        assert proc.poll() is None and time.monotonic() < end, Path(log.name).read_text()
        time.sleep(0.05)
    return proc


def _get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return r.read()


def _wait_frames(port, n, timeout=120):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        stacks = json.loads(_get(port, "/api/status")).get("stacks", [])
        if stacks and stacks[0]["frames"] >= n:
            return stacks[0]
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} frames after {timeout} s")


def test_kill_9_at_any_moment_loses_no_frame_and_counts_none_twice(live_night, tmp_path):
    watch = calibration_only(live_night, tmp_path / "in")
    for f in lights(live_night):
        shutil.copy(f, watch)
    reference = Session(watch, tmp_path / "reference", live_cfg())
    drain(reference)
    out, port = tmp_path / "out", _free_port()
    for kill_at in (3, 7):  # during the warm-up, and after the first checkpoint
        proc = _start(watch, out, port)
        _wait_frames(port, kill_at)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    proc = _start(watch, out, port)
    try:
        assert _wait_frames(port, 10)["frames"] == 10
        time.sleep(1.0)  # anything more would be a frame counted twice
        assert json.loads(_get(port, "/api/status"))["stacks"][0]["frames"] == 10
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    accepted = [r["file"] for r in Ledger(out / "ledger.tsv").rows.values() if r["status"] == "accepted"]
    assert sorted(accepted) == sorted(p.name for p in lights(live_night))
    lines = (out / "ledger.tsv").read_text().splitlines()
    assert len(lines) == len(set(lines))
    assert (out / STACK / "stack.fits").read_bytes() == (
        tmp_path / "reference" / STACK / "stack.fits"
    ).read_bytes()


def test_a_kill_between_checkpoint_and_ledger_counts_no_frame_twice(live_night, tmp_path, monkeypatch):
    """The one moment a kill -9 test rarely hits: the checkpoint holds a frame, the ledger does
    not yet. The restart records the frame from the checkpoint instead of stacking it again."""
    watch = calibration_only(live_night, tmp_path / "in")
    for f in lights(live_night):
        shutil.copy(f, watch)
    out = tmp_path / "out"
    first = Session(watch, out, live_cfg())
    real = Ledger.record
    lost = []

    def killed_after_the_checkpoint(self, rows):
        if any(r["status"] == "accepted" for r in rows) and not lost:
            lost.extend(rows)  # the process died before these lines reached the disk
            raise KeyboardInterrupt
        real(self, rows)

    monkeypatch.setattr(Ledger, "record", killed_after_the_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        drain(first)
    monkeypatch.setattr(Ledger, "record", real)
    assert lost and (out / STACK / "state.npz").exists()
    second = Session(watch, out, live_cfg())
    drain(second)
    assert second.stacks[STACK].accepted == len(lights(live_night))
    accepted = [r["file"] for r in Ledger(out / "ledger.tsv").rows.values() if r["status"] == "accepted"]
    assert sorted(accepted) == sorted(p.name for p in lights(live_night))


def test_server_serves_only_its_own_outputs(live_night, tmp_path):
    watch = calibration_only(live_night, tmp_path / "in")
    for f in lights(live_night)[:2]:
        shutil.copy(f, watch)
    port = _free_port()
    proc = _start(watch, tmp_path / "out", port)
    try:
        stack = _wait_frames(port, 2)
        assert set(stack) >= {"key", "frames", "exposure", "updated"} and stack["exposure"] == 240
        assert _get(port, stack["image"])[:3] == b"\xff\xd8\xff"  # a JPEG
        assert _get(port, f"/stacks/{STACK}/stack.fits")[:6] == b"SIMPLE"
        for path in (
            f"/stacks/{STACK}/state.npz",
            "/stacks/../ledger.tsv",
            "/stacks/%2e%2e/ledger.tsv",
            f"/stacks/{STACK}/..%2F..%2Fledger.tsv",
            "/ledger.tsv",
            "/etc/passwd",
        ):
            with pytest.raises(urllib.error.HTTPError) as err:
                _get(port, path)
            assert err.value.code == 404, path
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium not installed (.ci/run installs it)")
def test_page_shows_frames_as_they_arrive_without_reloading(live_night, tmp_path):
    from playwright.sync_api import sync_playwright

    watch = calibration_only(live_night, tmp_path / "in")
    port = _free_port()
    proc = _start(watch, tmp_path / "out", port)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#connection.on")
            page.evaluate("window.__notReloaded = true")
            bad = lights(live_night)[5]
            for i, f in enumerate(lights(live_night)[:4], start=1):
                tmp = watch / f".{f.name}.part"
                shutil.copy(f, tmp)
                os.rename(tmp, watch / f.name)  # as capture programs do
                page.wait_for_function(
                    f"document.querySelector('[data-stack] .count')?.textContent === '{i}'", timeout=60_000
                )
            _write_variant(bad, watch / "blurred.fits", lambda d: cv2.GaussianBlur(d, (0, 0), 3.0))
            page.wait_for_selector("tr.rejected >> text=blurred", timeout=60_000)
            assert page.evaluate("window.__notReloaded") is True
            img = page.locator("[data-stack] .viewer img")
            page.wait_for_function("document.querySelector('[data-stack] .viewer img').naturalWidth > 0")
            assert img.evaluate("i => i.naturalWidth") == 384
            assert page.locator("[data-stack] .charts svg").count() == 3
            assert page.locator("[data-stack] .frames tbody tr").count() == 5
            assert "0h 08m 00s" in page.locator("[data-stack] .exposure").text_content()
            assert "stacked into" in page.locator("#log").text_content()
            img.hover()
            page.mouse.wheel(0, -400)  # zoom in
            assert "scale(" in img.evaluate("i => i.style.transform")
            browser.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
