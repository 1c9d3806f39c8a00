"""Stage ``provenance``: everything needed to make a target's results again.

``OUT/<target>/provenance/`` holds ``config.yaml`` (every option, defaults included, valid as a
``--configfile``; the data and results folders are left to the command line, so a saved setup
runs on another night), ``inputs.tsv`` (every input file, relative to the data folder, with size
and sha256), ``plan.yaml`` (masters, chunks and matching decided from the headers),
``versions.tsv`` (Python, astroflow and libraries, each stage's code hash) and ``command.txt``
(the command that reruns exactly this configuration on the same data).
"""

from __future__ import annotations

import importlib.metadata as md
import platform
from pathlib import Path

from .. import __version__
from ..io import atomic_path
from ..tables import write_tsv

PACKAGES = (
    "numpy",
    "scipy",
    "astropy",
    "numba",
    "astroalign",
    "sep",
    "opencv-python-headless",
    "xisf",
    "tifffile",
    "pandas",
    "pyyaml",
    "snakemake",
)


def relative(value, data_dir: str):
    """``value`` (nested dicts/lists) with paths inside ``data_dir`` made relative to it."""
    prefix = str(Path(data_dir)) + "/"
    if isinstance(value, dict):
        return {k: relative(v, data_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [relative(v, data_dir) for v in value]
    if isinstance(value, str) and value.startswith(prefix):
        return value[len(prefix) :]
    return value


def provenance(cfg: dict, inputs: list[dict], plan: dict, codes: dict, command: str, outputs: dict) -> None:
    """Write the provenance files (module doc) to ``outputs`` (config, inputs, plan, versions,
    command); ``cfg`` is every option but the data and results folders; ``inputs`` rows carry path (relative), type, size, sha256; ``codes`` maps each
    stage to its code hash."""
    import yaml

    with atomic_path(outputs["config"]) as tmp:
        tmp.write_text(
            "# astroflow's effective configuration of this run (defaults included).\n"
            f"# Rerun: see command.txt\n{yaml.safe_dump(cfg, sort_keys=False, width=110)}"
        )
    with atomic_path(outputs["plan"]) as tmp:
        tmp.write_text(yaml.safe_dump(plan, sort_keys=False, width=110))
    write_tsv(inputs, Path(outputs["inputs"]))
    rows = [("python", platform.python_version()), ("astroflow", __version__)]
    for pkg in PACKAGES:
        try:
            rows.append((pkg, md.version(pkg)))
        except md.PackageNotFoundError:
            rows.append((pkg, "not installed"))
    rows += [(f"code:{stage}", digest) for stage, digest in codes.items()]
    write_tsv([{"package": p, "version": v} for p, v in rows], Path(outputs["versions"]))
    with atomic_path(outputs["command"]) as tmp:
        tmp.write_text(
            "# Reruns exactly this configuration on the same data (from the astroflow folder,\n"
            "# or add -s /path/to/astroflow/Snakefile); change data= to reuse it on another night.\n"
            f"{command}\n"
        )
