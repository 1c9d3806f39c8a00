"""Stages ``crop_area`` and ``crop_channel``: the common area every integration of a target
covers, and one integration cropped to it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from astropy.io import fits

from .. import crop
from ..io import atomic_path, read_image, write_fits

log = logging.getLogger("astroflow")


def crop_area(coverages: list[str], info_out, cfg: dict) -> tuple[int, int, int, int]:
    """One common-area rectangle for all integrations of a target (the whole image when
    disabled); an integration of no frame (a filter that failed) is left out, with a warning."""
    from .integrate import empty_reason

    covs = []
    for path in coverages:
        cov, header, _ = read_image(path)
        why = empty_reason(header)
        if why:
            log.warning("%s: left out of the common area (%s)", path, why)
        else:
            covs.append(cov)
    if not covs:
        raise ValueError(f"no integration holds a frame ({', '.join(coverages)}): see frames.tsv")
    shapes = {c.shape for c in covs}
    if len(shapes) > 1:
        raise ValueError(f"integrations of one target differ in size ({', '.join(coverages)})")
    ny, nx = covs[0].shape
    rect = (
        crop.common_area(covs, cfg["crop"]["tolerance_frames"]) if cfg["crop"]["enabled"] else (0, ny, 0, nx)
    )
    with atomic_path(info_out) as tmp:
        Path(tmp).write_text(
            json.dumps({"enabled": cfg["crop"]["enabled"], "y0_y1_x0_x1": list(rect), "from": [ny, nx]})
        )
    log.info("common area y %d:%d x %d:%d of %d×%d", *rect, nx, ny)
    return rect


def crop_channel(image_path, info_path, image_out):
    """Apply the target's rectangle to one integration (WCS reference pixel shifted with it)."""
    from .integrate import empty_reason

    info = json.loads(Path(info_path).read_text())
    rect = tuple(info["y0_y1_x0_x1"])
    img, header, _ = read_image(image_path)
    if empty_reason(header):
        raise ValueError(f"{empty_reason(header)} (see frames.tsv): the images that need it are not made")
    if list(img.shape[-2:]) != info["from"]:
        raise ValueError(
            f"{image_path}: size {img.shape[-1]}×{img.shape[-2]} differs from the target's other integrations"
        )
    h = header.copy()
    h["AUTOCROP"] = (bool(info["enabled"]), "cropped to the common area")
    h["CROPRECT"] = (",".join(map(str, rect)), "y0,y1,x0,x1 in the integration (0-based, end excl.)")
    _shift_wcs(h, rect[0], rect[2])
    write_fits(image_out, crop.apply(img, rect), h)


def _shift_wcs(header: fits.Header, dy: int, dx: int):
    if "CRPIX1" in header:
        header["CRPIX1"] = header["CRPIX1"] - dx
        header["CRPIX2"] = header["CRPIX2"] - dy
