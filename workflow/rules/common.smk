# Parse-time work: validate the config, classify every file of the night from its header, and
# plan masters and chunks, so `snakemake -n` and `--dag` show every job of the run.
import gc
import math
import threading
from pathlib import Path

import yaml
from jsonschema import ValidationError
from snakemake.exceptions import WorkflowError

from astroflow import edits
from astroflow.classify import scan
from astroflow.options import (
    LOCATION_KEYS,
    code_hash,
    non_default,
    ordered,
    pick,
    with_defaults,
)
from astroflow.plan import PlanError, build_plan, chunk_filter
from astroflow.products import output_files, products
from astroflow.provenance import checksums
from astroflow.stages.provenance import relative
from astroflow.runlock import RunLockError, claim, release
from astroflow.stages import STAGES

SCHEMA = workflow.source_path("../schemas/config.schema.yaml")
# validated and filled with the schema's defaults as snakemake.utils.validate does, from one
# load of the schema with libyaml (validate() parses it again, in Python, per call: 0.3 s)
_SCHEMA = yaml.load(open(SCHEMA), Loader=yaml.CSafeLoader)
try:
    config.update(with_defaults(config, _SCHEMA))
    DEFAULTS = with_defaults({}, _SCHEMA)
except ValidationError as _e:
    raise WorkflowError(f"Error validating config file.\n{_e}") from None
# one key order whatever the source (a saved config compares equal to the run it came from)
config.update(ordered(config, DEFAULTS))

if not config.get("data"):
    raise WorkflowError("no data folder: run with --config data=/path/to/night")
DATA = Path(config["data"]).expanduser().resolve()
OUT = Path(config["out"]).expanduser().resolve()
if not DATA.is_dir():
    raise WorkflowError(f"data folder {DATA} does not exist")


# The results folder is the working directory: Snakemake's lock and metadata live with the
# results, so runs started from anywhere on one folder are locked against each other.
workdir: OUT


if workflow.is_main_process and not workflow.dryrun:
    try:
        claim(OUT)
    except RunLockError as exc:
        raise WorkflowError(str(exc))

CLASSIFIED = scan(
    DATA,
    config["overrides"],
    str(config["osc"]).lower(),
    config["bayer_pattern"],
    exclude=[OUT],
)


def run_cores():
    """The run's ``--cores``; None where it gives none (a cluster run: each job has its own)."""
    try:
        return workflow.cores
    except WorkflowError:
        return None


# on the cores the run was given: `--cores 1` means one core, in Snakemake's own process too
_sums = checksums(
    list(CLASSIFIED["path"]), OUT / ".astroflow" / "checksums.json", run_cores()
)
CLASSIFIED["sha256"] = [_sums.get(p, "") for p in CLASSIFIED["path"]]
try:
    PLAN, TABLE = build_plan(CLASSIFIED, config, DATA)
except PlanError as exc:
    raise WorkflowError(f"{DATA}: {exc}")
for _, bad in TABLE[~TABLE["accepted"]].iterrows():
    logger.warning(f"excluded {bad['path']}: {bad['reason']}")


def stage_cfg(rule):
    """The options a stage reads (astroflow.stages.STAGES): its only config in params."""
    return pick(config, STAGES[rule].options)


def stage_code(rule):
    """Hash of the code a stage runs: a change there, and only there, reruns its jobs."""
    return code_hash(STAGES[rule].module)


def stage_history(rule):
    """HISTORY lines: the non-default options of a stage and of every stage before it."""
    options = tuple(o for r in (*STAGES[rule].after, rule) for o in STAGES[r].options)
    return non_default(pick(config, options), pick(DEFAULTS, options))


PROVENANCE_FILES = {
    "config": "yaml",
    "inputs": "tsv",
    "plan": "yaml",
    "versions": "tsv",
    "command": "txt",
}


def target_inputs(target):
    """provenance/inputs.tsv rows: every file of the target's frames.tsv, by content."""
    rows = []
    for _, r in target_table(target).iterrows():
        p = Path(r["path"])
        rows.append(
            {
                "path": p.relative_to(DATA).as_posix(),
                "type": r["type"],
                "filter": r["filter"] or "",
                "bytes": p.stat().st_size if p.exists() else "",
                "sha256": r["sha256"],
            }
        )
    return rows


def rerun_command(target):
    """The command that reruns this configuration (data and results as the user gave them)."""
    cfg = Path(config["out"], target, "provenance", "config.yaml")
    return f"snakemake --cores all --configfile {cfg} --config data={config['data']} out={config['out']}"


def write_flowchart():
    """OUT/flowchart.*: this run's DAG by rule, with every job's measured time; and in the log."""
    from astroflow import flowchart

    dag = workflow.dag
    jobs = [
        (job.rule.name, job.benchmark, [d.rule.name for d in dag.dependencies[job]])
        for job in dag.jobs
    ]
    chart = flowchart.steps(jobs)
    files = flowchart.write(chart, OUT)
    logger.info(
        f"Flowchart ({', '.join(str(f) for f in files)}):\n{flowchart.text(chart)}"
    )
    if len(files) == 1:
        logger.warning(
            "install Graphviz (`dot`) for the flowchart's SVG and PNG images"
        )


def finish_run(success):
    if success and workflow.is_main_process and not workflow.dryrun:
        try:
            write_flowchart()
        except Exception as exc:  # the run's results are complete without it
            logger.warning(f"flowchart not written: {exc}")
    release(OUT)
    cancel_pending_timers()
    # the interpreter's last garbage collections would walk the whole DAG: 0.5 s at exit
    gc.freeze()


wildcard_constraints:
    target="[^/]+",
    chunk="[A-Z]+_[0-9]{3}",
    filter="L|R|G|B|H|S|O|RGB",
    name="AutoMaster[A-Za-z0-9_.+-]*",


def cancel_pending_timers():
    """Cancel Snakemake's pending scheduler timers (see the Snakefile's onsuccess)."""
    for thread in threading.enumerate():
        if isinstance(thread, threading.Timer):
            thread.cancel()


def out(target, *parts):
    return str(OUT.joinpath(target, *parts))


JOB_BASE_MB = 256  # a job's interpreter and libraries


def frame_pixels(target):
    """Pixels of one of the target's calibrated lights (3 planes for one-shot colour)."""
    ny, nx = PLAN[target]["shape"]
    return (3 if PLAN[target]["osc"] else 1) * ny * nx


def job_mem_mb(target, frames, band_mb=0):
    """Peak memory (MB) of a job holding ``frames`` float32 copies of one of the target's
    calibrated lights (3 planes for one-shot colour) plus ``band_mb`` of band buffers, so
    `--resources mem_mb=...` never lets jobs together exceed the machine. Measured peaks at
    26 MP: calibrate 4.5 frames, a master 3 frames beyond its bands."""
    return int(JOB_BASE_MB + band_mb + frames * frame_pixels(target) * 4 / 2**20)


# Wall seconds per megapixel of frames a job handles, measured on one core at 26 MP
# (benchmarks/speed.md: calibrate + register ~0.05, a master or the integration less); the
# finishing rules work on the integrations (~2 s per MP and channel).
SECONDS_PER_MP = {"frames": 0.05, "finish": 2.0}


def job_runtime(target, frames, kind="frames"):
    """Minutes a cluster job may run: ten times the measured pace for ``frames`` frames of the
    target (channels for the finishing rules), at least 10 (queues round up anyway)."""
    seconds = SECONDS_PER_MP[kind] * frames * frame_pixels(target) / 1e6
    return max(10, math.ceil(10 * seconds / 60))


def filter_frames(target, filt):
    return sum(len(PLAN[target]["chunks"][c]) for c in chunks_of(target, filt))


def master_path(target, name):
    return out(target, "masters", f"{name}.fits")


def all_outputs():
    files = []
    for target, plan in PLAN.items():
        files.append(out(target, "frames.tsv"))
        files.append(out(target, "provenance", "config.yaml"))
        files += [master_path(target, name) for name in plan["masters"]]
        files += [
            out(target, "integration", f"Integration_{f}.fits") for f in plan["filters"]
        ]
        files += [
            out(target, "report", f"Integration_{f}.png") for f in plan["filters"]
        ]
        files.append(out(target, "report", "frames.svg"))
    return files


def master_deps(target, name):
    """Specs of the masters a master is calibrated with (bias, flat-dark): its job integrates
    them itself from their frames, so master jobs never wait for one another."""
    masters = PLAN[target]["masters"]
    deps = {}
    for n in masters[name]["calibrate_with"].values():
        if n:
            deps[n] = masters[n]
            deps.update(master_deps(target, n))
    return deps


def master_inputs(wildcards):
    deps = master_deps(wildcards.target, wildcards.name)
    files = PLAN[wildcards.target]["masters"][wildcards.name]["files"]
    return files + [f for spec in deps.values() for f in spec["files"]]


def chunk_rows(wildcards):
    return PLAN[wildcards.target]["chunks"][wildcards.chunk]


def calibrate_inputs(wildcards):
    rows = chunk_rows(wildcards)
    names = sorted({r[k] for r in rows for k in ("bias", "dark", "flat") if r.get(k)})
    return {
        "lights": [r["source"] for r in rows],
        "masters": [master_path(wildcards.target, n) for n in names],
    }


def integrate_inputs(wc):
    """The filter's calibrated chunks and the reference filter's (the reference is chosen
    among them), or the stack made elsewhere that stands for them."""
    external = PLAN[wc.target]["external"].get(wc.filter)
    if external:
        return {"external": external}
    return {
        "calibrated": [
            out(wc.target, "calibrated", c) for c in chunks_of(wc.target, wc.filter)
        ],
        "reference": reference_chunks(wc),
    }


def frames_table_inputs(wc):
    """Every calibrated chunk: frames.tsv registers them itself (milliseconds a frame), so it is
    whole even when a filter's integration fails."""
    inputs = {
        "calibrated": [out(wc.target, "calibrated", c) for c in chunks_of(wc.target)],
        "reference_chunks": reference_chunks(wc),
    }
    if PLAN[wc.target]["reference_filter"]:
        inputs["reference"] = out(wc.target, "reference.json")
    return inputs


def reference_chunks(wildcards):
    """Calibrated chunks of the reference filter: the reference is chosen among them."""
    plan = PLAN[wildcards.target]
    return [
        out(wildcards.target, "calibrated", c)
        for c in chunks_of(wildcards.target, plan["reference_filter"])
    ]


def chunks_of(target, filt=None):
    return [
        c for c in PLAN[target]["chunks"] if filt is None or chunk_filter(c) == filt
    ]


def target_table(target):
    """Rows of the classified table that belong in this target's frames.tsv."""
    t = TABLE
    # calibration frames, unreadable files, and the files of targets with no usable light
    unassigned = ~t["target"].fillna("").isin(list(PLAN))
    return t[(t["target"] == target) | unassigned]


# ---- finished images ----
PRODUCTS = {}
for _target, _plan in PLAN.items():
    PRODUCTS[_target], _problems = products(_plan["filters"], config)
    for _p in _problems:
        logger.error(f"{_target}: {_p} (left out; the other images are made)")
FINAL_FILES = output_files(config)


wildcard_constraints:
    product="Auto[A-Za-z0-9_-]*",


def integration(target, filt, suffix=""):
    return out(target, "integration", f"Integration_{filt}{suffix}.fits")


def generated_channel(target, filt):
    """The channel a final image starts from when no edit replaces it: the gradient-corrected
    or the cropped integration."""
    stage = "_GC" if config["gradient"]["enabled"] else "_map"
    return out(target, "processed", f"Integration_{filt}{stage}.fits")


def start_images_of(target, product):
    """The user's edits (OUT/<target>/edits/) this final image starts from (AutoContinue)."""
    spec = PRODUCTS[target][product]
    return edits.start_images(
        Path(out(target, "edits")), spec["kind"], spec["channels"]
    )


def edit_sources(target, product):
    """The generated channels each start image was made from (a stale edit is an error)."""
    channels = PRODUCTS[target][product]["channels"]
    return {
        role: [generated_channel(target, c) for c in edits.made_from(role, channels)]
        for role in start_images_of(target, product)
    }


def final_output(role, suffix):
    """A final image's file; its PNG goes into the HTML report."""
    path = out("{target}", "final", "{product}", f"{{product}}{suffix}")
    if role != "png":
        return path
    labels = {"target": "{target}", "image": "{product}"}
    return report(
        path, caption="../report/final.rst", category="Final images", labels=labels
    )


def provenance_output(name, ext):
    """A provenance file; the configuration and the versions go into the HTML report."""
    path = out("{target}", "provenance", f"{name}.{ext}")
    if name not in ("config", "versions"):
        return path
    labels = {"target": "{target}", "file": f"{name}.{ext}"}
    return report(
        path, caption="../report/provenance.rst", category="Provenance", labels=labels
    )


def final_files(target, product):
    return [
        out(target, "final", product, f"{product}{suffix}")
        for suffix in FINAL_FILES.values()
    ]


def final_inputs(wc):
    spec = PRODUCTS[wc.target][wc.product]
    starts = start_images_of(wc.target, wc.product)
    gone = edits.replaced_channels(starts, spec["channels"])
    inputs = {
        c: generated_channel(wc.target, c) for c in spec["channels"] if c not in gone
    }
    inputs.update({role: str(path) for role, path in starts.items()})
    # what the edits were made from is brought up to date first, so a stale edit is caught
    for role, files in edit_sources(wc.target, wc.product).items():
        inputs.update({f"source_{role}_{k}": f for k, f in enumerate(files)})
    # a changed catalogue reruns photometric colour calibration; a missing one is reported there
    cat = config["colour"]["photometric"]["catalogue"]
    if config["colour"]["calibration"] == "photometric" and cat and Path(cat).is_file():
        inputs["catalogue"] = cat
    return inputs


# edits of the wrong shape or size are named before any job starts
for _target in PRODUCTS:
    for _product in PRODUCTS[_target]:
        try:
            edits.validate(
                start_images_of(_target, _product), edit_sources(_target, _product)
            )
        except ValueError as exc:
            raise WorkflowError(f"{_target} {_product}: {exc}")
