# astroflow: a night's folder of raw frames -> calibrated, registered, per-filter integrations
# -> finished images.
#   snakemake --cores N --config data=/path/to/night out=/path/to/results
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/calibration.smk"
include: "workflow/rules/lights.smk"
include: "workflow/rules/integration.smk"
include: "workflow/rules/finish.smk"


rule all:
    default_target: True
    input:
        all_outputs(),
        [final_files(t, p) for t in PRODUCTS for p in PRODUCTS[t]],
