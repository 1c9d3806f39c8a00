"""What every job does the same way: its log and thread budget, frame names, TSV tables."""

from __future__ import annotations

import atexit
import gc
import logging
import os
import sys
from pathlib import Path

from ..io import atomic_path


def setup_logging(path: str | Path, threads: int = 1) -> None:
    """Send the library's log (and warnings) to a job's log file, keep OpenCV's, the compiled
    kernels' and numba's (RCD's) thread pools to the job's ``threads`` (Snakemake's budget), and
    spare the job's exit a garbage collection of its libraries; used by the Snakemake scripts
    after their imports."""
    import cv2

    threads = max(1, int(threads))
    cv2.setNumThreads(threads)
    # read when astroflow.kernels and numba are imported (importing them here would make every
    # stage's code hash depend on the kernels)
    os.environ["ASTROFLOW_THREADS"] = os.environ["NUMBA_NUM_THREADS"] = str(threads)
    if "astroflow.kernels" in sys.modules:
        sys.modules["astroflow.kernels"].set_threads(threads)
    if "numba" in sys.modules:  # already imported: the variable came too late
        numba = sys.modules["numba"]
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        filename=str(path), level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True
    )
    logging.captureWarnings(True)
    default_hook = sys.excepthook

    def log_failure(kind, value, tb):  # the job's log says why it failed, not only Snakemake's
        logging.getLogger("astroflow").error("job failed", exc_info=(kind, value, tb))
        default_hook(kind, value, tb)

    sys.excepthook = log_failure
    # Python's last garbage collections at exit walk every object the libraries made (astropy's
    # units, numba's registries where RCD ran): ~0.3 s a job on a VM, for memory the system frees anyway.
    # Frozen objects are skipped, by those and by the job's own collections.
    gc.freeze()
    atexit.register(gc.freeze)


def stem(path: str) -> str:
    name = Path(path).name
    for suffix in (".fits.fz", ".fit.fz", ".fits", ".fit", ".fts", ".xisf", ".fz"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def write_frame(df, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False)
