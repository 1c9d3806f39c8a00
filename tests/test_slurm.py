"""The cluster path: a small night through `--profile profiles/slurm` on a real single-node SLURM
cluster (tests/slurm/cluster.sh), against the local run of the same night, byte for byte."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from conftest import ROOT, SNAKEMAKE, result_hashes, run_snakemake

from astroflow.synth import NightSpec, make_night

CLUSTER = ROOT / "tests/slurm/cluster.sh"
NEEDS = ("slurmctld", "slurmd", "slurmdbd", "munged", "mariadbd")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(d) or os.path.exists(f"/usr/sbin/{d}") for d in NEEDS),
    reason="needs root and Debian's slurmctld slurmd slurmdbd munge mariadb-server (.ci/run installs them)",
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("slurm")
    start = subprocess.run(["bash", str(CLUSTER), "start", str(prefix)], capture_output=True, text=True)
    try:
        assert start.returncode == 0, start.stderr[-3000:]
        yield start.stdout.strip().splitlines()[-1]  # the folder of the Slurm command wrappers
    finally:
        subprocess.run(["bash", str(CLUSTER), "stop", str(prefix)], capture_output=True)


def test_a_night_runs_on_slurm_and_equals_the_local_run(cluster, tmp_path):
    night = tmp_path / "night"
    make_night(night, NightSpec(filters=("L",), frames=6, width=256, height=256, seed=21))
    run_snakemake(night, tmp_path / "local")
    env = {**os.environ, "PATH": f"{cluster}:{os.environ['PATH']}", "PYTHONWARNINGS": "ignore"}
    cmd = [
        "timeout", "-s", "INT", "900",  # the plugin ignores SIGTERM (reference/slurm.md)
        SNAKEMAKE, "--profile", "profiles/slurm", "--config", f"data={night}", f"out={tmp_path / 'slurm'}",
        "--default-resources", "slurm_partition=debug",
        "--set-threads", "integrate=2",  # the test node has 2 CPUs
        "--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "2",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # the jobs ran on the cluster: sacct lists them, completed, with the rules' names
    sacct = subprocess.run(
        [f"{cluster}/sacct", "-a", "-X", "-n", "-P", "-o", "JobID,Comment,State"],
        capture_output=True,
        text=True,
    )
    rows = [line.split("|") for line in sacct.stdout.splitlines() if line]
    assert rows and all(state == "COMPLETED" for _, _, state in rows), sacct.stdout
    rules = {comment.split("_")[1] for _, comment, _ in rows if comment.startswith("rule_")}
    assert {"master", "calibrate", "integrate", "gradient", "final"} <= rules, rules
    local, slurm = result_hashes(tmp_path / "local/NGC_7000"), result_hashes(tmp_path / "slurm/NGC_7000")
    assert local.keys() == slurm.keys() and len(local) > 30
    assert [k for k in local if local[k] != slurm[k]] == []
