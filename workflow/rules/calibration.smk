# Master calibration frames; master darks and flats carry their defect maps (DEFECTS extension).


rule master:
    input:
        master_inputs,
    output:
        out("{target}", "masters", "{name}.fits"),
    log:
        out("{target}", "logs", "master_{name}.log"),
    benchmark:
        out("{target}", "benchmarks", "master_{name}.tsv")
    conda:
        "../../envs/astroflow.yaml"
    resources:
        mem_mb=lambda wc: job_mem_mb(wc.target, 3, config["integration"]["memory_mb"]),
        band_mb=config["integration"]["memory_mb"],
        runtime=lambda wc: job_runtime(wc.target, len(master_inputs(wc))),
    params:
        spec=lambda wc: PLAN[wc.target]["masters"][wc.name],
        deps=lambda wc: master_deps(wc.target, wc.name),
        cfg=stage_cfg("master"),
        code=stage_code("master"),
    script:
        "../../scripts/master.py"
