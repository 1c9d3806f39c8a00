"""Snakemake adapter: a stretched PNG of one integration, for the report."""

from astroflow.stages.job import setup_logging
from astroflow.stages.report import preview

sm = snakemake  # noqa: F821 (injected by Snakemake)
setup_logging(sm.log[0], sm.threads)
preview(sm.input[0], sm.output[0])
