"""Snakemake adapter: record the registration reference of a target (reference.json)."""

from astroflow.stages.job import setup_logging
from astroflow.stages.register import reference

sm = snakemake  # noqa: F821 (injected by Snakemake)
setup_logging(sm.log[0], sm.threads)
reference(list(sm.input), sm.output[0], sm.params.cfg)
