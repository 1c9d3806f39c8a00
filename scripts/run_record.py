"""Snakemake adapter: archive the effective config, the plan and the software versions."""

from astroflow.pipeline import run_record, setup_logging

sm = snakemake  # noqa: F821 (injected by Snakemake)
setup_logging(sm.log[0], sm.threads)
run_record(sm.params.cfg, sm.params.plan, sm.params.code, sm.output.config, sm.output.versions)
