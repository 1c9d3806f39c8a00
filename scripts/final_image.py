"""Snakemake adapter: one final image (AutoLRGB, AutoRGB, AutoMono or Auto_<palette>)."""

from astroflow.finish import final_image
from astroflow.stages.job import setup_logging

sm = snakemake  # noqa: F821 (injected by Snakemake)
setup_logging(sm.log[0], sm.threads)
final_image(
    sm.wildcards.product,
    sm.params.spec,
    {k: v for k, v in sm.input.items() if k != "catalogue" and not k.startswith("source_")},
    dict(sm.output.items()),
    sm.params.cfg,
    sm.params.history,
    sm.params.sources,
)
