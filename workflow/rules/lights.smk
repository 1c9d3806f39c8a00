# Per-chunk work on lights: calibrate + cosmetic + debayer + measure, one job per chunk of
# frames (`batch_size`), not per frame. Registration needs no job of its own: each integrate job
# chooses the target's reference from the reference filter's measurements and registers its
# filter's lights from their star lists; `reference` records the choice.


rule calibrate:
    input:
        unpack(calibrate_inputs),
    output:
        directory(out("{target}", "calibrated", "{chunk}")),
    log:
        out("{target}", "logs", "calibrate_{chunk}.log"),
    benchmark:
        out("{target}", "benchmarks", "calibrate_{chunk}.tsv")
    conda:
        "../../envs/astroflow.yaml"
    resources:
        mem_mb=lambda wc: job_mem_mb(wc.target, 5),
        runtime=lambda wc: job_runtime(wc.target, len(chunk_rows(wc))),
    params:
        rows=chunk_rows,
        masters_dir=lambda wc: out(wc.target, "masters"),
        cfg=stage_cfg("calibrate"),
        code=stage_code("calibrate"),
    script:
        "../../scripts/calibrate.py"


rule reference:
    input:
        reference_chunks,
    output:
        out("{target}", "reference.json"),
    log:
        out("{target}", "logs", "reference.log"),
    benchmark:
        out("{target}", "benchmarks", "reference.tsv")
    conda:
        "../../envs/astroflow.yaml"
    params:
        cfg=stage_cfg("reference"),
        code=stage_code("reference"),
    script:
        "../../scripts/reference.py"
