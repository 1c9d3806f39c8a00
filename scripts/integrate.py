"""Snakemake adapter: integrate the registered frames of one filter."""

from astroflow.pipeline import integrate_filter, setup_logging

sm = snakemake  # noqa: F821 (injected by Snakemake)
setup_logging(sm.log[0], sm.threads)
integrate_filter(
    list(sm.input), sm.wildcards.filter, dict(sm.output.items()), sm.params.cfg, sm.params.history
)
