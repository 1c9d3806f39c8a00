"""Snakemake adapter: bad-pixel map of one filter from its master dark and flat."""

from astroflow.pipeline import bad_pixel_map, setup_logging

sm = snakemake  # noqa: F821 (injected by Snakemake)
setup_logging(sm.log[0], sm.threads)
bad_pixel_map(sm.input.get("dark"), sm.input.get("flat"), sm.output[0], sm.params.cfg, sm.params.cfa)
