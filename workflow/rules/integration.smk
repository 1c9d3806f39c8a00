# Per-filter registration and integration (the frames are resampled as integration reads them),
# and the record of everything the run decided.


rule integrate:
    input:
        unpack(integrate_inputs),
    output:
        image=out("{target}", "integration", "Integration_{filter}.fits"),
        rejection_low=out(
            "{target}", "integration", "Integration_{filter}_rejection_low.fits"
        ),
        rejection_high=out(
            "{target}", "integration", "Integration_{filter}_rejection_high.fits"
        ),
        coverage=out("{target}", "integration", "Integration_{filter}_coverage.fits"),
    log:
        out("{target}", "logs", "integrate_{filter}.log"),
    benchmark:
        out("{target}", "benchmarks", "integrate_{filter}.tsv")
    conda:
        "../../envs/astroflow.yaml"
    threads: lambda wc: workflow.cores or 1  # all cores: the kernels split the columns
    resources:
        mem_mb=lambda wc: job_mem_mb(wc.target, 0, config["integration"]["memory_mb"]),
        band_mb=config["integration"]["memory_mb"],
        runtime=lambda wc: job_runtime(wc.target, filter_frames(wc.target, wc.filter)),
    params:
        cfg=stage_cfg("integrate"),
        history=stage_history("integrate"),
        code=stage_code("integrate"),
    script:
        "../../scripts/integrate.py"


rule frames_table:
    input:
        unpack(frames_table_inputs),
    output:
        report(
            out("{target}", "frames.tsv"),
            caption="../report/frames_table.rst",
            category="Frames",
            labels={"target": "{target}", "figure": "frames.tsv"},
        ),
    log:
        out("{target}", "logs", "frames_table.log"),
    benchmark:
        out("{target}", "benchmarks", "frames_table.tsv")
    conda:
        "../../envs/astroflow.yaml"
    params:
        table=lambda wc: target_table(wc.target).to_dict("list"),
        data=str(DATA),
        cfg=stage_cfg("frames_table"),
        code=stage_code("frames_table"),
    script:
        "../../scripts/frames_table.py"


rule provenance:
    output:
        **{name: provenance_output(name, ext) for name, ext in PROVENANCE_FILES.items()},
    log:
        out("{target}", "logs", "provenance.log"),
    benchmark:
        out("{target}", "benchmarks", "provenance.tsv")
    conda:
        "../../envs/astroflow.yaml"
    params:
        cfg={
            k: v
            for k, v in ordered(config, DEFAULTS).items()
            if k not in LOCATION_KEYS
        },
        inputs=lambda wc: target_inputs(wc.target),
        plan=lambda wc: relative(PLAN[wc.target], str(DATA)),
        codes={rule: stage_code(rule) for rule in STAGES},
        command=lambda wc: rerun_command(wc.target),
        code=stage_code("provenance"),
    script:
        "../../scripts/provenance.py"
