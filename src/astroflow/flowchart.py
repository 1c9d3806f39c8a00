"""The run's flowchart: Snakemake's DAG collapsed to its rules, each with its jobs and their
measured time (AutoIntegrate's live flowchart, made from the real DAG).

Written at the end of a run as ``OUT/flowchart.dot`` and, with Graphviz's ``dot`` installed,
``OUT/flowchart.svg`` and ``.png``; :func:`text` is the same chart for the log.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .io import atomic_path


@dataclass
class Step:
    """One rule of the run: its jobs, their measured wall seconds (from ``benchmark:`` files;
    jobs without one are not counted in ``seconds``) and the rules it waits for."""

    jobs: int = 0
    timed: int = 0
    seconds: float = 0.0
    after: set[str] = field(default_factory=set)


def benchmark_seconds(path) -> float | None:
    """Wall seconds of a job from its Snakemake ``benchmark:`` TSV (None if missing)."""
    try:
        with open(path) as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        return float(rows[-1]["s"])
    except (OSError, KeyError, IndexError, ValueError):
        return None


def steps(jobs) -> dict[str, Step]:
    """Steps from ``(rule, benchmark path or None, rules it depends on)`` per job, in the
    order of first appearance."""
    chart: dict[str, Step] = {}
    for rule, bench, deps in jobs:
        step = chart.setdefault(rule, Step())
        step.jobs += 1
        step.after |= set(deps) - {rule}
        seconds = benchmark_seconds(bench) if bench else None
        if seconds is not None:
            step.timed += 1
            step.seconds += seconds
    return chart


def _order(chart: dict[str, Step]) -> list[str]:
    """Rules in dependency order (a rule after everything it waits for), ties by name."""
    done: list[str] = []
    while len(done) < len(chart):
        ready = sorted(r for r, s in chart.items() if r not in done and s.after <= set(done))
        done.append(ready[0] if ready else sorted(set(chart) - set(done))[0])
    return done


def _label(rule: str, step: Step) -> str:
    jobs = f"{step.jobs} job{'s' if step.jobs != 1 else ''}"
    return f"{rule}: {jobs}, {step.seconds:.1f} s" if step.timed else f"{rule}: {jobs}"


def text(chart: dict[str, Step]) -> str:
    """The chart as text: one line per rule, in order, with what it waits for."""
    lines = []
    for rule in _order(chart):
        step = chart[rule]
        after = f"  <- {', '.join(sorted(step.after))}" if step.after else ""
        lines.append(f"  {_label(rule, step)}{after}")
    return "\n".join(lines)


def dot(chart: dict[str, Step]) -> str:
    """Graphviz source of the chart, top to bottom."""
    lines = [
        "digraph astroflow {",
        "  rankdir=TB;",
        '  node [shape=box, style="rounded,filled", fillcolor="#e8eef7", fontname="sans-serif"];',
    ]
    for rule in _order(chart):
        lines.append(f'  "{rule}" [label="{_label(rule, chart[rule])}"];')
        lines += [f'  "{dep}" -> "{rule}";' for dep in sorted(chart[rule].after)]
    return "\n".join([*lines, "}"]) + "\n"


def write(chart: dict[str, Step], out: str | Path) -> list[Path]:
    """Write ``flowchart.dot`` (and ``.svg``, ``.png`` when Graphviz is installed) into ``out``;
    returns the files written."""
    out = Path(out)
    source = dot(chart)
    written = [out / "flowchart.dot"]
    with atomic_path(written[0]) as tmp:
        tmp.write_text(source)
    exe = shutil.which("dot")
    if exe:
        for fmt in ("svg", "png"):
            with atomic_path(out / f"flowchart.{fmt}") as tmp:
                subprocess.run([exe, f"-T{fmt}", "-o", str(tmp)], input=source, text=True, check=True)
            written.append(out / f"flowchart.{fmt}")
    return written
