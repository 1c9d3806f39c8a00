"""Snakemake adapter: calibrate, correct, debayer and measure one chunk of lights."""

from astroflow.stages.calibrate import calibrate
from astroflow.stages.job import setup_logging

sm = snakemake  # noqa: F821 (injected by Snakemake)
setup_logging(sm.log[0], sm.threads)
calibrate(sm.params.rows, sm.params.masters_dir, sm.output[0], sm.params.cfg)
