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
    params:
        cfg=stage_cfg("gradient"),
        code=stage_code("gradient"),
    script:
        "../../scripts/gradient.py"


rule final_image:
    input:
        unpack(final_inputs),
    output:
        **{
            role: out("{target}", "final", "{product}", f"{{product}}{suffix}")
            for role, suffix in FINAL_FILES.items()
        },
    log:
        out("{target}", "logs", "final_{product}.log"),
    benchmark:
        out("{target}", "benchmarks", "final_{product}.tsv")
    conda:
        "../../envs/astroflow.yaml"
    params:
        spec=lambda wc: PRODUCTS[wc.target][wc.product],
        cfg=stage_cfg("final_image"),
        history=stage_history("final_image"),
        code=stage_code("final_image"),
    script:
        "../../scripts/final_image.py"
