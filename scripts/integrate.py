"""Snakemake adapter: register and integrate the lights of one filter (or adopt its stack made
elsewhere)."""

from astroflow.stages.integrate import adopt, integrate
from astroflow.stages.job import setup_logging

sm = snakemake  # noqa: F821 (injected by Snakemake)
setup_logging(sm.log[0], sm.threads)
if "external" in sm.input.keys():
    adopt(sm.input.external, sm.wildcards.filter, dict(sm.output.items()), sm.params.history)
else:
    integrate(
        list(sm.input.calibrated),
        list(sm.input.reference),
        sm.wildcards.filter,
        dict(sm.output.items()),
        sm.params.cfg,
        sm.params.history,
        sm.resources.band_mb,
    )
