"""End-to-end: run `snakemake` through its CLI on generated nights and check against the truth."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from conftest import result_hashes, run_snakemake

from astroflow.quality import score
from astroflow.register import parse_matrix
from astroflow.stages.register import registered_image
from astroflow.synth import load_truth

pytestmark = pytest.mark.pipeline


def _affine(m):
    return np.vstack([np.asarray(m, float), [0, 0, 1]])


def registration_errors(frames: pd.DataFrame, truth: dict, shape) -> dict:
    """RMS error (px) over the image of each registered frame's reference->frame transform."""
    by_file = {Path(f["file"]).name: f for f in truth["frames"]}
    ref = frames[frames["reference"]].iloc[0]
    m_ref = _affine(by_file[Path(ref["path"]).name]["sky_to_frame"])
    h, w = shape
    yy, xx = np.mgrid[0:h:32, 0:w:32]
    grid = np.column_stack([xx.ravel(), yy.ravel(), np.ones(xx.size)])
    errors = {}
    for _, row in frames[frames["type"].eq("light") & frames["accepted"]].iterrows():
        est = parse_matrix(row["matrix"])
        true = (_affine(by_file[Path(row["path"]).name]["sky_to_frame"]) @ np.linalg.inv(m_ref))[:2]
        d = grid @ est.T - grid @ true.T
        errors[Path(row["path"]).name] = float(np.sqrt(np.mean(np.sum(d**2, axis=1))))
    return errors


def _frames(out, target="NGC_7000"):
    return pd.read_csv(Path(out) / target / "frames.tsv", sep="\t")


def test_mono_night_every_file_classified_and_registered(mono_night, mono_run):
    out, _ = mono_run
    frames = _frames(out)
    kinds = frames["path"].map(lambda p: Path(p).parts[0])  # paths relative to the data folder
    expected = {"lights": "light", "darks": "dark", "flats": "flat", "bias": "bias"}
    assert (frames["type"] == kinds.map(expected)).all()
    lights = frames[frames["type"] == "light"]
    assert len(lights) == 12 and lights["accepted"].all() and (lights["filter"] == "L").all()
    assert (lights["dark"] == "AutoMasterDark_120s").all() and (lights["flat"] == "AutoMasterFlat_L").all()
    errors = registration_errors(frames, load_truth(mono_night), (512, 512))
    assert max(errors.values()) < 0.1, errors


def test_registered_lights_are_written_on_request(mono_run, tmp_path):
    """Runs integrate without writing registered frames; `astroflow registered` writes one on
    the reference grid, with the run's transform: it lines up with the stack, the raw frame not."""
    out, _ = mono_run
    exe = str(Path(sys.executable).with_name("astroflow"))
    proc = subprocess.run(
        [exe, "registered", str(out / "NGC_7000"), "_0003.fits", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    [path] = tmp_path.glob("*_0003_r.fits")
    image, header = fits.getdata(path, header=True)
    stack = fits.getdata(out / "NGC_7000/integration/Integration_L.fits")
    calibrated = fits.getdata(next((out / "NGC_7000/calibrated").glob("*/*_0003_c.fits")))
    ok = np.isfinite(image)

    def corr(a):
        return np.corrcoef(a[ok], stack[ok])[0, 1]

    assert image.shape == stack.shape and "registered to" in str(header["HISTORY"])
    assert header["SSWEIGHT"] > 0
    assert corr(image) > 0.9 > corr(calibrated) + 0.2
    missing = subprocess.run(
        [exe, "registered", str(out / "NGC_7000"), "nope.fits"], capture_output=True, text=True
    )
    assert missing.returncode == 2 and "no registered light 'nope.fits'" in missing.stderr


def test_mono_night_stack_quality_against_truth(mono_night, mono_run):
    out, _ = mono_run
    truth = load_truth(mono_night)
    stack = fits.getdata(out / "NGC_7000/integration/Integration_L.fits")
    single = registered_image(out / "NGC_7000", "_0001.fits")[0]
    s = score(stack, truth, "L", single=single)
    n = 12
    assert s["noise_gain"] > 0.9 * np.sqrt(n), s
    assert s["fwhm_ratio"] < 1.1, s
    assert s["ellipticity"] < 0.05, s
    assert abs(s["trail_residual"]) < 0.05, s  # satellite trails rejected
    assert abs(s["cosmic_residual"]) < 0.05, s
    assert abs(s["hot_residual"]) < 0.05, s
    assert s["flatness"] < 0.002, s  # vignetting and dust donuts calibrated away
    assert s["completeness"] > s["single_completeness"]


def test_mono_night_products_and_headers(mono_night, mono_run):
    out, _ = mono_run
    integ = out / "NGC_7000/integration"
    h = fits.getheader(integ / "Integration_L.fits")
    assert h["NCOMBINE"] == 12 and h["EXPTOTAL"] == 12 * 120.0 and h["REJECT"] == "sigma"
    assert h["IMAGETYP"] == "Master light" and 2.5 < h["FWHMMED"] < 4.0
    assert "Using default processing options" in str(h["HISTORY"])
    # the trail pixels appear in the high rejection map
    truth = load_truth(mono_night)
    assert any(f["trail"] for f in truth["frames"])
    assert fits.getdata(integ / "Integration_L_rejection_high.fits").max() > 0
    # the master dark's defect map holds the truly hot pixels
    bpm = fits.getdata(out / "NGC_7000/masters/AutoMasterDark_120s.fits", "DEFECTS")
    hot = np.load(mono_night / "truth/hot_pixels.npy") & (
        np.load(mono_night / "truth/dark_current.npy") * 120 > 100
    )
    assert (bpm[hot] == 1).mean() > 0.9
    for name in ("AutoMasterBias", "AutoMasterDark_120s", "AutoMasterFlat_L"):
        assert (out / f"NGC_7000/masters/{name}.fits").exists()
    assert "integration:" in (out / "NGC_7000/provenance/config.yaml").read_text()
    # the finished mono image: sky at the target background, under 0.1 % of it clipped
    from astroflow.stars import star_mask

    final = fits.getdata(out / "NGC_7000/final/AutoMono/AutoMono.fits")
    sky = star_mask(final, size=2.0) < 0.05
    assert abs(np.median(final[sky]) - 0.25) < 0.01
    assert ((final <= 0) | (final >= 1))[sky].mean() < 0.001


def test_rerun_does_nothing(mono_night, mono_run):
    out, _ = mono_run
    proc = run_snakemake(mono_night, out)
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_narrowband_with_few_stars_registers_every_frame(nb_night, tmp_path):
    run_snakemake(nb_night, tmp_path)
    frames = _frames(tmp_path)
    lights = frames[frames["type"] == "light"]
    assert len(lights) == 16
    assert lights["stars"].median() < 25  # the point of this night: few stars
    assert lights["accepted"].mean() >= 0.75, lights[["path", "reason"]]  # Siril: 1 of 10
    assert lights.loc[~lights["accepted"], "reason"].str.contains("cannot register").all()
    errors = registration_errors(frames, load_truth(nb_night), (384, 384))
    assert np.median(list(errors.values())) < 0.15, errors
    for f in ("H", "O"):
        assert fits.getheader(tmp_path / f"NGC_7000/integration/Integration_{f}.fits")["NCOMBINE"] >= 5
    # byte-identical results whatever --cores and wherever they are written
    run_snakemake(nb_night, tmp_path / "one", cores=1)
    a, b = result_hashes(tmp_path / "NGC_7000"), result_hashes(tmp_path / "one/NGC_7000")
    assert a.keys() == b.keys() and len(a) > 40
    assert [k for k in a if a[k] != b[k]] == []
    # created with the user's umask (not mkstemp's 0600)
    umask = os.umask(0)
    os.umask(umask)
    mode = (tmp_path / "NGC_7000/integration/Integration_H.fits").stat().st_mode & 0o777
    assert mode == 0o666 & ~umask


def _only_the_worst_seeing_rejected(lights: pd.DataFrame, truth: dict) -> None:
    """Every light is accepted but, at most, the night's worst-seeing one (3.5 px among 2.7-3.2 px
    on the OSC night), which subframe selection rejects as a two-sigma FWHM outlier, as
    AutoIntegrate does."""
    seeing = {Path(f["file"]).name: f["fwhm"] for f in truth["frames"]}
    worst = max(seeing, key=seeing.get)
    rejected = lights[~lights["accepted"]]
    assert len(rejected) <= 1, rejected["reason"].tolist()
    for _, r in rejected.iterrows():
        assert Path(r["path"]).stem == Path(worst).stem and "FWHM" in r["reason"], r["reason"]


def test_osc_night_debayered_registered_and_colour_preserved(osc_night, tmp_path):
    run_snakemake(osc_night, tmp_path)
    frames = _frames(tmp_path)
    lights = frames[frames["type"] == "light"]
    assert (lights["filter"] == "RGB").all() and (lights["bayer"] == "RGGB").all()
    truth = load_truth(osc_night)
    _only_the_worst_seeing_rejected(lights, truth)
    stack = fits.getdata(tmp_path / "NGC_7000/integration/Integration_RGB.fits")
    assert stack.shape == (3, 320, 448)
    errors = registration_errors(frames, truth, (320, 448))
    assert np.median(list(errors.values())) < 0.1 and max(errors.values()) < 0.25, errors
    # star colours: measured R/B flux ratio follows the truth colour
    import sep

    from astroflow.quality import sky_to_image

    lum = stack.mean(axis=0)
    m = sky_to_image(lum, truth, "G")
    st = truth["stars"]
    xy = np.column_stack([st["x"], st["y"]]) @ m[:, :2].T + m[:, 2]
    sel = (st["G"] * 120 > 800) & (xy[:, 0] > 15) & (xy[:, 0] < 433) & (xy[:, 1] > 15) & (xy[:, 1] < 305)
    fr = [
        sep.sum_circle(np.ascontiguousarray(p - np.median(p)), xy[sel, 0], xy[sel, 1], 6.0)[0] for p in stack
    ]
    error = np.log(np.asarray(fr[0]) / np.asarray(fr[2])) - np.log(st["R"][sel] / st["B"][sel])
    # the bright stars' colours exact; the faint ones' (800-2000 e-) within their photon noise
    # (|error| ~0.1 for any demosaic; a grey or R/B-swapped image is off by ~0.3 at the median)
    bright = st["G"][sel] * 120 > 1e5
    assert sel.sum() >= 5 and bright.sum() >= 2, sel.sum()
    assert np.abs(error[bright]).max() < 0.05 and np.median(np.abs(error)) < 0.12, error

    # the finished OSC image: background neutral within 1 %, at the target, under 0.1 % clipped
    from astroflow.stars import star_mask

    final = fits.getdata(tmp_path / "NGC_7000/final/AutoRGB/AutoRGB.fits")
    sky = star_mask(final, size=2.0) < 0.05
    bg = np.array([np.median(p[sky]) for p in final])
    assert (bg.max() - bg.min()) / bg.mean() < 0.01 and np.allclose(bg, 0.25, atol=0.01), bg
    assert max(((p <= 0) | (p >= 1))[sky].mean() for p in final) < 0.001


def _hashes(folder):
    return {
        p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(folder).rglob("*")) if p.is_file()
    }


def test_bad_input_is_reported_and_the_night_still_processed(mono_night, tmp_path, copy_night):
    night = copy_night(mono_night, tmp_path / "night")
    lights = sorted((night / "lights/L").glob("*.fits"))
    good = lights[0].read_bytes()
    (night / "lights/L/truncated.fits").write_bytes(good[: len(good) // 3])
    (night / "lights/L/notes.fits").write_text("observing log, not an image")
    data, header = fits.getdata(lights[1]), fits.getheader(lights[1])
    fits.PrimaryHDU(data[:256, :256], header).writeto(night / "lights/L/cropped.fits")
    nan = data.astype(np.float32)
    nan[100:140, :] = np.nan
    fits.PrimaryHDU(nan, header).writeto(night / "lights/L/with_nans.fits")
    blank = np.random.default_rng(0).normal(1000, 25, data.shape).astype(np.uint16)
    fits.PrimaryHDU(blank, header).writeto(night / "lights/L/clouds.fits")
    noexp = header.copy()
    del noexp["EXPTIME"]
    fits.PrimaryHDU(data, noexp).writeto(night / "lights/L/no_exptime.fits")
    for i, src in enumerate(lights[2:4]):  # a filter with only two frames
        h = fits.getheader(src)
        h["FILTER"] = "Red"
        fits.PrimaryHDU(fits.getdata(src), h).writeto(night / f"lights/red_{i}.fits")
    # as fpack writes it (the image in extension 1), and a frame with one unparsable card
    fits.HDUList(
        [fits.PrimaryHDU(), fits.CompImageHDU(fits.getdata(lights[4]), fits.getheader(lights[4]))]
    ).writeto(night / "lights/L/compressed.fits.fz")
    lights[4].unlink()
    raw = bytearray(lights[5].read_bytes())
    at = raw.find(b"GAIN    =")
    raw[at : at + 80] = b"GAIN    =                  1O0 / a typo".ljust(80)
    lights[5].write_bytes(bytes(raw))
    before = _hashes(night)

    out = tmp_path / "out"
    run_snakemake(night, out)
    frames = _frames(out).set_index(_frames(out)["path"].map(lambda p: Path(p).name))
    expected = {
        "truncated.fits": "truncated",
        "notes.fits": "not a readable",
        "cropped.fits": "differs",
        "clouds.fits": "cannot register",
        "no_exptime.fits": "EXPTIME",
    }
    for name, why in expected.items():
        assert not frames.loc[name, "accepted"], name
        assert why in frames.loc[name, "reason"], (name, frames.loc[name, "reason"])
    assert frames.loc["with_nans.fits", "accepted"]
    assert frames.loc["compressed.fits.fz", "accepted"] and frames.loc[lights[5].name, "accepted"]
    assert fits.getheader(out / "NGC_7000/integration/Integration_L.fits")["NCOMBINE"] == 13
    assert fits.getheader(out / "NGC_7000/integration/Integration_R.fits")["NCOMBINE"] == 2
    assert _hashes(night) == before  # inputs are never written to


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = run_snakemake(tmp_path / "empty", tmp_path / "out", check=False)
    assert proc.returncode != 0
    assert "no usable light frames" in proc.stdout + proc.stderr


def test_every_input_file_is_in_frames_tsv_whatever_fails(mono_night, tmp_path, copy_night):
    """A target with no light to register fails at the reference step (no crash there, its
    integration names it), and a target whose only light is unreadable has no plan at all: the
    good target is still finished, and every file of the folder is in a frames.tsv with the
    reason."""
    night = copy_night(mono_night, tmp_path / "night")
    header = fits.getheader(sorted((night / "lights/L").glob("*.fits"))[0])
    for i in range(3):  # a camera test: flat images (no stars), another gain (no darks)
        h = header.copy()
        h["OBJECT"], h["GAIN"] = "Dome", 999
        fits.PrimaryHDU(np.full((512, 512), 1500, np.uint16), h).writeto(night / f"lights/dome_{i}.fits")
    h = header.copy()
    h["OBJECT"] = "M 31"
    fits.PrimaryHDU(np.zeros((512, 512), np.uint16), h).writeto(night / "lights/m31.fits")
    raw = (night / "lights/m31.fits").read_bytes()
    (night / "lights/m31.fits").write_bytes(raw[: len(raw) // 2])
    out = tmp_path / "out"
    proc = run_snakemake(night, out, check=False)
    assert proc.returncode != 0 and "Dome" in proc.stderr  # the failing target is named ...
    assert (out / "NGC_7000/final/AutoMono/AutoMono.fits").exists()  # ... and costs the other nothing
    dome = _frames(out, "Dome").set_index("path")
    for i in range(3):
        row = dome.loc[f"lights/dome_{i}.fits"]
        assert not row["accepted"] and "no registration reference" in row["reason"]
    good = _frames(out).set_index("path")
    assert "truncated" in good.loc["lights/m31.fits", "reason"]  # its target has no plan
    listed = set(good.index) | set(dome.index)
    every = {p.relative_to(night).as_posix() for p in night.rglob("*.fits") if "truth" not in p.parts}
    assert every <= listed


def test_subframe_selection_drops_defocused_clouded_and_trailed_lights(mono_night, tmp_path, copy_night):
    import cv2

    night = copy_night(mono_night, tmp_path / "night")
    src = sorted((night / "lights/L").glob("*.fits"))[3]
    data, header = fits.getdata(src).astype(np.float32), fits.getheader(src)
    sky = float(np.median(data))
    noise = 1.4826 * float(np.median(np.abs(data - sky)))
    line = np.full((1, 15), 1 / 15, np.float32)
    variants = {
        "defocused.fits": cv2.GaussianBlur(data, (0, 0), 3.0),
        "clouds.fits": sky + (data - sky) * 0.1 + np.random.default_rng(2).normal(0, noise, data.shape),
        "trailed.fits": cv2.filter2D(data, -1, line),
    }
    for name, img in variants.items():
        fits.PrimaryHDU(np.clip(img, 0, 65535).astype(np.uint16), header).writeto(night / "lights/L" / name)
    out = tmp_path / "out"
    run_snakemake(night, out, "--until", "frames_table")
    frames = _frames(out).set_index(_frames(out)["path"].map(lambda p: Path(p).name))
    lights = frames[frames["type"] == "light"]
    assert "FWHM" in lights.loc["defocused.fits", "reason"]
    assert "star count" in lights.loc["clouds.fits", "reason"]
    assert "subframe selection" in lights.loc["trailed.fits", "reason"]
    good = lights.drop(index=list(variants))
    assert good["accepted"].all() and (good["ssweight"] > 0).all()
    assert (
        good.loc[good["reference"]].index[0] == good["ssweight"].idxmax()
    )  # the best weight is the reference


def test_dslr_raw_night_goes_through_the_osc_path(osc_night, tmp_path):
    """The OSC night as a DSLR writes it (raw DNG files, no IMAGETYP: the folders say what each
    is): every light calibrated with raw masters, debayered and integrated (all but the worst
    seeing, as from FITS)."""
    from conftest import write_dng

    night = tmp_path / "night"
    for f in sorted(osc_night.rglob("*.fits")):
        if "truth" in f.parts:
            continue
        h = fits.getheader(f)
        when = h["DATE-OBS"][:19].replace("-", ":", 2).replace("T", " ")
        write_dng(
            night / f.relative_to(osc_night).with_suffix(".dng"), fits.getdata(f), h["EXPTIME"], when=when
        )
    out = tmp_path / "out"
    run_snakemake(night, out, "--until", "integrate", "frames_table")
    target = next(p for p in out.iterdir() if (p / "frames.tsv").exists())
    frames = pd.read_csv(target / "frames.tsv", sep="\t")
    lights = frames[frames["type"] == "light"]
    assert len(lights) == 8 and (lights["bayer"] == "RGGB").all()
    _only_the_worst_seeing_rejected(lights, load_truth(osc_night))
    assert lights["dark"].notna().all() and lights["flat"].notna().all()
    assert (frames["path"].str.endswith(".dng")).all()
    assert fits.getdata(target / "integration/Integration_RGB.fits").shape == (3, 320, 448)


def test_lights_registered_in_forked_workers_give_the_same_rows(mono_run, monkeypatch):
    """register_lights on two processes (integration's threads) returns what one gives."""
    import yaml

    from astroflow.stages import register

    out, _ = mono_run
    target = out / "NGC_7000"
    cfg = yaml.safe_load((target / "provenance" / "config.yaml").read_text())
    dirs = sorted(str(p) for p in (target / "calibrated").glob("L_*"))
    one, ref = register.register_lights(dirs, dirs, cfg)
    monkeypatch.setattr(register, "PARALLEL_FRAMES", 2)
    two, ref2 = register.register_lights(dirs, dirs, cfg, workers=2)
    assert two == one and ref2 == ref and sum(r["reg_status"] == "ok" for r in one) >= 10
