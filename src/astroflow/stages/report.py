"""Stages ``preview`` and ``frame_plots``: what the HTML report (``snakemake --report``) shows
beside the final images: every integration, stretched, and the per-frame measurements."""

from __future__ import annotations

import numpy as np

from .. import stretch
from ..io import ADU_FULL_SCALE, atomic_path, read_image, write_8bit
from ..records import per_channel

# frames.tsv columns plotted per frame, with their axis labels
METRICS = {
    "fwhm": "FWHM [px]",
    "stars": "stars",
    per_channel("background", 0): "background [ADU]",
    "snr": "SNR",
    "weight": "weight",
}


def preview_image(img: np.ndarray, width: int = 1200) -> np.ndarray:
    """An image (ADU, NaN = no data) binned to at most ``width`` pixels wide and
    AutoSTF-stretched (linked) into [0, 1]."""
    import cv2

    img = np.nan_to_num(img, nan=0.0) / ADU_FULL_SCALE
    planes = img[None] if img.ndim == 2 else img
    step = max(1, -(-planes.shape[-1] // width))
    small = np.stack(
        [cv2.resize(p, None, fx=1 / step, fy=1 / step, interpolation=cv2.INTER_AREA) for p in planes]
    )
    return stretch.auto_stf(small[0] if img.ndim == 2 else small)


def preview(image_in, png_out, width: int = 1200) -> None:
    """An integration as a PNG at most ``width`` pixels wide (:func:`preview_image`)."""
    write_8bit(png_out, preview_image(read_image(image_in)[0], width))


def frame_plots(frames_tsv, svg_out) -> None:
    """Per-frame FWHM, stars, background, SNR and weight of a target's lights (one row of
    panels per metric, frames in path order, one colour per filter); excluded frames are marked
    with a red cross at the bottom of each panel."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "astroflow"  # fixed element ids (else a random uuid)
    import matplotlib.pyplot as plt
    import pandas as pd

    from ..integrate import frame_weights

    frames = pd.read_csv(frames_tsv, sep="\t")
    lights = frames[frames["type"] == "light"].sort_values("path").reset_index(drop=True)
    noise, scale = per_channel("noise", 0), per_channel("scale", 0)
    for col in (noise, scale, *METRICS):  # a target of stacks made elsewhere has no lights
        if col not in lights:
            lights[col] = np.nan
    ok = lights[noise].notna() & lights[scale].notna()
    lights["weight"] = np.nan
    for _, group in lights[ok].groupby("filter"):
        w = frame_weights(group[[noise]].to_numpy(), group[[scale]].to_numpy(), "noise")
        lights.loc[group.index, "weight"] = w
    fig, axes = plt.subplots(len(METRICS), 1, figsize=(9, 1.8 * len(METRICS)), sharex=True)
    x = np.arange(len(lights))
    excluded = ~lights["accepted"].astype(bool)
    for ax, (col, label) in zip(axes, METRICS.items(), strict=True):
        values = pd.to_numeric(lights[col], errors="coerce")
        for filt, group in lights.groupby("filter"):
            ax.plot(x[group.index], values[group.index], "o-", ms=3, lw=0.8, label=filt)
        if excluded.any():
            bottom = np.nanmin(values) if values.notna().any() else 0.0
            ax.plot(
                x[excluded], np.full(int(excluded.sum()), bottom), "x", color="red", ms=7, label="excluded"
            )
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper right", ncol=6, fontsize=8)
    axes[-1].set_xlabel("frame (in path order; see frames.tsv)")
    fig.tight_layout()
    with atomic_path(svg_out) as tmp:
        # no creation date in the SVG: identical runs write identical files
        fig.savefig(tmp, format="svg", metadata={"Date": None})
    plt.close(fig)
