"""Snakemake adapter: choose the registration reference of a target."""

from astroflow.pipeline import choose_reference, setup_logging

sm = snakemake  # noqa: F821 (injected by Snakemake)
setup_logging(sm.log[0], sm.threads)
choose_reference(list(sm.input), sm.output[0])
