"""Snakemake adapter: background model and gradient correction of one channel."""

from astroflow.stages.gradient import gradient
from astroflow.stages.job import setup_logging

sm = snakemake  # noqa: F821 (injected by Snakemake)
setup_logging(sm.log[0], sm.threads)
gradient(sm.input[0], sm.output.image, sm.output.model, sm.params.cfg)
