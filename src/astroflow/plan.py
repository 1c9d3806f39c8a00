"""The plan of a run: which lights form each target, which masters calibrate them, which chunks.

Built at DAG-build time from the classified frame table (:func:`astroflow.classify.scan`). The
plan is plain data (dicts, lists, strings) so the workflow can pass it in ``params:``, which also
makes Snakemake rerun exactly the jobs whose inputs or decisions changed.

Matching (reference/peers.md §1.1 step 2):

* bias: same instrument, gain, offset, binning and size;
* dark: same instrument, gain, offset, binning and size, CCD-TEMP within
  ``dark_temperature_tolerance`` °C, nearest EXPTIME (a warning above 10 % difference);
* flat: same filter, binning and size; flat-darks per filter (by FILTER, else by exposure);
* a master is built from every matching frame; a single frame is used as the master.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pandas as pd

log = logging.getLogger("astroflow")

CAMERA_KEYS = ["instrument", "gain", "offset", "xbinning", "ybinning", "width", "height"]


class PlanError(ValueError):
    """The data folder cannot produce any result (e.g. no usable lights)."""


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _same(a, b) -> bool:
    """Header values match; a missing value on either side does not prevent a match."""
    if (
        a is None
        or b is None
        or (isinstance(a, float) and pd.isna(a))
        or (isinstance(b, float) and pd.isna(b))
    ):
        return True
    if a == "" or b == "":
        return True
    return a == b


def _compatible(cal: pd.Series, light: pd.Series, keys) -> bool:
    return all(_same(cal[k], light[k]) for k in keys)


def _group(frames: pd.DataFrame, keys: list[str]) -> list[pd.DataFrame]:
    if frames.empty:
        return []
    filled = frames[keys].astype(str)
    return [frames.iloc[pos] for pos in filled.groupby(keys, sort=True).indices.values()]


def _label(prefix: str, group: pd.DataFrame, parts: list[str], unique: bool) -> str:
    if unique:
        return prefix
    first = group.iloc[0]
    bits = []
    for key in parts:
        value = first[key]
        if value is None or (isinstance(value, float) and pd.isna(value)) or value == "":
            continue
        bits.append(
            {
                "exptime": f"{_fmt(value)}s",
                "gain": f"G{_fmt(value)}",
                "offset": f"O{_fmt(value)}",
                "xbinning": f"bin{value}",
                "width": f"{value}x{first['height']}",
                "instrument": str(value).replace(" ", ""),
            }.get(key, _fmt(value))
        )
    return "_".join([prefix, *bits])


def build_plan(table: pd.DataFrame, cfg: dict, data_dir) -> tuple[dict, pd.DataFrame]:
    """Decide masters, matching and chunks for the scanned ``data_dir``. Returns ``(plan, table)``.

    ``table`` comes back with columns ``bias``, ``dark``, ``flat``, ``chunk`` filled for lights,
    and ``accepted``/``reason`` updated for lights excluded by the plan (e.g. odd size).
    ``plan`` maps target -> {"masters": {name: {...}}, "chunks": {chunk: [rows]}, "filters": [...],
    "external": {filter: path}} (stacks made elsewhere, for filters without lights).
    """
    table = table.copy()
    for col in ("bias", "dark", "flat", "chunk", "notes"):
        table[col] = ""
    ok = table["accepted"]
    lights = table[ok & (table["type"] == "light")]
    stacks = table[ok & (table["type"] == "integration")]
    if lights.empty and stacks.empty:
        raise PlanError("no usable light frames found (checked IMAGETYP and lights/ folders)")

    data_dir = Path(data_dir).resolve()
    rel = {i: Path(p).relative_to(data_dir).as_posix() for i, p in lights["path"].items()}
    plan: dict = {}
    for target, tlights in lights.groupby("target", sort=True):
        plan[target] = _plan_lights(table, tlights, rel, cfg)
    for target in sorted(set(stacks["target"]) - set(plan)):
        first = stacks[stacks["target"] == target].iloc[0]
        plan[target] = {
            "masters": {},
            "chunks": {},
            "filters": [],
            "reference_filter": None,  # nothing to register
            "shape": [int(first["height"]), int(first["width"])],
            "osc": first["filter"] == "RGB",
            "external": {},
        }
    # stacks made elsewhere go straight to the finishing steps, for filters without lights
    for idx, stack in stacks.sort_values("path").iterrows():
        target, filt = plan[stack["target"]], stack["filter"]
        if filt in target["external"]:
            reason = f"unused: {Path(target['external'][filt]).name} is the integration of filter {filt}"
        elif filt in target["filters"]:
            reason = f"unused: the lights of filter {filt} are integrated instead"
        else:
            target["external"][filt] = stack["path"]
            target["filters"] = sorted([*target["filters"], filt], key=_filter_order)
            continue
        table.loc[idx, ["accepted", "reason"]] = [False, reason]
    return plan, table


def _filter_order(f: str):
    return ("LRGBHSO RGB".find(f), f)


def _plan_lights(table: pd.DataFrame, tlights: pd.DataFrame, rel: dict, cfg: dict) -> dict:
    """A target's plan from its lights (masters, chunks, filters); fills ``table``'s matching
    columns and excludes lights of another size."""
    cal = cfg["calibration"]
    # All lights of a target are registered to one reference: one size and binning.
    geometry = tlights[["width", "height", "xbinning", "ybinning"]].astype(str).agg("x".join, axis=1)
    main = geometry.value_counts().sort_index().idxmax()
    odd = tlights.index[geometry != main]
    for idx in odd:
        r = table.loc[idx]
        table.loc[idx, ["accepted", "reason"]] = [
            False,
            f"size {r.width}x{r.height} bin {r.xbinning}x{r.ybinning} differs from the target's "
            f"{main.replace('x', ' ', 2)} frames",
        ]
    tlights = tlights.drop(index=odd)
    osc = bool(tlights["bayer"].fillna("").astype(str).ne("").any())
    masters = _plan_masters(table, tlights, cal, osc)
    chunks: dict[str, list[dict]] = {}
    filters = sorted(tlights["filter"].unique(), key=_filter_order)
    for filt in filters:
        flights = tlights[tlights["filter"] == filt].sort_values("path")
        # chunks of equal size so parallel jobs end together
        megapixels = float(flights["width"].iloc[0]) * float(flights["height"].iloc[0]) / 1e6
        n_chunks = chunk_count(len(flights), megapixels, cfg["batch_size"])
        names = [f"{filt}_{chunk_key(rel[i], n_chunks):03d}" for i in flights.index]
        for name in sorted(set(names)):
            part = flights.index[[n == name for n in names]]
            table.loc[part, "chunk"] = name
            chunks[name] = [_light_row(table.loc[i], rel[i]) for i in part]
    first = tlights.iloc[0]
    result = {
        "masters": masters["masters"],
        "chunks": chunks,
        "filters": filters,
        "reference_filter": reference_filter(filters, cfg["registration"]["reference_filter"]),
        # (ny, nx) of the lights and whether they are one-shot colour: sets jobs' memory
        "shape": [int(first["height"]), int(first["width"])],
        "osc": osc,
        "external": {},  # filter -> a stack made elsewhere (build_plan)
    }
    for idx, names in masters["per_light"].items():
        for kind, name in names.items():
            table.loc[idx, kind] = name
        notes = masters["notes"].get(idx)
        if notes:
            table.loc[idx, "notes"] = "; ".join(notes)
    by_path = table.set_index("path")
    for chunk in chunks.values():
        for row in chunk:
            row.update({k: by_path.at[row["source"], k] for k in ("bias", "dark", "flat")})
    return result


AUTO_BATCH_MEGAPIXELS = 384  # pixels per calibrate/register job with batch_size: auto
BALANCE_MEGAPIXELS = 128  # above this per job, auto makes 4 jobs: hashed chunks are uneven


def chunk_count(n_frames: int, megapixels: float, batch_size) -> int:
    """Calibrate/register jobs for ``n_frames`` lights of ``megapixels`` each.

    ``batch_size`` lights per job, or ``"auto"``: about ``AUTO_BATCH_MEGAPIXELS`` of frames per
    job (10 frames of 26 MP, 500 of 0.07 MP: a job's ~1 s start-up is then small against its
    work), at least 2 jobs so two cores share the work, and an even number so they end together.
    Lights go to chunks by a hash of their path (:func:`chunk_key`), so chunks are uneven (20
    lights split 12/8 as often as not); where jobs are long (over ``BALANCE_MEGAPIXELS`` each) at
    least 4 are made, which two cores share far more evenly.
    """
    if batch_size != "auto":
        return -(-n_frames // int(batch_size))
    total = n_frames * megapixels
    k = max(-(-int(total) // AUTO_BATCH_MEGAPIXELS), min(2, n_frames))
    if total > 2 * BALANCE_MEGAPIXELS:
        k = max(k, 4)
    return min(n_frames, k + k % 2) if k > 1 else k


def chunk_key(path: str, n_chunks: int) -> int:
    """Chunk of a light: a hash of its path relative to the data folder, so a light added to (or
    removed from) a filter changes only its own chunk and never moves the others' frames."""
    return int(hashlib.sha1(path.encode()).hexdigest(), 16) % n_chunks


REFERENCE_ORDER = ("L", "RGB", "H", "G", "R", "B", "O", "S")


def reference_filter(filters: list[str], choice: str) -> str:
    """The filter whose best frame becomes the registration reference of all filters: ``choice``,
    or with ``auto`` the first present of :data:`REFERENCE_ORDER` (the broadest band, which shows
    the most stars). Decided from the plan, so registering one filter waits only for the
    measurements of that filter, and lights added to another filter rerun nothing here."""
    if choice != "auto":
        if choice not in filters:
            raise PlanError(
                f"registration.reference_filter {choice} has no lights (filters: {', '.join(filters)})"
            )
        return choice
    return next(f for f in (*REFERENCE_ORDER, *filters) if f in filters)


def _light_row(r: pd.Series, rel: str) -> dict:
    """A light as its calibrate job sees it: ``path`` relative to the data folder (its name in
    every table), ``source`` the file, ``sha256`` its content (a replaced file reruns its chunk)."""
    return {
        "path": rel,
        "source": r["path"],
        "sha256": r.get("sha256", ""),
        "filter": r["filter"],
        "exptime": float(r["exptime"]),
        "bayer": r["bayer"] or "",
    }


def _files(frames: pd.DataFrame) -> dict:
    """A master's frames, sorted, with their content checksums (a replaced frame rebuilds it)."""
    frames = frames.sort_values("path")
    return {"files": list(frames["path"]), "sha256": list(frames.get("sha256", [""] * len(frames)))}


def _plan_masters(table: pd.DataFrame, tlights: pd.DataFrame, cal: dict, cfa: bool) -> dict:
    """Masters of a target and which calibrate each light; ``cfa``: one-shot-colour lights, whose
    masters' defect maps are found per Bayer colour."""
    ok = table["accepted"]
    masters: dict[str, dict] = {}
    per_light: dict[int, dict] = {i: {} for i in tlights.index}
    notes: dict[int, list[str]] = {i: [] for i in tlights.index}
    ref = tlights.iloc[0]

    def usable(kind):
        frames = table[ok & (table["type"] == kind)]
        keep = [i for i, r in frames.iterrows() if _compatible(r, ref, CAMERA_KEYS)]
        return frames.loc[keep]

    # Bias: one group (the frames matching the lights' camera settings).
    bias_frames = usable("bias")
    bias_name = None
    if len(bias_frames):
        bias_name = "AutoMasterBias"
        masters[bias_name] = {"kind": "bias", **_files(bias_frames), "calibrate_with": {}}

    # Darks: grouped by exposure (and temperature bucket), matched to each light.
    dark_frames = usable("dark")
    dark_groups = _group(dark_frames, ["exptime"])
    dark_info = []
    for g in dark_groups:
        name = f"AutoMasterDark_{_fmt(float(g['exptime'].iloc[0]))}s"
        temp = g["temperature"].dropna().median() if g["temperature"].notna().any() else None
        masters[name] = {"kind": "dark", **_files(g), "calibrate_with": {}, "cfa": cfa}
        dark_info.append((name, float(g["exptime"].iloc[0]), temp))

    # Flat-darks per filter, flats per filter.
    flatdark_frames = usable("flatdark")
    flat_frames = usable("flat")
    tol = float(cal["dark_temperature_tolerance"])
    for filt in sorted(tlights["filter"].unique()):
        fflats = flat_frames[flat_frames["filter"] == filt]
        if fflats.empty:
            continue
        fname = f"AutoMasterFlat_{filt}"
        with_ = {}
        fd = flatdark_frames[flatdark_frames["filter"] == filt]
        if fd.empty and len(flatdark_frames):
            exps = set(fflats["exptime"].dropna())
            fd = flatdark_frames[flatdark_frames["exptime"].isin(exps)]
        if len(fd):
            fdname = f"AutoMasterFlatDark_{filt}"
            masters[fdname] = {"kind": "flatdark", **_files(fd), "calibrate_with": {}}
            with_["dark"] = fdname
        elif bias_name:
            with_["bias"] = bias_name
        masters[fname] = {
            "kind": "flat",
            **_files(fflats),
            "calibrate_with": with_,
            "cfa": cfa,
        }

    for idx, light in tlights.iterrows():
        choice = per_light[idx]
        candidates = [
            d
            for d in dark_info
            if d[2] is None or pd.isna(light["temperature"]) or abs(d[2] - light["temperature"]) <= tol
        ]
        if dark_info and not candidates:
            notes[idx].append(f"no dark within {tol:g} °C of CCD-TEMP {light['temperature']:g}")
        if candidates:
            name, exp, _ = min(candidates, key=lambda d: (abs(d[1] - light["exptime"]), d[1]))
            choice["dark"] = name
            scaled = bool(cal["dark_scaling"] and bias_name)
            if scaled:
                choice["bias"] = bias_name  # the master dark is then bias-subtracted
            if exp > 0 and abs(exp - light["exptime"]) / light["exptime"] > 0.10:
                if scaled:
                    notes[idx].append(f"dark {exp:g}s scaled to {light['exptime']:g}s")
                else:
                    notes[idx].append(
                        f"warning: dark exposure {exp:g}s differs from {light['exptime']:g}s by >10%"
                    )
        elif bias_name:
            choice["bias"] = bias_name
        if "dark" not in choice and "bias" not in choice:
            notes[idx].append("no bias or dark: not bias/dark calibrated")
        fname = f"AutoMasterFlat_{light['filter']}"
        if fname in masters:
            choice["flat"] = fname
        else:
            notes[idx].append("no flat for this filter: not flat-fielded")
    if "AutoMasterBias" in masters and cal["dark_scaling"]:
        for info in masters.values():
            if info["kind"] == "dark":
                info["calibrate_with"] = {"bias": "AutoMasterBias"}
    used = {n for c in per_light.values() for n in c.values()}
    used |= {n for m in masters.values() for n in m["calibrate_with"].values() if n}
    masters = {n: m for n, m in masters.items() if n in used}
    return {"masters": masters, "per_light": per_light, "notes": notes}
