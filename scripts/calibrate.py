"""Snakemake adapter: calibrate, correct, debayer and measure one chunk of lights."""

from astroflow.pipeline import calibrate_chunk, setup_logging

sm = snakemake  # noqa: F821 (injected by Snakemake)
setup_logging(sm.log[0], sm.threads)
calibrate_chunk(sm.params.rows, sm.params.masters_dir, sm.output[0], sm.params.cfg)
