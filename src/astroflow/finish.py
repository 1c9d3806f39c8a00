"""The final image (AutoIntegrate's post-integration workflows), stage ``final_image``.

One final image — ``AutoLRGB``, ``AutoRGB``, ``AutoMono`` or ``Auto_<palette>`` — from the
channel files (cropped by :mod:`astroflow.stages.crop`, gradient-corrected by
:mod:`astroflow.stages.gradient`, or a user's edit): linear fit, combination, background
neutralization and colour calibration, linear noise reduction, stretch, saturation, LRGB
lightness replacement, SCNR, sharpening, optional star removal/reduction; written as 32-bit FITS
(stretched, and ``_linear`` where meaningful), XISF, 16-bit TIFF, PNG and JPEG.

Linear channel images are ADU (65535 = full scale) until ``final_image`` maps them to [0, 1].
"""

from __future__ import annotations

import logging

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from . import colour, combine, edits, enhance, palettes, platesolve, stars, stretch
from .io import (
    ADU_FULL_SCALE,
    add_history,
    atomic_path,
    copy_wcs,
    read_image,
    write_8bit,
    write_fits,
    write_xisf,
)
from .numerics import median
from .products import RGB_FILTERS

log = logging.getLogger("astroflow")

# ---------------------------------------------------------------------------------------------
# The final image


def final_image(
    name: str,
    spec: dict,
    channel_paths: dict[str, str],
    outputs: dict[str, str],
    cfg,
    history,
    sources: dict[str, list[str]] | None = None,
):
    """Build one final image (module doc) and write every requested format.

    ``channel_paths`` maps the product's channels to their files and, for a user's start images
    (:mod:`astroflow.edits`), ``L_HT``/``RGB_HT`` (stretched) or ``RGB`` (linear colour) to
    theirs; ``sources`` maps each edit to the generated files it was made from (a stale edit is
    an error, never mixed with newer data).
    """
    for role, generated in (sources or {}).items():
        for g in generated:
            edits.check_fresh(channel_paths[role], g)
    chans, headers = {}, {}
    for k, p in channel_paths.items():
        img, h, _ = read_image(p)
        if not np.isfinite(img).all():
            log.warning("%s: %d non-finite pixels set to 0", p, int((~np.isfinite(img)).sum()))
        chans[k], headers[k] = np.nan_to_num(img) / np.float32(ADU_FULL_SCALE), h
        if k in ("L_HT", "RGB_HT", "RGB") or k not in spec["channels"]:
            log.info("AutoContinue: %s from %s", k, p)
    shapes = {v.shape[-2:] for v in chans.values()}
    if len(shapes) > 1:
        sizes = ", ".join(f"{k} {v.shape[-1]}×{v.shape[-2]}" for k, v in chans.items())
        raise ValueError(
            f"{name}: channel images differ in size ({sizes}): {', '.join(channel_paths.values())}"
        )
    st, kind = cfg["stretch"], spec["kind"]
    notes: dict[str, object] = {"STRETCH": st["method"]}
    started = [k for k in ("L_HT", "RGB_HT", "RGB") if k in chans]
    if started:
        notes["AUTOCONT"] = (",".join(started), "started from the user's edits")
    if kind == "mono":
        if "L_HT" in chans:
            linear = final = chans["L_HT"]
        else:
            (mono,) = (v for k, v in chans.items() if k in spec["channels"])
            linear = mono = _denoise(mono, cfg)
            final = stretch.apply(stretch.normalise(mono, 0.0, 1.0), st["method"], st)
    elif kind == "palette":
        final, linear = _palette(spec, chans, cfg, notes)
    else:
        if "RGB_HT" in chans:
            linear = final = chans["RGB_HT"]
        else:
            if kind == "osc":
                rgb = np.asarray(chans["RGB"], np.float32)
            elif "RGB" in chans:
                rgb = np.asarray(chans["RGB"], np.float32)
            else:
                if spec.get("nb_rgb"):
                    nr = cfg["narrowband_rgb"]
                    chans, mapped = combine.add_narrowband(
                        chans, spec["nb_rgb"], nr["boost"], nr["bandwidth"]
                    )
                    notes["NBRGB"] = "; ".join(mapped)
                    for m in mapped:
                        (log.warning if "skipped" in m else log.info)("narrowband RGB mapping: %s", m)
                fitted = combine.fit_channels(
                    {k: chans[k] for k in RGB_FILTERS}, cfg["combination"]["linear_fit"]
                )
                rgb = combine.rgb(fitted["R"], fitted["G"], fitted["B"])
            rgb = _colour(rgb, next(iter(headers.values())), cfg, notes)
            linear = rgb = _denoise(rgb, cfg)
            linked = st["linked"] if st["linked"] != "auto" else kind != "osc"
            final = stretch.apply(rgb, st["method"], st, linked=bool(linked))
            final = enhance.saturation(final, cfg["nonlinear"]["saturation"])
        if kind == "lrgb":
            lum_st = (
                chans["L_HT"]
                if "L_HT" in chans
                else stretch.apply(_denoise(chans["L"], cfg), st["method"], st)
            )
            c = cfg["combination"]
            final = combine.lrgb(lum_st, final, c["lrgb_lightness"], c["lrgb_saturation"])
        if cfg["nonlinear"]["scnr"] > 0:
            final = enhance.scnr(final, cfg["nonlinear"]["scnr"])
    if kind == "palette" and cfg["nonlinear"]["scnr_narrowband"] > 0:
        final = enhance.scnr(final, cfg["nonlinear"]["scnr_narrowband"])
    nl = cfg["nonlinear"]
    final = enhance.acdnr(final, nl["noise_reduction"], nl["noise_reduction_lightness"])
    if nl["sharpen"]:
        final = enhance.sharpen(final)
    if st["method"] != "none":
        sky = stars.star_mask(final) < 0.05
        planes = final if final.ndim == 3 else final[None]
        final = stretch.match_background(final, st["target_background"], [median(p[sky]) for p in planes])
    final, star_files = _stars(final, cfg, notes)
    header = _header(headers, name, notes, history)
    for role, data in star_files.items():
        write_fits(outputs[role], data, header)
    write_fits(outputs["fits"], final.astype(np.float32), header)
    if "linear" in outputs:
        write_fits(outputs["linear"], np.asarray(linear, np.float32), header)
    _write_formats(final, outputs, header, cfg)
    return notes


def _palette(spec, chans, cfg, notes):
    nb = cfg["narrowband"]
    own = {k: v for k, v in nb["custom"].items() if k == spec["palette"]}  # others may be broken
    pal = palettes.resolve([spec["palette"]], set(chans), own)[0]
    used = {k: chans[k] for k in pal.channels()}
    notes["PALETTE"] = pal.name
    notes["NARROWBD"] = True
    st = cfg["stretch"]
    if pal.stretched:  # Foraxx: map stretched channels; the linear file maps linear ones
        stretched = {k: stretch.apply(v, st["method"], st) for k, v in used.items()}
        return palettes.apply(pal, stretched), palettes.apply(pal, used)
    fit = nb["linear_fit"]
    if fit == "auto":
        fit = "none" if st["method"] in ("auto_stf", "histogram") else "min"
    used = combine.fit_channels(used, fit)
    rgb = palettes.apply(pal, used)
    rgb = _denoise(rgb, cfg)
    linked = st["linked"] if st["linked"] != "auto" else fit != "none"
    final = stretch.apply(rgb, st["method"], st, linked=bool(linked))
    return final, rgb


def _colour(rgb, header, cfg, notes):
    cc = cfg["colour"]
    if cc["background_neutralization"]:
        rgb, offsets = colour.neutralize_background(rgb)
        notes["BKGNEUT"] = ",".join(f"{o:.3g}" for o in offsets)
    method = cc["calibration"]
    if method == "photometric":
        pc = cc["photometric"]
        try:
            if not pc["catalogue"]:
                raise ValueError("colour.photometric.catalogue is not set")
            if pc["plate_solve"] and not WCS(header, naxis=2).has_celestial:
                copy_wcs(
                    platesolve.solve(rgb.mean(axis=0), header, pc["solve_field"], pc["solve_timeout"]), header
                )
                notes["PLTSOLVD"] = (True, "WCS from astrometry.net solve-field")
                log.info("plate solved with astrometry.net")
            rgb, gains, info = colour.calibrate_photometric(
                rgb, header, pc["catalogue"], pc["bands"], pc["white_bv"], pc["match_radius"]
            )
            notes["COLCAL"] = f"photometric, {info['stars']} stars, B-V {pc['white_bv']} white"
            notes["CCGAINS"] = ",".join(f"{g:.4f}" for g in gains)
            log.info("photometric colour calibration: gains %s, %s", notes["CCGAINS"], info)
            return rgb
        except ValueError as e:
            log.warning("photometric colour calibration not possible (%s): calibrating by stars", e)
            method = "stars"
    if method == "stars":
        try:
            rgb, gains = colour.calibrate_by_stars(rgb, cc["white_reference"])
            notes["COLCAL"] = "stars (average star is white_reference)"
            notes["CCGAINS"] = ",".join(f"{g:.4f}" for g in gains)
        except ValueError as e:
            log.warning("colour calibration skipped: %s", e)
            notes["CCGAINS"] = "skipped"
    return rgb


def _denoise(image, cfg):
    nr = cfg["noise_reduction"]
    return enhance.noise_reduction(image, nr["strength"], nr["mask"])


def _stars(final, cfg, notes):
    """Star removal/reduction: (recombined image, {"starless"|"stars": image} to write)."""
    sc = cfg["stars"]
    if not (sc["remove"] or sc["reduce"] != "none"):
        return final, {}
    if sc["method"] == "starnet":
        starless, star_img = stars.starnet(final, sc["starnet_command"])
    else:
        starless, star_img = stars.remove_stars(final, stars.star_mask(final, size=sc["mask_size"]))
    if sc["reduce"] == "morphological":
        star_img = stars.reduce_stars(star_img, sc["reduce_amount"])
        notes["STARRED"] = f"morphological {sc['reduce_amount']}"
    files = {"starless": starless, "stars": star_img} if sc["remove"] else {}
    if sc["remove"]:
        notes["STARLESS"] = sc["method"]
    result = stars.combine(starless, star_img, sc["combine"])
    if sc["reduce"] in ("transfer", "halo", "star"):
        result = stars.reduce_blanshan(
            result, starless, sc["reduce"], sc["reduce_strength"], sc["reduce_iterations"], sc["reduce_mode"]
        )
        notes["STARRED"] = sc["reduce"] + (
            f" S={sc['reduce_strength']}"
            if sc["reduce"] != "star"
            else f" I={sc['reduce_iterations']} M={sc['reduce_mode']}"
        )
    return result, files


def _header(headers: dict, name: str, notes: dict, history) -> fits.Header:
    first = next(iter(headers.values()))
    h = fits.Header()
    for key in (
        "OBJECT",
        "TELESCOP",
        "INSTRUME",
        "FOCALLEN",
        "XPIXSZ",
        "XBINNING",
        "YBINNING",
        "AUTOCROP",
        "CROPRECT",
    ):
        if key in first:
            h[key] = first[key]
    copy_wcs(first, h)  # the WCS, when the integration carries one
    h["IMAGETYP"] = "Master light"
    h["ASTROFLW"] = ("finalimage", "astroflow final image")
    h["PRODUCT"] = name
    h["FILTERS"] = ",".join(headers)
    h["EXPTOTAL"] = (float(sum(float(v.get("EXPTOTAL", 0)) for v in headers.values())), "[s] all channels")
    h["NCOMBINE"] = (int(sum(int(v.get("NCOMBINE", 0)) for v in headers.values())), "frames, all channels")
    for k, v in notes.items():
        h[k] = v
    return add_history(h, history)


def _write_formats(final: np.ndarray, outputs: dict, header: fits.Header, cfg: dict):
    import cv2

    img = np.clip(final, 0, 1)
    if "xisf" in outputs:
        write_xisf(outputs["xisf"], img, header, normalised=True)
    hwc = img if img.ndim == 2 else np.moveaxis(img, 0, -1)
    if "tiff" in outputs:
        import tifffile

        with atomic_path(outputs["tiff"]) as tmp:
            tifffile.imwrite(
                tmp,
                np.round(hwc * 65535).astype(np.uint16),
                photometric="minisblack" if img.ndim == 2 else "rgb",
            )
    for fmt, params in (
        ("png", []),
        ("jpeg", [cv2.IMWRITE_JPEG_QUALITY, int(cfg["output"]["jpeg_quality"])]),
    ):
        if fmt in outputs:
            write_8bit(outputs[fmt], img, params)
