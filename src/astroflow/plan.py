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


def _compatible(cal, light, keys) -> bool:
    """``cal`` and ``light`` (rows: dicts or Series) agree on every one of ``keys`` (:func:`_same`)."""
    return all(_same(cal[k], light[k]) for k in keys)


def _group(frames: pd.DataFrame, keys: list[str]) -> list[pd.DataFrame]:
    if frames.empty:
        return []
    filled = frames[keys].astype(str)
    return [frames.iloc[pos] for pos in filled.groupby(keys, sort=True, dropna=False).indices.values()]


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
    _mark_unused(table, plan, float(cfg["calibration"]["dark_temperature_tolerance"]))
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


CALIBRATION_TYPES = ("bias", "dark", "flatdark", "flat")


def _settings(r: pd.Series) -> str:
    bits = [r["instrument"] or "", f"gain {_fmt(r['gain'])}" if pd.notna(r["gain"]) else ""]
    bits += [
        f"offset {_fmt(r['offset'])}" if pd.notna(r["offset"]) else "",
        f"bin {r['xbinning']}x{r['ybinning']}",
    ]
    return ", ".join(b for b in [*bits, f"{r['width']}x{r['height']}"] if b)


def _unused_reason(cal: pd.Series, lights: pd.DataFrame, tol: float) -> str:
    """Why a calibration frame calibrates no light (its filter, size, binning, settings,
    temperature or exposure)."""
    kind = cal["type"]
    keys = FLAT_KEYS if kind == "flat" else CAMERA_KEYS
    if kind == "flat":
        lights = lights[lights["filter"] == cal["filter"]]
        if lights.empty:
            return f"unused: no light of filter {cal['filter']}"
    fits = lights[[_compatible(cal, light, keys) for _, light in lights.iterrows()]]
    if fits.empty:
        return f"unused: no light with its settings ({_settings(cal)})"
    if kind == "dark":
        t = cal["temperature"]
        if (
            pd.notna(t)
            and fits["temperature"].notna().all()
            and ((fits["temperature"] - t).abs() > tol).all()
        ):
            return f"unused: CCD-TEMP {t:g} °C is more than {tol:g} °C from every light's"
        return f"unused: another dark is nearer every light in exposure ({_fmt(cal['exptime'])}s) or time"
    if kind == "bias":
        return "unused: the darks hold the bias and the flats have flat-darks (or no bias)"
    if kind == "flatdark":
        return "unused: no flat of its filter or exposure"
    return "unused: another set of flats is nearer every light in time"


def _mark_unused(table: pd.DataFrame, plan: dict, tol: float) -> None:
    """Calibration frames that are in no master any light uses: not accepted, with the reason."""
    used = {f for p in plan.values() for m in p["masters"].values() for f in m["files"]}
    lights = table[table["accepted"] & (table["type"] == "light")]
    for idx, cal in table[table["accepted"] & table["type"].isin(CALIBRATION_TYPES)].iterrows():
        if cal["path"] not in used:
            table.loc[idx, ["accepted", "reason"]] = [False, _unused_reason(cal, lights, tol)]


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
        names = [chunk_name(filt, chunk_key(rel[i], n_chunks)) for i in flights.index]
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
    # column by column: a cell assignment per light costs 0.2 ms, a third of a second at 1000
    per_light = masters["per_light"]
    for kind in sorted({k for names in per_light.values() for k in names}):
        which = [i for i in per_light if kind in per_light[i]]
        table.loc[which, kind] = [per_light[i][kind] for i in which]
    noted = [i for i in per_light if masters["notes"].get(i)]
    if noted:
        table.loc[noted, "notes"] = ["; ".join(masters["notes"][i]) for i in noted]
    by_path = table.set_index("path")
    for chunk in chunks.values():
        for row in chunk:
            row.update({k: by_path.at[row["source"], k] for k in ("bias", "dark", "flat")})
    return result


AUTO_BATCH_MEGAPIXELS = 384  # pixels per calibrate job with batch_size: auto
BALANCE_MEGAPIXELS = 128  # above this per job, auto makes 4 jobs: hashed chunks are uneven


def chunk_count(n_frames: int, megapixels: float, batch_size) -> int:
    """Calibrate jobs for ``n_frames`` lights of ``megapixels`` each.

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


def chunk_name(filt: str, key: int) -> str:
    """A chunk's name, ``<filter>_<key>``: its folder under calibrated/."""
    return f"{filt}_{key:03d}"


def chunk_filter(chunk: str) -> str:
    """The filter of a chunk (or of its folder's name)."""
    return chunk.rsplit("_", 1)[0]


def chunk_key(path: str, n_chunks: int) -> int:
    """Chunk of a light: a hash of its path relative to the data folder, so a light added to (or
    removed from) a filter changes only its own chunk and never moves the others' frames."""
    return int(hashlib.sha1(path.encode()).hexdigest(), 16) % n_chunks


REFERENCE_ORDER = ("L", "RGB", "G", "R", "B", "H", "O", "S")  # broadband first: most stars


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


SESSION_GAP_HOURS = 12.0  # calibration frames of one kind further apart in time are separate sets
FLAT_KEYS = ["instrument", "xbinning", "ybinning", "width", "height"]  # flats may use another gain


def _hours(table: pd.DataFrame) -> pd.Series:
    """DATE-OBS of each row in hours (NaN where unknown)."""
    when = pd.to_datetime(table["date"].replace("", None), errors="coerce", utc=True)
    return (when - pd.Timestamp("2000-01-01", tz="UTC")).dt.total_seconds() / 3600


def _split(frames: pd.DataFrame, column: str, gap: float) -> list[pd.DataFrame]:
    """``frames`` split where sorted values of ``column`` jump by more than ``gap`` (unknown
    values form one more set)."""
    known = frames[frames[column].notna()].sort_values(column)
    parts = []
    if len(known):
        breaks = (known[column].diff() > gap).cumsum()
        parts = [g for _, g in known.groupby(breaks, sort=True)]
    unknown = frames[frames[column].isna()]
    return parts + ([unknown] if len(unknown) else [])


def _sets(frames: pd.DataFrame, keys: list[str], temperature_gap: float | None = None) -> list[pd.DataFrame]:
    """Frames that make one master: equal ``keys``, CCD-TEMP within ``temperature_gap`` of each
    other (darks), taken within ``SESSION_GAP_HOURS`` of each other (a night's frames)."""
    out = []
    for g in _group(frames, keys):
        for t in _split(g, "temperature", temperature_gap) if temperature_gap is not None else [g]:
            out += _split(t, "hours", SESSION_GAP_HOURS)
    return out


def _names(prefix: str, sets: list[pd.DataFrame], parts: dict) -> list[str]:
    """One name per set: ``prefix`` plus the parts (column -> formatter) that differ between
    the sets, then the night's date and a number if still needed (a single set keeps the plain
    name AutoIntegrate users know)."""
    varying = [c for c in parts if len({str(s[c].iloc[0]) for s in sets}) > 1]
    names = []
    for s in sets:
        first = s.iloc[0]
        bits = [
            parts[c](first[c]) for c in varying if not (isinstance(first[c], float) and pd.isna(first[c]))
        ]
        names.append("_".join([prefix, *bits]))
    if len(set(names)) < len(names):  # same settings on different nights
        names = [f"{n}_{str(s['date'].min())[:10] or 'undated'}" for n, s in zip(names, sets, strict=True)]
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        seen[n] = seen.get(n, 0) + 1
        names[i] = n if seen[n] == 1 else f"{n}_{seen[n]}"
    return names


_NAME_PARTS = {
    "instrument": lambda v: str(v).replace(" ", ""),
    "gain": lambda v: f"G{_fmt(v)}",
    "offset": lambda v: f"O{_fmt(v)}",
    "xbinning": lambda v: f"bin{v}",
    "width": lambda v: f"{v}px",
    "temperature": lambda v: f"{v:.0f}C",
}


def _nearest(sets: list[dict], light, extra=None):
    """The set closest in time to ``light`` (ties: the first; ``extra`` ranks before time)."""
    if not sets:
        return None

    def rank(s):
        dt = abs(s["hours"] - light["hours"]) if pd.notna(s["hours"]) and pd.notna(light["hours"]) else 0.0
        return (*(extra(s) if extra else ()), dt)

    return min(sets, key=rank)


def _plan_masters(table: pd.DataFrame, tlights: pd.DataFrame, cal: dict, cfa: bool) -> dict:
    """Masters of a target and which calibrate each light; ``cfa``: one-shot-colour lights, whose
    masters' defect maps are found per Bayer colour.

    Every light is matched on its own camera settings (instrument, gain, offset, binning, size);
    darks of different temperatures, and the frames of different nights (DATE-OBS more than
    ``SESSION_GAP_HOURS`` apart), make separate masters, and each light takes the one nearest
    in time: several nights with their own calibration frames are each calibrated with their own.
    A dark of another exposure is scaled when a bias is available (``dark_scaling``).
    """
    table = table[table["accepted"]].assign(hours=_hours(table[table["accepted"]]))
    tlights = tlights.assign(hours=_hours(tlights))
    tol = float(cal["dark_temperature_tolerance"])

    def entries(found, names, **extra):
        return [
            {"name": n, "frames": f, "first": f.iloc[0].to_dict(), "hours": f["hours"].median(),
             "temperature": f["temperature"].median(), "exptime": float(f["exptime"].iloc[0] or 0), **extra}
            for n, f in zip(names, found, strict=True)
        ]  # fmt: skip

    camera_parts = {k: _NAME_PARTS[k] for k in ("instrument", "gain", "offset", "xbinning", "width")}
    found = _sets(table[table["type"] == "bias"], CAMERA_KEYS)
    biases = entries(found, _names("AutoMasterBias", found, camera_parts))
    darks, flats = [], []
    for exptime, group in table[table["type"] == "dark"].groupby("exptime", sort=True):
        found = _sets(group, CAMERA_KEYS, tol)
        parts = {**camera_parts, "temperature": _NAME_PARTS["temperature"]}
        darks += entries(found, _names(f"AutoMasterDark_{_fmt(float(exptime))}s", found, parts))
    for filt, group in table[table["type"] == "flat"].groupby("filter", sort=True):
        found = _sets(group, FLAT_KEYS)
        parts = {k: camera_parts[k] for k in ("instrument", "xbinning", "width")}
        flats += entries(found, _names(f"AutoMasterFlat_{filt}", found, parts), filter=filt)
    found = _sets(table[table["type"] == "flatdark"], [*CAMERA_KEYS, "exptime", "filter"])
    flatdarks = [{**e, "filter": e["first"]["filter"]} for e in entries(found, [""] * len(found))]

    masters: dict[str, dict] = {}
    per_light: dict[int, dict] = {i: {} for i in tlights.index}
    notes: dict[int, list[str]] = {i: [] for i in tlights.index}

    def bias_for(row):
        return _nearest([b for b in biases if _compatible(b["first"], row, CAMERA_KEYS)], row)

    def add(entry, kind, **spec):
        if entry["name"] not in masters:
            masters[entry["name"]] = {"kind": kind, **_files(entry["frames"]), "calibrate_with": {}, **spec}
        return entry["name"]

    def flat_calibration(flat) -> dict:
        """A flat's flat-dark (same settings, filter or exposure), else its bias."""
        first = flat["first"]
        exps = set(flat["frames"]["exptime"].dropna())
        fds = [
            d
            for d in flatdarks
            if _compatible(d["first"], first, CAMERA_KEYS)
            and (d["filter"] == first["filter"] or d["exptime"] in exps)
        ]
        fd = _nearest(fds, first, extra=lambda d: (d["filter"] != first["filter"],))
        if fd is not None:
            fd_name = flat["name"].replace("AutoMasterFlat_", "AutoMasterFlatDark_", 1)
            masters.setdefault(fd_name, {"kind": "flatdark", **_files(fd["frames"]), "calibrate_with": {}})
            return {"dark": fd_name}
        fbias = bias_for(first)
        return {"bias": add(fbias, "bias")} if fbias is not None else {}

    def temperature_ok(d, light) -> bool:
        t, lt = d["temperature"], light["temperature"]
        return pd.isna(t) or pd.isna(lt) or abs(t - lt) <= tol

    scaled_darks: dict[str, dict] = {}  # name -> the bias it is made with
    for idx, light in tlights.to_dict("index").items():  # dicts: a Series lookup costs 5 µs
        choice = per_light[idx]
        bias = bias_for(light)
        camera = [d for d in darks if _compatible(d["first"], light, CAMERA_KEYS)]
        near = [d for d in camera if temperature_ok(d, light)]
        if camera and not near:
            notes[idx].append(f"no dark within {tol:g} °C of CCD-TEMP {light['temperature']:g}")
        exptime = light["exptime"]
        dark = _nearest(near, light, extra=lambda d, e=exptime: (abs(d["exptime"] - e), d["exptime"]))
        if dark is not None:
            choice["dark"] = add(dark, "dark", cfa=cfa)
            exp = dark["exptime"]
            differs = exp > 0 and abs(exp - exptime) / exptime > 0.10
            scale = bias is not None and (
                cal["dark_scaling"] is True or (cal["dark_scaling"] == "auto" and differs)
            )
            if scale:
                scaled_darks.setdefault(dark["name"], bias)
                choice["bias"] = add(bias, "bias")  # the master dark is then bias-subtracted
                if differs:
                    notes[idx].append(f"dark {exp:g}s scaled to {exptime:g}s")
            elif differs:
                notes[idx].append(f"warning: dark exposure {exp:g}s differs from {exptime:g}s by >10%")
        elif bias is not None:
            choice["bias"] = add(bias, "bias")
        if "dark" not in choice and "bias" not in choice:
            notes[idx].append("no bias or dark: not bias/dark calibrated")
        same = [
            f for f in flats if f["filter"] == light["filter"] and _compatible(f["first"], light, FLAT_KEYS)
        ]
        flat = _nearest(same, light)
        if flat is None:
            notes[idx].append("no flat for this filter: not flat-fielded")
            continue
        if flat["name"] not in masters:
            bayer = light.get("bayer") if cfa and isinstance(light.get("bayer"), str) else ""
            add(flat, "flat", cfa=cfa, **({"bayer": bayer} if bayer else {}))
            masters[flat["name"]]["calibrate_with"] = flat_calibration(flat)
        choice["flat"] = flat["name"]
    for name, bias in scaled_darks.items():
        own = bias_for(next(d for d in darks if d["name"] == name)["first"])
        masters[name]["calibrate_with"] = {"bias": add(own or bias, "bias")}
    return {"masters": masters, "per_light": per_light, "notes": notes}
