# astroflow: a night's folder of raw frames -> calibrated, registered, per-filter integrations
# -> finished images.
#   snakemake --cores N --config data=/path/to/night out=/path/to/results
import os

from snakemake.utils import min_version

min_version("9.0")

# glibc hands every freed block over 32 MB (a 26 MP float32 frame is 104 MB) back to the system
# and faults the pages of the next one in again: ~2 ms per MB on a VM, a third of a calibrate
# job. Jobs (they inherit this environment) keep freed memory for reuse instead; peak memory,
# what jobs are sized by, is unchanged.
os.environ.setdefault(
    "GLIBC_TUNABLES", "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"
)
# numpy's OpenBLAS starts a thread per core in every job, and after each (tiny) matrix product
# they spin, taking CPU from the job beside it; the kernels and OpenCV follow `threads:`
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


# found from the Snakefile, so `snakemake -s /path/to/Snakefile` works from any directory
configfile: f"{workflow.basedir}/config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/calibration.smk"
include: "workflow/rules/lights.smk"
include: "workflow/rules/integration.smk"
include: "workflow/rules/finish.smk"


# seconds of work each: on a cluster they run on the submitting host, not as jobs
localrules:
    all,
    reference,
    frames_table,
    provenance,
    crop_area,
    crop_channel,
    preview,
    frame_plots,


rule all:
    default_target: True
    input:
        all_outputs(),
        [final_files(t, p) for t in PRODUCTS for p in PRODUCTS[t]],


# Snakemake re-evaluates its job-rate limit with 1 s timers that are still pending when the last
# job ends; the process waits for them, adding a second to every run. Nothing is left to
# schedule then, so they are cancelled.
onsuccess:
    finish_run(True)


onerror:
    finish_run(False)
