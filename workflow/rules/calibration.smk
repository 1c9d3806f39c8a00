# Master calibration frames and bad-pixel maps.


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
    params:
        spec=lambda wc: PLAN[wc.target]["masters"][wc.name],
        masters_dir=lambda wc: out(wc.target, "masters"),
        cfg=section("calibration", "integration"),
        code=CODE,
    script:
        "../../scripts/master.py"


rule bad_pixel_map:
    input:
        unpack(lambda wc: bpm_sources(wc.target, wc.filter)),
    output:
        out("{target}", "masters", "BadPixelMap_{filter}.fits"),
    log:
        out("{target}", "logs", "bad_pixel_map_{filter}.log"),
    benchmark:
        out("{target}", "benchmarks", "bad_pixel_map_{filter}.tsv")
    conda:
        "../../envs/astroflow.yaml"
    params:
        cfa=lambda wc: wc.filter == "RGB",
        cfg=section("cosmetic"),
        code=CODE,
    script:
        "../../scripts/bad_pixel_map.py"
