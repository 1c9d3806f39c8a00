"""AutoContinue: images a user edited and placed in ``OUT/<target>/edits/`` replace the
generated ones for every later step (AutoIntegrate's start images, reference/peers.md §1.4).

Names (``.fits``, ``.fit``, ``.xisf``, ``.tif`` or ``.tiff``), searched in AutoIntegrate's order
for each final image, the first complete set winning:

1. ``L_HT`` and ``RGB_HT``: stretched luminance and colour (AutoLRGB only);
2. ``RGB_HT``: a stretched colour image (AutoLRGB, AutoRGB); AutoLRGB still makes its L;
3. ``Integration_RGB``: a combined linear colour image (AutoLRGB, AutoRGB: it replaces R, G, B;
   for one-shot colour it is the channel itself);
4. ``Integration_<F>``: one linear channel (after your gradient removal, say), for any image;
   ``L_HT`` alone serves AutoMono.

An edit is made from a generated file; if that file was remade after the edit (new lights, a
changed option), the edit is stale: the final image stops with an error naming both, it never
mixes an old edit with new data (:func:`check_fresh`).
"""

from __future__ import annotations

from pathlib import Path

EDIT_SUFFIXES = (".fits", ".fit", ".xisf", ".tif", ".tiff")
COLOUR = ("R", "G", "B", "RGB")  # the channels a colour start image (RGB_HT, RGB) stands for


def find(edits_dir: str | Path, name: str) -> Path | None:
    """The edit called ``name`` (any of :data:`EDIT_SUFFIXES`), or None."""
    for suffix in EDIT_SUFFIXES:
        path = Path(edits_dir) / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


def start_images(edits_dir: str | Path, kind: str, channels: list[str]) -> dict[str, Path]:
    """The edits one final image starts from, by role: ``L_HT``, ``RGB_HT`` (stretched),
    ``RGB`` (linear combined colour) or a channel name; roles not returned come from the run.
    ``kind`` is the product's (``lrgb``, ``rgb``, ``osc``, ``mono``, ``palette``)."""
    got = {n: find(edits_dir, n) for n in ("L_HT", "RGB_HT", "Integration_RGB")}
    if kind == "lrgb" and got["L_HT"] and got["RGB_HT"]:
        return {"L_HT": got["L_HT"], "RGB_HT": got["RGB_HT"]}
    if kind == "mono" and got["L_HT"]:
        return {"L_HT": got["L_HT"]}
    starts: dict[str, Path] = {}
    if kind in ("lrgb", "rgb", "osc") and got["RGB_HT"]:
        starts["RGB_HT"] = got["RGB_HT"]
    elif kind in ("lrgb", "rgb") and got["Integration_RGB"]:
        starts["RGB"] = got["Integration_RGB"]
    for ch in channels:
        edit = find(edits_dir, f"Integration_{ch}")
        if edit and not (starts and ch in COLOUR):
            starts[ch] = edit
    return starts


def made_from(role: str, channels: list[str]) -> list[str]:
    """The product's channels a start image stands for (and was made from): the colour ones
    for ``RGB_HT``/``RGB``, L (else the mono image's channel) for ``L_HT``, else itself."""
    if role in ("RGB_HT", "RGB"):
        return [c for c in channels if c in COLOUR]
    if role == "L_HT":
        return [c for c in channels if c == "L"] or list(channels)
    return [role]


def replaced_channels(starts: dict[str, Path], channels: list[str]) -> list[str]:
    """Channels of the run a final image no longer needs, given its start images."""
    gone = {c for role in starts for c in made_from(role, channels)}
    return [c for c in channels if c in gone]


def check_fresh(edit: str | Path, generated: str | Path | None) -> None:
    """Raise if ``generated`` (the file ``edit`` replaces) was written after the edit."""
    if (
        generated
        and Path(generated).exists()
        and Path(generated).stat().st_mtime > Path(edit).stat().st_mtime
    ):
        raise ValueError(
            f"{edit} is stale: {generated}, which it replaces, was remade after it "
            "(new frames or options). Redo the edit from the new file, or delete it."
        )


def shape(path: str | Path) -> tuple[int, ...]:
    """(planes, height, width) of an image file, from its header."""
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        with tifffile.TiffFile(path) as tif:
            s = tif.pages[0].shape
        return (1, *s) if len(s) == 2 else (s[2], s[0], s[1])
    from .io import read_header

    h = read_header(path)
    return (int(h.get("NAXIS3", 1)) if h["NAXIS"] == 3 else 1, int(h["NAXIS2"]), int(h["NAXIS1"]))


def validate(starts: dict[str, Path], sources: dict[str, list[str]]) -> None:
    """Raise ``ValueError`` naming an edit that is unreadable, has the wrong number of planes
    (colour roles need 3, the others 1, one-shot colour's ``RGB`` channel 3) or a size other than
    the generated images it replaces (when they exist): checked before any job runs."""
    for role, path in starts.items():
        try:
            planes, ny, nx = shape(path)
        except Exception as exc:  # FrameError, tifffile's and astropy's errors
            raise ValueError(f"{path}: not a readable image ({exc})") from None
        want = 3 if role in ("RGB_HT", "RGB") else 1
        if planes != want:
            raise ValueError(f"{path}: {planes} plane(s), {role} needs {want}")
        for g in sources.get(role, []):
            if Path(g).exists():
                _, gy, gx = shape(g)
                if (gy, gx) != (ny, nx):
                    raise ValueError(f"{path}: size {nx}×{ny} differs from {g} ({gx}×{gy}) it replaces")
