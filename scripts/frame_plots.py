"""Snakemake adapter: the per-frame metric plots of a target, for the report."""

from astroflow.stages.job import setup_logging
from astroflow.stages.report import frame_plots

sm = snakemake  # noqa: F821 (injected by Snakemake)
setup_logging(sm.log[0], sm.threads)
frame_plots(sm.input[0], sm.output[0])
