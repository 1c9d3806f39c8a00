"""Snakemake adapter: register one chunk of calibrated lights onto the target's reference."""

from astroflow.pipeline import register_chunk, setup_logging

sm = snakemake  # noqa: F821 (injected by Snakemake)
setup_logging(sm.log[0], sm.threads)
register_chunk(sm.input.calibrated, list(sm.input.all_calibrated), sm.output[0], sm.params.cfg)
