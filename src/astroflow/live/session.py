"""One live night: every settled file of the watched folder, one at a time, into its stack.

A calibration frame joins :class:`~astroflow.live.masters.MasterLibrary` (and lights held for
a master are tried again). A light is matched to its masters, calibrated, corrected, debayered
and measured (:func:`astroflow.stages.calibrate.calibrate_frame`), judged against its stack's
reference (too few stars, blurred, trailed: rejected with the reason), registered and warped
(:mod:`astroflow.register`), normalised and weighted as the pipeline's integration does, and
added to the stack's :class:`~astroflow.live.running.RunningStack`. Then the stack's outputs
are rewritten atomically in ``OUT/<stack>/``: ``stack.fits`` (linear), ``stack.jpg`` (AutoSTF),
``frames.tsv``; then its checkpoint ``state.npz`` (holding the ledger lines it waits for, which a
restart records if a kill came between the two); then the ledger (:mod:`.ledger`).

Stacks: lights of one INSTRUME, OBJECT, FILTER, EXPTIME and GAIN. A light pointing farther
than ``pointing_jump`` degrees from its stack's reference, or ``new_stack_after`` consecutive
lights that do not register, start a new stack of that key (``<name>_2``, …). The reference of
a stack is its first light with enough stars.

Nothing here is fatal to the night: an unreadable file, a frame that fails, a results folder
that cannot be written are logged, shown on the page and, where the frame is not at fault,
tried again later.
"""

from __future__ import annotations

import collections
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from astropy.io import fits

from .. import __version__
from ..classify import bayer_pattern, filter_name, frame_type, sanitise
from ..io import (
    RAW_SUFFIXES,
    STACK_KEYWORDS,
    FrameError,
    atomic_path,
    read_header,
    read_image,
    write_8bit,
    write_fits,
)
from ..tables import write_tsv
from .ledger import Ledger
from .masters import KINDS, MasterLibrary
from .running import RunningStack
from .watch import Arrivals, signature

log = logging.getLogger("astroflow.live")

# frames.tsv of a stack; times are seconds
FRAME_COLUMNS = (
    "file", "status", "reason", "stars", "fwhm", "eccentricity", "background", "noise", "snr",
    "weight", "matches", "reg_rms", "rejected_low", "rejected_high", "masters",
    "t_read", "t_calibrate", "t_register", "t_stack", "t_write", "seconds",
)  # fmt: skip
RETRY_SECONDS = 10.0  # a frame that could not be written is tried again this much later


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def stack_key(header, path) -> dict:
    """What groups lights into one stack (INSTRUME, OBJECT, FILTER, EXPTIME, GAIN)."""
    return {
        "instrument": str(header.get("INSTRUME", "") or "").strip(),
        "object": str(header.get("OBJECT", "") or "").strip(),
        "filter": filter_name(header, path),
        "exptime": float(header.get("EXPTIME", header.get("EXPOSURE", 0)) or 0),
        "gain": header.get("GAIN"),
    }


def pointing(header) -> tuple[float, float] | None:
    """The frame's RA, DEC in degrees (RA/DEC, OBJCTRA/OBJCTDEC or the WCS centre), if known."""
    for ra_key, dec_key, unit in (
        ("RA", "DEC", "deg"),
        ("OBJCTRA", "OBJCTDEC", "hourangle"),
        ("CRVAL1", "CRVAL2", "deg"),
    ):
        ra, dec = header.get(ra_key), header.get(dec_key)
        if ra in (None, "") or dec in (None, ""):
            continue
        try:
            if isinstance(ra, str):
                from astropy.coordinates import Angle

                return float(Angle(ra, unit=unit).deg), float(Angle(dec, unit="deg").deg)
            return float(ra), float(dec)
        except (ValueError, TypeError):
            continue
    return None


def separation(a, b) -> float:
    """Angle in degrees between two (RA, DEC) in degrees."""
    ra1, dec1, ra2, dec2 = np.radians([a[0], a[1], b[0], b[1]])
    c = np.sin(dec1) * np.sin(dec2) + np.cos(dec1) * np.cos(dec2) * np.cos(ra1 - ra2)
    return float(np.degrees(np.arccos(np.clip(c, -1, 1))))


def _may_be_image(path: Path) -> bool:
    """Whether a file that does not parse could still become an image: a camera raw file, or one
    that starts as a FITS or XISF file does, or too short to tell (a writer may have just begun)."""
    if str(path).lower().endswith(RAW_SUFFIXES):  # too many raw formats to recognise by content
        return True
    try:
        with open(path, "rb") as f:
            start = f.read(9)
    except OSError:
        return True
    return len(start) < 9 or start.startswith((b"SIMPLE  =", b"XISF0100"))


@dataclass
class Arrival:
    """A settled file: where it is, its ledger key and when it settled."""

    path: Path
    rel: str
    sig: tuple[int, int]
    header: fits.Header
    kind: str | None
    seen: float  # time.monotonic() when it was taken

    @property
    def key(self):
        return Ledger.key(self.rel, *self.sig)


class Stack:
    """One stack: its reference, running statistics, frames and outputs in ``OUT/<name>/``."""

    def __init__(self, name: str, key: dict, out: Path):
        self.name, self.key, self.dir = name, key, out / name
        self.ref: dict | None = None  # stars, luminance, norm, pointing, fwhm, stars count, file
        self.running: RunningStack | None = None
        self.rows: list[dict] = []
        self.exposure = 0.0
        self.accepted = 0
        self.updated = ""
        self.header = fits.Header()
        self.unledgered: list[dict] = []  # accepted, not yet in a checkpoint
        self.failures: list[tuple] = []  # (arrival, light) that did not register, in a row
        self.version = 0

    # -- checkpoint ------------------------------------------------------------------------
    def save(self) -> None:
        meta = {
            "name": self.name, "key": self.key, "exposure": self.exposure, "accepted": self.accepted,
            "updated": self.updated, "rows": self.rows, "header": self.header.tostring(),
            # its ledger lines, written after it: a kill between the two must not stack them again
            "unledgered": self.unledgered,
            "ref": {k: self.ref[k] for k in ("pointing", "fwhm", "stars", "file", "loc", "scale", "weight", "shape", "warmup")},
        }  # fmt: skip
        arrays = {
            **self.running.state(),
            "ref_xy": self.ref["xy"],
            "ref_flux": self.ref["flux"],
            "ref_lum": self.ref["lum"],
        }
        with atomic_path(self.dir / "state.npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, meta=np.array(json.dumps(meta)), **arrays)

    @classmethod
    def load(cls, path: Path, out: Path, live_cfg: dict) -> Stack:
        with np.load(path) as z:
            meta = json.loads(str(z["meta"]))
            stack = cls(meta["name"], meta["key"], out)
            ref = meta["ref"]
            stack.ref = {**ref, "xy": np.array(z["ref_xy"]), "lum": np.array(z["ref_lum"])}
            # stacks saved before the reference kept its fluxes: equal weights
            stack.ref["flux"] = np.array(z["ref_flux"]) if "ref_flux" in z else np.ones(len(stack.ref["xy"]))
            stack.running = RunningStack(
                tuple(ref["shape"]), ref["warmup"], live_cfg["reject_low"], live_cfg["reject_high"]
            )
            stack.running.restore(z)
        stack.exposure, stack.accepted, stack.updated = meta["exposure"], meta["accepted"], meta["updated"]
        stack.rows = meta["rows"]
        stack.unledgered = meta.get("unledgered", [])  # recorded by the session if still missing
        stack.header = fits.Header.fromstring(meta["header"])
        stack.version = stack.accepted  # its stack.jpg was written before the checkpoint
        return stack

    def status(self) -> dict:
        rejected = [r for r in self.rows if r["status"] != "accepted"]
        return {
            "name": self.name,
            "key": self.key,
            "frames": self.accepted,
            "exposure": round(self.exposure, 3),
            "updated": self.updated,
            "rejected": len(rejected),
            "warming_up": bool(self.running and not self.running.started),
            "image": f"/stacks/{self.name}/stack.jpg?v={self.version}" if self.version else None,
            "rows": self.rows,
        }


class Session:
    """The live state of a night; :meth:`step` does one scan's work, :meth:`run` loops."""

    def __init__(self, watch, out, cfg: dict, masters_dir=None, notify=None):
        self.watch, self.out, self.cfg, self.live = Path(watch), Path(out), cfg, cfg["live"]
        self.notify = notify or (lambda kind, data: None)
        self.ledger = Ledger(self.out / "ledger.tsv")
        self.library = MasterLibrary(self.out / "masters", cfg)
        self.arrivals = Arrivals(self.watch, self.live["settle_seconds"], exclude=[self.out])
        self.log: collections.deque = collections.deque(maxlen=500)
        self.stacks: dict[str, Stack] = {}
        self.held: dict[Path, tuple[Arrival, str]] = {}
        self.unusable: list[dict] = []  # files that are no frame at all, or unreadable
        self.errors: dict[str, str] = {}  # what cannot be done right now (results not writable, …)
        self._unreadable: dict[Path, float] = {}  # first failure of a settled file
        self._retry: dict[Path, float] = {}  # not before this time.monotonic()
        self.started = _now()
        self.snapshot = "{}"
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self.errors["write"] = f"cannot write results in {self.out}: {exc}"
            self._say("error", self.errors["write"])
        for state in sorted(self.out.glob("*/state.npz")):
            try:
                stack = Stack.load(state, self.out, self.live)
            except (OSError, ValueError, KeyError) as exc:
                self._say("error", f"{state}: checkpoint unreadable ({exc}); its frames are stacked again")
                continue
            self.stacks[stack.name] = stack
            missing = [
                r
                for r in stack.unledgered
                if Ledger.key(r["file"], int(r["bytes"]), int(r["mtime_ns"])) not in self.ledger
            ]
            if missing:  # killed between the checkpoint and its ledger lines
                self.ledger.record(missing)
            stack.unledgered = []
        done = {r["file"] for s in self.stacks.values() for r in s.rows}
        for row in self.ledger.rows.values():  # judged after the last checkpoint of their stack
            if row["stack"] in self.stacks and row["status"] == "rejected" and row["file"] not in done:
                self.stacks[row["stack"]].rows.append(
                    {"file": row["file"], "status": "rejected", "reason": row["reason"]}
                )
            elif row["status"] == "unusable":
                self.unusable.append({"file": row["file"], "reason": row["reason"]})
        if masters_dir:
            for path in sorted(Path(masters_dir).rglob("*")):
                self._add_master(path)
        if self.stacks:
            self._say("info", f"resumed {len(self.stacks)} stack(s) from their checkpoints")

    # -- messages --------------------------------------------------------------------------
    def _say(self, level: str, message: str) -> None:
        getattr(log, level)(message)
        entry = {"time": _now(), "level": level, "message": message}
        self.log.append(entry)
        self._changed()

    def _changed(self) -> None:
        """Rebuild the status the page reads (the web server never touches the live state:
        it reads this JSON text, replaced whole) and tell it."""
        self.snapshot = json.dumps(self.status())
        self.notify("status", self.snapshot)

    def status(self) -> dict:
        """Everything the page shows (``GET /api/status``)."""
        return {
            "version": __version__,
            "watch": str(self.watch),
            "started": self.started,
            "stacks": [s.status() for s in self.stacks.values()],
            "held": [{"file": a.rel, "reason": reason} for a, reason in self.held.values()],
            "unusable": self.unusable[-200:],
            "errors": list(self.errors.values()),
            "log": list(self.log)[-100:],
        }

    # -- the loop --------------------------------------------------------------------------
    def run(self, stop) -> None:
        """Process until ``stop`` (a threading.Event) is set."""
        how = self.arrivals.start()
        self._say("info", f"watching {self.watch} ({how}); results in {self.out}")
        try:
            while not stop.is_set():
                try:
                    busy = self.step()
                except Exception as exc:  # e.g. the watched folder vanished: keep watching
                    log.exception("scan of %s", self.watch)
                    self._say("error", f"scan of {self.watch} failed: {type(exc).__name__}: {exc}")
                    busy = 0
                if not busy:
                    self.arrivals.wait(self.live["poll_seconds"])
        finally:
            self.arrivals.stop()

    def step(self, now: float | None = None) -> int:
        """Take every file that settled since the last scan; returns how many were taken."""
        now = time.monotonic() if now is None else now
        arrivals = []
        for path in self.arrivals.scan(now):
            if self._retry.get(path, 0) > now:
                self.arrivals.again(path)
                continue
            arrival = self._arrival(path, now)
            if arrival is not None:
                arrivals.append(arrival)
        # calibration frames first: the lights of the same scan can use them
        calibration = [a for a in arrivals if a.kind in KINDS]
        for a in calibration:
            self._calibration(a)
        if calibration and self.held:
            arrivals += [a for a, _ in self.held.values()]
            self.held.clear()
        for a in arrivals:
            if a.kind == "light":
                self._guarded(a, self._light)
        return len(arrivals)

    def _arrival(self, path: Path, now: float) -> Arrival | None:
        sig = signature(path)
        if sig is None:
            return None
        rel = path.relative_to(self.watch).as_posix()
        if Ledger.key(rel, *sig) in self.ledger and not self._is_calibration_row(rel, sig):
            self.arrivals.taken(path, sig)
            return None
        try:
            header = read_header(path)
        except FrameError as exc:
            self._not_yet(path, rel, sig, exc, now)
            return None
        kind = frame_type(header, path) or ("light" if header.get("NAXIS", 2) else None)
        if kind not in (*KINDS, "light"):
            self.arrivals.taken(path, sig)
            self._unusable(
                rel, sig, f"not a light or calibration frame (IMAGETYP {header.get('IMAGETYP')!r})"
            )
            return None
        return Arrival(path, rel, sig, header, kind, now)

    def _is_calibration_row(self, rel, sig) -> bool:
        return self.ledger.rows[Ledger.key(rel, *sig)]["kind"] in KINDS

    def _not_yet(self, path, rel, sig, exc, now) -> None:
        """A settled file that does not parse: a writer may still be at it, so it is tried again
        until it has stayed unreadable for ``partial_timeout`` seconds."""
        first = self._unreadable.setdefault(path, now)
        if now - first < self.live["partial_timeout"] and _may_be_image(path):
            self.arrivals.again(path)
            return
        self.arrivals.taken(path, sig)
        self._unreadable.pop(path, None)
        self._unusable(rel, sig, f"unreadable: {exc}")

    def _unusable(self, rel, sig, reason) -> None:
        self._say("error", f"{rel}: {reason}")
        self.unusable.append({"file": rel, "reason": reason})
        self.ledger.record(
            [
                {
                    "file": rel,
                    "bytes": sig[0],
                    "mtime_ns": sig[1],
                    "kind": "",
                    "stack": "",
                    "status": "unusable",
                    "reason": reason,
                }
            ]
        )
        self._changed()

    def _guarded(self, a: Arrival, work) -> None:
        """Run ``work(a)``; a results folder that cannot be written (disk full, permissions)
        leaves the frame to be tried again later, anything unexpected is reported with the
        file's name and the night goes on."""
        try:
            work(a)
            self.errors.pop("write", None)
        except FrameError as exc:
            self._not_yet(a.path, a.rel, a.sig, exc, a.seen)
        except OSError as exc:
            self.errors["write"] = f"cannot write results in {self.out}: {exc} (retrying)"
            self._say("error", f"{a.rel}: cannot write results: {exc}; tried again in {RETRY_SECONDS:g} s")
            self._retry[a.path] = a.seen + RETRY_SECONDS
            self.arrivals.again(a.path)
        except Exception as exc:  # a bug must not end the night: report it with the file
            log.exception("processing %s", a.rel)
            self._unusable(a.rel, a.sig, f"internal error: {type(exc).__name__}: {exc}")
        self._changed()

    # -- calibration frames ----------------------------------------------------------------
    def _add_master(self, path: Path) -> None:
        from ..io import is_image_file

        if not path.is_file() or not is_image_file(path):
            return
        try:
            header = read_header(path)
        except FrameError as exc:
            self._say("error", f"{path}: master unreadable: {exc}")
            return
        name = self.library.add(path, header)
        if name:
            self._say("info", f"master {path.name} available ({name})")

    def _calibration(self, a: Arrival) -> None:
        name = self.library.add(a.path, a.header)
        self.arrivals.taken(a.path, a.sig)
        if a.key not in self.ledger:
            try:
                self.ledger.record(
                    [
                        {
                            "file": a.rel,
                            "bytes": a.sig[0],
                            "mtime_ns": a.sig[1],
                            "kind": a.kind,
                            "stack": "",
                            "status": "calibration",
                            "reason": name,
                        }
                    ]
                )
            except OSError as exc:
                self.errors["write"] = f"cannot write results in {self.out}: {exc}"
            self._say("info", f"{a.rel}: {a.kind} frame for {name}")

    # -- lights ----------------------------------------------------------------------------
    def _stack_for(self, a: Arrival) -> Stack:
        """The stack of a light: the latest of its key whose reference points within
        ``pointing_jump`` of it, else a new one."""
        key = stack_key(a.header, a.path)
        where = pointing(a.header)
        for stack in reversed([s for s in self.stacks.values() if s.key == key]):
            here = stack.ref and stack.ref["pointing"]
            if where is None or not here or separation(where, here) <= self.live["pointing_jump"]:
                return stack
        stack = self._new_stack(key)
        if len([s for s in self.stacks.values() if s.key == key]) > 1:
            self._say(
                "info",
                f"{a.rel}: pointing moved more than {self.live['pointing_jump']:g}°: new stack {stack.name}",
            )
        return stack

    def _new_stack(self, key: dict) -> Stack:
        """A new stack of ``key``: named from it, ``_2``, ``_3`` … for later ones."""
        parts = (
            key["object"] or "target",
            key["filter"],
            f"{key['exptime']:g}s",
            f"g{key['gain']}" if key["gain"] is not None else "",
        )
        name = base = sanitise("_".join(p for p in parts if p))
        n = 1
        while name in self.stacks:
            n += 1
            name = f"{base}_{n}"
        stack = Stack(name, key, self.out)
        self.stacks[name] = stack
        return stack

    def _light(self, a: Arrival) -> None:
        from ..stages.calibrate import calibrate_frame

        times = {}
        t = time.perf_counter()
        masters, used, missing = self.library.match(a.header, a.path)
        if missing and self.live["unmatched"] == "hold":
            reason = f"waiting for a matching master {' and '.join(missing)}"
            if a.path not in self.held:
                self._say("warning", f"{a.rel}: held, {reason}")
            self.held[a.path] = (a, reason)
            self.arrivals.taken(a.path, a.sig)
            return
        raw, header, _ = read_image(a.path)
        times["t_read"] = time.perf_counter() - t
        self._unreadable.pop(a.path, None)
        stack = self._stack_for(a)
        row = {
            "file": a.rel,
            "status": "rejected",
            "reason": "",
            "masters": " ".join(f"{k}={v}" for k, v in used.items()),
        }
        if missing:
            row["masters"] += f" (no {', '.join(missing)})"
        if stack.ref is not None and raw.shape[-2:] != stack.ref["lum"].shape:
            size, ref_size = raw.shape[-2:][::-1], stack.ref["lum"].shape[::-1]
            return self._reject(
                stack, a, row, f"size {size} differs from the stack's {ref_size} (another camera or binning)"
            )
        t = time.perf_counter()
        exptime = stack.key["exptime"]
        try:
            light = calibrate_frame(
                raw, header, exptime, masters, self.cfg, self._bayer(header), inplace=True
            )
        except FrameError as exc:
            return self._reject(stack, a, row, f"cannot calibrate: {exc}")
        del raw
        times["t_calibrate"] = time.perf_counter() - t
        st = light.stats
        row.update(stars=st.stars, fwhm=round(st.fwhm, 3), eccentricity=round(st.eccentricity, 3),
                   background=round(st.background, 2), noise=round(st.noise, 3), snr=round(st.snr, 2))  # fmt: skip
        reason = self._judge(stack, light)
        if reason:
            return self._reject(stack, a, row, reason)
        self._add(stack, a, light, row, times)

    def _bayer(self, header) -> str | None:
        if str(self.cfg["osc"]).lower() == "false":
            return None
        if self.cfg["bayer_pattern"] != "auto":
            return self.cfg["bayer_pattern"]
        return bayer_pattern(header)

    def _judge(self, stack: Stack, light) -> str:
        """Why a calibrated light is clearly bad, or ``""``."""
        lv, st = self.live, light.stats
        if st.stars < lv["min_stars"]:
            return f"no stars: {st.stars} found (min_stars {lv['min_stars']}): clouds, dew or the dome?"
        if st.eccentricity > lv["max_eccentricity"]:
            return f"trailed: star eccentricity {st.eccentricity:.2f} > {lv['max_eccentricity']:g}"
        ref = stack.ref
        if ref is None:
            return ""
        # blur before star count: a defocused frame also shows fewer stars, a cloudy one sharp ones
        if st.fwhm > lv["max_fwhm_ratio"] * ref["fwhm"]:
            return f"blurred: FWHM {st.fwhm:.2f} px, the reference's {ref['fwhm']:.2f} px (max_fwhm_ratio {lv['max_fwhm_ratio']:g})"
        if st.stars < lv["min_star_fraction"] * ref["stars"]:
            return f"clouds: {st.stars} stars, the reference has {ref['stars']} (min_star_fraction {lv['min_star_fraction']:g})"
        return ""

    def _reject(self, stack: Stack, a: Arrival, row: dict, reason: str) -> None:
        row.update(status="rejected", reason=reason)
        stack.rows.append(row)
        self._say("warning", f"{a.rel}: rejected, {reason}")
        self._write_table(stack)
        self.arrivals.taken(a.path, a.sig)
        self.ledger.record([self._ledger_row(a, stack, "rejected", reason)])

    @staticmethod
    def _ledger_row(a: Arrival, stack: Stack, status: str, reason: str = "") -> dict:
        return {
            "file": a.rel,
            "bytes": a.sig[0],
            "mtime_ns": a.sig[1],
            "kind": "light",
            "stack": stack.name,
            "status": status,
            "reason": reason,
        }

    def _set_reference(self, stack: Stack, a: Arrival, light) -> None:
        from ..integrate import inverse_variance

        img = light.image
        planes = img if img.ndim == 3 else img[None]
        noise = np.array([[p.noise for p in light.per_channel]])
        scale = np.array([[p.scale for p in light.per_channel]])
        stack.ref = {
            "xy": np.column_stack([light.stars["x"], light.stars["y"]]),
            "flux": np.asarray(light.stars["flux"], np.float64),
            "lum": img.mean(axis=0) if img.ndim == 3 else img,
            "pointing": pointing(a.header),
            "fwhm": float(light.stats.fwhm),
            "stars": int(light.stats.stars),
            "file": a.rel,
            "loc": [float(p.background) for p in light.per_channel],
            "scale": [float(p.scale) for p in light.per_channel],
            "weight": float(inverse_variance(noise, scale)[0]),
            "shape": list(planes.shape),
            "warmup": self.live["warmup_frames"],
        }
        stack.running = RunningStack(
            planes.shape, self.live["warmup_frames"], self.live["reject_low"], self.live["reject_high"]
        )
        for key in (*STACK_KEYWORDS, "FILTER"):
            if key in a.header:
                stack.header[key] = a.header[key]
        self._say(
            "info",
            f"{a.rel}: reference of new stack {stack.name} ({light.stats.stars} stars, FWHM {light.stats.fwhm:.2f} px)",
        )

    def _register(self, stack: Stack, light):
        """The registration of ``light`` onto its stack's reference (RegistrationError if none)."""
        from .. import register as reg_lib

        rc = self.cfg["registration"]
        lum = light.image.mean(axis=0) if light.image.ndim == 3 else light.image
        xy = np.column_stack([light.stars["x"], light.stars["y"]])
        reg = reg_lib.register(
            stack.ref["xy"],
            xy,
            rc["transform"],
            rc["min_matches"],
            images=lambda: (stack.ref["lum"], lum),
            flux=(stack.ref["flux"], np.asarray(light.stars["flux"], np.float64)),
        )
        if reg.rms > rc["max_rms"]:
            raise reg_lib.RegistrationError(
                f"star residual {reg.rms:.2f} px exceeds max_rms {rc['max_rms']} px"
            )
        return reg

    def _add(self, stack: Stack, a: Arrival, light, row: dict, times: dict) -> None:
        from .. import register as reg_lib

        t = time.perf_counter()
        if stack.ref is None:
            self._set_reference(stack, a, light)
            reg = reg_lib.Registration(
                np.array([[1.0, 0, 0], [0, 1.0, 0]]), int(light.stats.stars), 0.0, "reference"
            )
        else:
            try:
                reg = self._register(stack, light)
            except reg_lib.RegistrationError as exc:
                return self._failed(stack, a, light, row, str(exc))
        self._settle_failures(stack)
        rc = self.cfg["registration"]
        warped = reg_lib.warp(
            light.image, reg.matrix, stack.ref["lum"].shape, rc["clamping"], rc["interpolation"]
        )
        times["t_register"] = time.perf_counter() - t
        t = time.perf_counter()
        weight, noise = self._normalise(stack, warped, light)
        low, high = stack.running.add(warped if warped.ndim == 3 else warped[None], weight, noise)
        times["t_stack"] = time.perf_counter() - t
        stack.accepted += 1
        stack.exposure += stack.key["exptime"]
        stack.updated = _now()
        row.update(status="accepted", weight=round(weight, 4), matches=reg.matches, reg_rms=round(reg.rms, 3),
                   rejected_low=round(low, 5), rejected_high=round(high, 5))  # fmt: skip
        row.update({k: round(v, 3) for k, v in times.items()})
        stack.rows.append(row)
        stack.unledgered.append(self._ledger_row(a, stack, "accepted"))
        self.arrivals.taken(a.path, a.sig)
        t = time.perf_counter()
        self._write_images(stack)
        row["t_write"] = round(time.perf_counter() - t, 3)
        row["seconds"] = round(time.monotonic() - a.seen, 3)
        self._checkpoint(stack)
        self._say(
            "info",
            f"{a.rel}: stacked into {stack.name} ({stack.accepted} frames, {stack.exposure:g} s; {row['seconds']:.1f} s)",
        )

    def _normalise(self, stack: Stack, warped: np.ndarray, light) -> tuple[float, list[float]]:
        """Normalise ``warped`` in place to the reference as the pipeline's integration does;
        returns its weight (relative to the reference's) and normalised background noise."""
        from ..integrate import FrameNorm, inverse_variance, norm_coefficients

        ic = self.cfg["integration"]
        ref = stack.ref
        pc = light.per_channel
        norm = FrameNorm(np.array([p.background for p in pc]), np.array([p.scale for p in pc]), 1.0)
        ref_norm = FrameNorm(np.array(ref["loc"]), np.array(ref["scale"]), 1.0)
        planes = warped if warped.ndim == 3 else warped[None]
        # a live stack holds one exposure: `auto` is then additive scaling (photometric scaling,
        # for mixed exposures, is the batch integration's)
        mode = "additive_scaling" if ic["normalization"] in ("auto", "photometric") else ic["normalization"]
        noise = []
        for c in range(planes.shape[0]):
            gain, offset = norm_coefficients([norm], ref_norm, mode, c)
            planes[c] *= np.float32(gain[0])
            planes[c] += np.float32(offset[0])
            noise.append(float(pc[c].noise * gain[0]))
        if ic["weights"] != "noise":
            return 1.0, noise
        w = inverse_variance(np.array([[p.noise for p in pc]]), np.array([[p.scale for p in pc]]))[0]
        return float(w / ref["weight"]), noise

    def _failed(self, stack: Stack, a: Arrival, light, row: dict, reason: str) -> None:
        """A light that does not register: after ``new_stack_after`` in a row, they start a new
        stack (the mount went elsewhere); until then they wait, unjudged, in memory."""
        row.update(reason=f"cannot register: {reason}")
        stack.failures.append((a, light, row))
        self.arrivals.taken(a.path, a.sig)
        self._say("warning", f"{a.rel}: does not register onto {stack.name}: {reason}")
        if len(stack.failures) < self.live["new_stack_after"]:
            return
        failures, stack.failures = stack.failures, []
        new = self._new_stack(stack.key)
        self._say(
            "info", f"{len(failures)} frames in a row do not register onto {stack.name}: new stack {new.name}"
        )
        for fa, fl, frow in failures:
            frow.update(reason="", status="rejected")
            self._add(new, fa, fl, frow, {})

    def _settle_failures(self, stack: Stack) -> None:
        """Frames that failed before one registered again are rejected for good."""
        for fa, _, frow in stack.failures:
            frow["status"] = "rejected"
            stack.rows.append(frow)
            self.ledger.record([self._ledger_row(fa, stack, "rejected", frow["reason"])])
        stack.failures = []

    # -- outputs ---------------------------------------------------------------------------
    def _write_table(self, stack: Stack) -> None:
        stack.dir.mkdir(parents=True, exist_ok=True)
        write_tsv([{c: r.get(c, "") for c in FRAME_COLUMNS} for r in stack.rows], stack.dir / "frames.tsv")

    def _write_images(self, stack: Stack) -> None:
        """Rewrite the stack's linear FITS and stretched JPEG (atomically)."""
        from ..stages.report import preview_image

        stack.dir.mkdir(parents=True, exist_ok=True)
        image = stack.running.image()
        image = image[0] if image.shape[0] == 1 else image
        h = stack.header.copy()
        h["IMAGETYP"] = "Master light"
        h["EXPTIME"] = (stack.key["exptime"], "[s] single-frame exposure")
        h["EXPTOTAL"] = (stack.exposure, "[s] total integrated exposure")
        h["NCOMBINE"] = (stack.accepted, "frames integrated")
        h["REFFRAME"] = (Path(stack.ref["file"]).name[:68], "registration reference")
        h["HISTORY"] = f"astroflow {__version__} live stack"
        write_fits(stack.dir / "stack.fits", image, h)
        write_8bit(stack.dir / "stack.jpg", preview_image(image, self.live["preview_width"]))
        stack.version += 1

    def _checkpoint(self, stack: Stack) -> None:
        """Write the frame table and show the new state; then, once the running statistics
        hold the frames, the checkpoint and after it the ledger lines."""
        self._write_table(stack)
        self._changed()
        if stack.running.started:
            stack.save()
            self.ledger.record(stack.unledgered)
            stack.unledgered = []
