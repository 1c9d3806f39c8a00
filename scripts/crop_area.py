"""Snakemake adapter: the common-area rectangle of a target's integrations."""

from astroflow.stages.crop import crop_area
from astroflow.stages.job import setup_logging

sm = snakemake  # noqa: F821 (injected by Snakemake)
setup_logging(sm.log[0], sm.threads)
crop_area(list(sm.input), sm.output[0], sm.params.cfg)
