"""Shared fixtures: generated nights (with truth) and a Snakemake runner that uses the real CLI."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from astroflow.synth import NightSpec, make_night

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
# Debian's headless Chromium for Playwright (.ci/run installs it); no network but this machine
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1",
]


def run_snakemake(data, out, *extra, cores=2, check=True):
    """Run the workflow through the CLI, as a user would; returns the CompletedProcess."""
    cmd = [SNAKEMAKE, "--cores", str(cores), "--config", f"data={data}", f"out={out}", *extra]
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


def result_hashes(target):
    """sha256 of every result file of a target folder (logs, timings and the rerun command,
    which names the results folder, left out): equal for runs that must be byte-identical."""
    skip = ("logs", "benchmarks")
    return {
        p.relative_to(target).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(target).rglob("*"))
        if p.is_file() and p.relative_to(target).parts[0] not in skip and p.name != "command.txt"
    }


def _night(factory, name, spec):
    path = factory.mktemp(name)
    make_night(path, spec)
    return path


@pytest.fixture(scope="session")
def mono_night(tmp_path_factory):
    """12 L lights of 512x512 with two satellite trails, cosmic rays, hot pixels, dust, vignetting."""
    return _night(
        tmp_path_factory, "mono", NightSpec(filters=("L",), frames=12, width=512, height=512, seed=11)
    )


@pytest.fixture(scope="session")
def mono_run(mono_night, tmp_path_factory):
    out = tmp_path_factory.mktemp("mono_out")
    proc = run_snakemake(mono_night, out)
    return out, proc


@pytest.fixture(scope="session")
def nb_night(tmp_path_factory):
    """Narrowband H + O lights with only a handful of stars each, and nebulosity."""
    return _night(
        tmp_path_factory, "nb", NightSpec(filters=("H", "O"), frames=8, width=384, height=384, seed=3)
    )


@pytest.fixture(scope="session")
def osc_night(tmp_path_factory):
    return _night(tmp_path_factory, "osc", NightSpec(osc=True, frames=8, width=448, height=320, seed=4))


def write_dng(path, cfa, exposure: float, iso: int = 800, when="2026:11:20 21:30:00", black=0, white=65535):
    """A CFA DNG as a camera writes it (RGGB, 16-bit, uncompressed), which LibRaw reads: the
    tests' stand-in for CR2/NEF/ARW files."""
    import tifffile

    num, den = (int(round(exposure * 1000)), 1000) if exposure else (0, 1)
    tags = [
        (33421, "H", 2, (2, 2), True),  # CFARepeatPatternDim
        (33422, "B", 4, (0, 1, 1, 2), True),  # CFAPattern: R G / G B
        (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
        (50707, "B", 4, (1, 1, 0, 0), True),  # DNGBackwardVersion
        (50708, "s", 0, "astroflow test camera", True),  # UniqueCameraModel
        (50714, "H", 1, (black,), True),  # BlackLevel
        (50717, "H", 1, (white,), True),  # WhiteLevel
        (50721, "2i", 9, (1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1), True),  # ColorMatrix1
        (50778, "H", 1, (21,), True),  # CalibrationIlluminant1: D65
        (33434, "2I", 1, (num, den), True),  # ExposureTime
        (34855, "H", 1, (iso,), True),  # ISOSpeedRatings
        (306, "s", 0, when, True),  # DateTime
    ]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(
        path, np.asarray(cfa, np.uint16), photometric=32803, subfiletype=0, extratags=tags, metadata=None
    )


@pytest.fixture
def copy_night():
    def _copy(src, dst):
        shutil.copytree(src, dst)
        return Path(dst)

    return _copy
