"""Snakemake adapter: archive what a target's results came from (provenance/)."""

from astroflow.stages.job import setup_logging
from astroflow.stages.provenance import provenance

sm = snakemake  # noqa: F821 (injected by Snakemake)
setup_logging(sm.log[0], sm.threads)
provenance(
    sm.params.cfg,
    sm.params.inputs,
    sm.params.plan,
    sm.params.codes,
    sm.params.command,
    dict(sm.output.items()),
)
