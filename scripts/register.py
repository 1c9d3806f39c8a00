"""Snakemake adapter: register one chunk of calibrated lights onto the target's reference."""

from astroflow.stages.job import setup_logging
from astroflow.stages.register import register

sm = snakemake  # noqa: F821 (injected by Snakemake)
setup_logging(sm.log[0], sm.threads)
register(sm.input.calibrated, list(sm.input.reference), sm.output[0], sm.params.cfg)
