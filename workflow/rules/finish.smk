# From per-filter integrations to finished images: crop to the common area, gradient correction
# per channel, then one job per final image (AutoLRGB, AutoRGB, AutoMono, Auto_<palette>).


rule crop_area:
    input:
        lambda wc: [
            integration(wc.target, f, "_coverage") for f in PLAN[wc.target]["filters"]
        ],
    output:
        out("{target}", "processed", "crop.json"),
    log:
        out("{target}", "logs", "crop_area.log"),
    benchmark:
        out("{target}", "benchmarks", "crop_area.tsv")
    conda:
        "../../envs/astroflow.yaml"
    params:
        cfg=stage_cfg("crop_area"),
        code=stage_code("crop_area"),
    script:
        "../../scripts/crop_area.py"


rule crop_channel:
    input:
        image=integration("{target}", "{filter}"),
        info=out("{target}", "processed", "crop.json"),
    output:
        out("{target}", "processed", "Integration_{filter}_map.fits"),
    log:
        out("{target}", "logs", "crop_{filter}.log"),
    benchmark:
        out("{target}", "benchmarks", "crop_{filter}.tsv")
    conda:
        "../../envs/astroflow.yaml"
    params:
        code=stage_code("crop_channel"),
    script:
        "../../scripts/crop_channel.py"


rule gradient:
    input:
        out("{target}", "processed", "Integration_{filter}_map.fits"),
    output:
        image=out("{target}", "processed", "Integration_{filter}_GC.fits"),
        model=out("{target}", "processed", "AutoBackgroundModel_{filter}.fits"),
    log:
        out("{target}", "logs", "gradient_{filter}.log"),
    benchmark:
        out("{target}", "benchmarks", "gradient_{filter}.tsv")
    conda:
        "../../envs/astroflow.yaml"
    resources:
        mem_mb=lambda wc: job_mem_mb(wc.target, 8),
        runtime=lambda wc: job_runtime(wc.target, 1, "finish"),
    params:
        cfg=stage_cfg("gradient"),
        code=stage_code("gradient"),
    script:
        "../../scripts/gradient.py"


rule final_image:
    input:
        unpack(final_inputs),
    output:
        **{role: final_output(role, suffix) for role, suffix in FINAL_FILES.items()},
    log:
        out("{target}", "logs", "final_{product}.log"),
    benchmark:
        out("{target}", "benchmarks", "final_{product}.tsv")
    conda:
        "../../envs/astroflow.yaml"
    resources:
        mem_mb=lambda wc: job_mem_mb(wc.target, 12),
        runtime=lambda wc: job_runtime(
            wc.target, len(PRODUCTS[wc.target][wc.product]["channels"]), "finish"
        ),
    params:
        spec=lambda wc: PRODUCTS[wc.target][wc.product],
        cfg=stage_cfg("final_image"),
        history=stage_history("final_image"),
        sources=lambda wc: edit_sources(wc.target, wc.product),
        code=stage_code("final_image"),
    script:
        "../../scripts/final_image.py"


rule preview:
    input:
        integration("{target}", "{filter}"),
    output:
        report(
            out("{target}", "report", "Integration_{filter}.png"),
            caption="../report/integration.rst",
            category="Integrations",
            labels={"target": "{target}", "filter": "{filter}"},
        ),
    log:
        out("{target}", "logs", "preview_{filter}.log"),
    benchmark:
        out("{target}", "benchmarks", "preview_{filter}.tsv")
    conda:
        "../../envs/astroflow.yaml"
    params:
        code=stage_code("preview"),
    script:
        "../../scripts/preview.py"


rule frame_plots:
    input:
        out("{target}", "frames.tsv"),
    output:
        report(
            out("{target}", "report", "frames.svg"),
            caption="../report/frames.rst",
            category="Frames",
            labels={"target": "{target}", "figure": "per-frame metrics"},
        ),
    log:
        out("{target}", "logs", "frame_plots.log"),
    benchmark:
        out("{target}", "benchmarks", "frame_plots.tsv")
    conda:
        "../../envs/astroflow.yaml"
    params:
        code=stage_code("frame_plots"),
    script:
        "../../scripts/frame_plots.py"
