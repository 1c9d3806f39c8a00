"""The workflow's stages: one function per Snakemake rule, named like the rule.

Each stage reads its input files, calls the library, and writes its outputs atomically, recording
every decision (excluded frames and why) in a TSV next to its images. :data:`STAGES` declares,
for every rule, the function it runs and the options it reads; its code is the stage function's
module and everything that module imports inside astroflow (:func:`astroflow.options.code_hash`).
The workflow puts exactly those options and that hash in the rule's ``params:``, so a changed
option or module reruns only the jobs it can affect. ``astroflow live`` calls the same functions.

Modules a stage alone needs (compiled kernels, numba for RCD, pandas, scipy) are imported inside it: every job pays
its module's imports, and a small night's run is mostly job start-ups.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    """``module:function`` a rule runs, the dotted options it reads (a section name means the
    whole section) and the stages whose outputs it consumes (their options are part of its
    HISTORY: everything that shaped its output)."""

    function: str
    options: tuple[str, ...] = ()
    after: tuple[str, ...] = ()

    @property
    def module(self) -> str:
        return self.function.split(":")[0]


_LIGHTS = ("master", "calibrate")
_REGISTRATION = (
    "registration.transform",
    "registration.min_matches",
    "registration.max_rms",
    "registration.clamping",
    "registration.interpolation",
    "subframes",
)
_CHANNELS = (*_LIGHTS, "integrate", "crop_area", "gradient")

STAGES: dict[str, Stage] = {
    "master": Stage(
        "astroflow.stages.master:master",
        (
            "calibration.master_rejection",
            "calibration.equalize_cfa",
            "cosmetic.hot_sigma",
            "cosmetic.cold_sigma",
        ),
    ),
    "calibrate": Stage(
        "astroflow.stages.calibrate:calibrate",
        (
            "cosmetic.enabled",
            "cosmetic.auto_detect",
            "cosmetic.auto_sigma",
            "debayer.method",
            "registration.detection_sigma",
        ),
        ("master",),
    ),
    "reference": Stage("astroflow.stages.register:reference", ("subframes",), ("calibrate",)),
    "integrate": Stage(
        "astroflow.stages.integrate:integrate",
        (
            *_REGISTRATION,
            "integration.rejection",
            "integration.params",
            "integration.normalization",
            "integration.weights",
            "integration.combination",
            "integration.grow",
            "integration.grow_sigma",
            "integration.grow_seed",
        ),
        _LIGHTS,
    ),
    "frames_table": Stage("astroflow.stages.frames_table:frames_table", _REGISTRATION, _LIGHTS),
    "provenance": Stage("astroflow.stages.provenance:provenance"),
    "crop_area": Stage("astroflow.stages.crop:crop_area", ("crop",), (*_LIGHTS, "integrate")),
    "crop_channel": Stage("astroflow.stages.crop:crop_channel", (), ("crop_area",)),
    "gradient": Stage(
        "astroflow.stages.gradient:gradient", ("gradient",), (*_LIGHTS, "integrate", "crop_area")
    ),
    "preview": Stage("astroflow.stages.report:preview", (), (*_LIGHTS, "integrate")),
    "frame_plots": Stage("astroflow.stages.report:frame_plots", (), _LIGHTS),
    "final_image": Stage(
        "astroflow.finish:final_image",
        (
            "colour",
            "combination",
            "narrowband",
            "narrowband_rgb",
            "noise_reduction",
            "stretch",
            "nonlinear",
            "stars",
            "output",
        ),
        _CHANNELS,
    ),
}

# Options read when the workflow is planned (classification, masters, chunks, which images to
# make) or sized (resources), not by a stage: a change reaches jobs through the plan.
PLAN_OPTIONS = (
    "data",
    "out",
    "batch_size",
    "osc",
    "bayer_pattern",
    "overrides",
    "calibration.dark_temperature_tolerance",
    "calibration.dark_scaling",
    "registration.reference_filter",
    "integration.memory_mb",
    "gradient.enabled",
)
