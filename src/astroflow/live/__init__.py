"""``astroflow live``: watch the folder a capture program writes to and keep a calibrated,
registered, outlier-rejected stack of each target up to date, shown on a web page.

It is not a Snakemake run, but every frame goes through the pipeline's own functions
(:func:`astroflow.stages.calibrate.calibrate_frame`, :mod:`astroflow.register`, the
normalisation and weights of :mod:`astroflow.integrate`, the leave-one-out sigma clipping that
starts each stack, AutoSTF), so a night's live stack is what the pipeline makes of its frames.

Modules, one job each: :mod:`.watch` (which files are completely written), :mod:`.ledger`
(what is done, for restarts), :mod:`.masters` (calibration frames into matched masters),
:mod:`.running` (the running stack and its rejection), :mod:`.session` (one frame at a time),
:mod:`.server` (the page, ``/api/status`` and the live event stream).
"""

# the config sections live reads (tests check every option is read somewhere)
OPTIONS = ("live", "calibration", "cosmetic", "debayer", "registration", "integration")
