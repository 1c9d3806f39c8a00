"""Snakemake adapter: write frames.tsv, the record of every input file and what became of it."""

import pandas as pd

from astroflow.stages.frames_table import frames_table
from astroflow.stages.job import setup_logging

sm = snakemake  # noqa: F821 (injected by Snakemake)
setup_logging(sm.log[0], sm.threads)
classified = pd.DataFrame(sm.params.table)
reference = sm.input.reference if "reference" in sm.input.keys() else None
frames_table(
    classified,
    list(sm.input.calibrated),
    list(sm.input.reference_chunks),
    reference,
    sm.params.data,
    sm.output[0],
    sm.params.cfg,
)
