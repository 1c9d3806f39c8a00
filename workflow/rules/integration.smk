# Per-filter integration, and the record of everything the run decided.


rule integrate:
    input:
        lambda wc: [
            out(wc.target, "registered", c) for c in chunks_of(wc.target, wc.filter)
        ],
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
    threads: workflow.cores
    resources:
        mem_mb=lambda wc: job_mem_mb(wc.target, 0, config["integration"]["memory_mb"]),
    params:
        cfg=section("integration"),
        history=HISTORY,
        code=CODE,
    script:
        "../../scripts/integrate.py"


rule frames_table:
    input:
        registered=lambda wc: [
            out(wc.target, "registered", c) for c in chunks_of(wc.target)
        ],
        reference=out("{target}", "reference.json"),
    output:
        out("{target}", "frames.tsv"),
    log:
        out("{target}", "logs", "frames_table.log"),
    benchmark:
        out("{target}", "benchmarks", "frames_table.tsv")
    conda:
        "../../envs/astroflow.yaml"
    params:
        table=lambda wc: target_table(wc.target).reset_index().to_dict("list"),
        code=CODE,
    script:
        "../../scripts/frames_table.py"


rule run_record:
    output:
        config=out("{target}", "run", "config.yaml"),
        versions=out("{target}", "run", "versions.tsv"),
    log:
        out("{target}", "logs", "run_record.log"),
    benchmark:
        out("{target}", "benchmarks", "run_record.tsv")
    conda:
        "../../envs/astroflow.yaml"
    params:
        cfg=config,
        plan=lambda wc: PLAN[wc.target],
        code=CODE,
    script:
        "../../scripts/run_record.py"
