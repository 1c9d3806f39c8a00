"""Snakemake adapter: build one master calibration frame."""

from astroflow.pipeline import build_master, setup_logging

sm = snakemake  # noqa: F821 (injected by Snakemake)
setup_logging(sm.log[0], sm.threads)
build_master(sm.wildcards.name, sm.params.spec, sm.params.deps, sm.output[0], sm.params.cfg)
