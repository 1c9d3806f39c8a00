"""Snakemake adapter: integrate the registered frames of one filter."""

from astroflow.stages.integrate import integrate
from astroflow.stages.job import setup_logging

sm = snakemake  # noqa: F821 (injected by Snakemake)
setup_logging(sm.log[0], sm.threads)
integrate(
    list(sm.input),
    sm.wildcards.filter,
    dict(sm.output.items()),
    sm.params.cfg,
    sm.params.history,
    sm.resources.band_mb,
)
