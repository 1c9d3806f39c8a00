"""Snakemake adapter: crop one integration to the target's common area."""

from astroflow.stages.crop import crop_channel
from astroflow.stages.job import setup_logging

sm = snakemake  # noqa: F821 (injected by Snakemake)
setup_logging(sm.log[0], sm.threads)
crop_channel(sm.input.image, sm.input.info, sm.output[0])
