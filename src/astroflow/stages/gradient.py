"""Stage ``gradient``: background model and gradient correction of one channel."""

from __future__ import annotations

from .. import background
from ..io import read_image, write_fits


def gradient(path_in, image_out, model_out, cfg: dict):
    """Background model of one channel, saved, and the corrected channel."""
    g = cfg["gradient"]
    img, header, _ = read_image(path_in)
    corrected, model, infos = background.correct(
        img, g["model"], g["degree"], g["smoothing"], g["samples_per_row"], g["correction"]
    )
    h = header.copy()
    h["GRADCORR"] = (f"{g['model']} {g['correction']}", "gradient correction")
    used = ", ".join(f"{i['samples_used']}/{i['samples']}" for i in infos)
    h["HISTORY"] = f"gradient: {g['model']} {g['correction']} ({used} samples used)"
    write_fits(model_out, model, h)
    write_fits(image_out, corrected, h)
