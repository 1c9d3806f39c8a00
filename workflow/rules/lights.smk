# Per-chunk work on lights: calibrate + cosmetic + debayer + measure, choose the reference,
# register. One job per chunk of `batch_size` frames, not per frame.


rule calibrate:
    input:
        unpack(calibrate_inputs),
    output:
        directory(out("{target}", "calibrated", "{chunk}")),
    params:
        rows=chunk_rows,
        masters_dir=lambda wc: out(wc.target, "masters"),
        cfg=section("cosmetic", "debayer", "registration"),
        code=CODE,
    log:
        out("{target}", "logs", "calibrate_{chunk}.log"),
    script:
        "../../scripts/calibrate.py"


rule reference:
    input:
        lambda wc: [out(wc.target, "calibrated", c) for c in chunks_of(wc.target)],
    output:
        out("{target}", "reference.json"),
    params:
        code=CODE,
    log:
        out("{target}", "logs", "reference.log"),
    script:
        "../../scripts/reference.py"


rule register:
    input:
        calibrated=out("{target}", "calibrated", "{chunk}"),
        reference=out("{target}", "reference.json"),
    output:
        directory(out("{target}", "registered", "{chunk}")),
    params:
        cfg=section("registration"),
        code=CODE,
    log:
        out("{target}", "logs", "register_{chunk}.log"),
    script:
        "../../scripts/register.py"
