"""Snakemake adapter: write frames.tsv, the record of every input file and what became of it."""

import pandas as pd

from astroflow.pipeline import frame_table, setup_logging

sm = snakemake  # noqa: F821 (injected by Snakemake)
setup_logging(sm.log[0], sm.threads)
classified = pd.DataFrame(sm.params.table).set_index("index")
frame_table(classified, list(sm.input.registered), sm.input.reference, sm.output[0])
