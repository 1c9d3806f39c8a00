"""astroflow: calibrate, register and integrate astrophotography frames (library behind the workflow)."""

__version__ = "0.1.0"
