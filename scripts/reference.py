"""Snakemake adapter: record the registration reference of a target (reference.json)."""

from astroflow.pipeline import setup_logging, write_reference

sm = snakemake  # noqa: F821 (injected by Snakemake)
setup_logging(sm.log[0], sm.threads)
write_reference(list(sm.input), sm.output[0])
