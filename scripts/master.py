"""Snakemake adapter: build one master calibration frame."""

from astroflow.stages.job import setup_logging
from astroflow.stages.master import master

sm = snakemake  # noqa: F821 (injected by Snakemake)
setup_logging(sm.log[0], sm.threads)
master(sm.wildcards.name, sm.params.spec, sm.params.deps, sm.output[0], sm.params.cfg, sm.resources.band_mb)
