"""Reading and writing frames.

Conventions used throughout astroflow:

* Pixel data is ``float32`` in **ADU** (camera units). Integer FITS (uint16, int16 with
  ``BZERO``) is read as is; floating-point FITS or XISF whose values lie in [0, 1] (PixInsight's
  and many capture programs' normalised convention) is multiplied by 65535 so every frame of a
  night shares one scale. The scale applied is returned so it can be reported.
* Mono images are ``(ny, nx)``; colour images are ``(3, ny, nx)`` in R, G, B order, as FITS
  stores them (NAXIS3 = 3). Index ``[y, x]``, origin 0 at the first stored pixel (FITS row 1);
  no flip is ever applied, so ``ROWORDER`` only matters for the Bayer pattern.
* Outputs are written atomically (temporary file in the same folder, then ``os.replace``) so an
  interrupted run never leaves a half-written file that a later run would trust.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import tempfile
import warnings
from contextlib import contextmanager
from datetime import UTC
from pathlib import Path

import numpy as np
from astropy.io import fits

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.fz", ".fit.fz", ".fz")
XISF_SUFFIXES = (".xisf",)
# DSLR and mirrorless raw files, read through LibRaw (rawpy)
RAW_SUFFIXES = (".cr2", ".cr3", ".nef", ".arw", ".dng", ".raf", ".orf", ".rw2", ".pef")
IMAGE_SUFFIXES = FITS_SUFFIXES + XISF_SUFFIXES + RAW_SUFFIXES
ADU_FULL_SCALE = 65535.0


log = logging.getLogger("astroflow")


class FrameError(ValueError):
    """A file that cannot be used as a frame; the message names the file and the problem."""


def is_image_file(path: str | os.PathLike) -> bool:
    name = str(path).lower()
    return name.endswith(IMAGE_SUFFIXES)


def _is_xisf(path) -> bool:
    return str(path).lower().endswith(XISF_SUFFIXES)


def _is_raw(path) -> bool:
    return str(path).lower().endswith(RAW_SUFFIXES)


def _raw_header(raw, path) -> fits.Header:
    """A camera raw file's facts as FITS keywords: the CFA pattern of its visible area, black and
    white levels, and the EXIF exposure, ISO (as GAIN) and date. The frame type comes from the
    folder (``lights/``, ``darks/`` …), as raw files carry none."""
    colours = raw.color_desc.decode()
    cfa = raw.raw_colors_visible[:2, :2]
    header = fits.Header()
    ny, nx = raw.raw_image_visible.shape
    header["NAXIS"], header["NAXIS1"], header["NAXIS2"] = 2, nx, ny
    if raw.num_colors >= 3 and len(colours) >= 3:
        header["BAYERPAT"] = ("".join(colours[c] for c in cfa.ravel()), "CFA pattern (LibRaw)")
    black = raw.black_level_per_channel
    header["BLKLEVEL"] = (float(np.mean(black)), "[ADU] black level (LibRaw)")
    header["SATURATE"] = (float(raw.white_level), "[ADU] white level (LibRaw)")
    other = raw.other
    if other.shutter_speed > 0:
        header["EXPTIME"] = (float(other.shutter_speed), "[s] exposure (EXIF)")
    if other.iso_speed > 0:
        header["ISOSPEED"] = (float(other.iso_speed), "ISO (EXIF)")
        header["GAIN"] = (float(other.iso_speed), "ISO (EXIF)")
    if other.timestamp:
        header["DATE-OBS"] = (other.timestamp.isoformat(), "camera clock (EXIF), local time")
    header["HISTORY"] = f"read from {Path(path).name} by LibRaw"
    return header


def _read_raw(path, pixels: bool):
    import rawpy

    try:
        with rawpy.imread(str(path)) as raw:
            header = _raw_header(raw, path)
            data = np.array(raw.raw_image_visible) if pixels else None  # uint16 ADU, a copy
    except (rawpy.LibRawError, OSError, ValueError) as exc:
        raise FrameError(f"not a readable camera raw file ({type(exc).__name__}: {exc})") from None
    return data, header


def _image_hdu(hdul: fits.HDUList):
    """First HDU holding a 2-D or 3-D image (tile-compressed files keep it in extension 1)."""
    for hdu in hdul:
        if hdu.is_image and hdu.header.get("NAXIS", 0) >= 2:
            return hdu
    raise FrameError("no image data in any HDU")


def _xisf_header(meta: dict) -> fits.Header:
    header = fits.Header()
    for key, entries in meta.get("FITSKeywords", {}).items():
        for entry in entries:
            value = entry.get("value", "")
            if key in ("HISTORY", "COMMENT"):
                header.add_history(value) if key == "HISTORY" else header.add_comment(value)
                continue
            header[key] = (_parse_card_value(value), entry.get("comment", ""))
    return header


def _parse_card_value(text):
    """XISF stores FITS keyword values as strings; restore numbers and strip FITS quotes."""
    if not isinstance(text, str):
        return text
    s = text.strip()
    if s.startswith("'") and s.endswith("'") and len(s) >= 2:
        return s[1:-1].strip()
    if s in ("T", "F"):
        return s == "T"
    return parse_number(s)


def parse_number(text: str):
    """``text`` as an int, else a float, else unchanged (header and table cells)."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


# a FITS value field of plain syntax: string, logical, integer or real, then an optional comment
_VALUE = re.compile(
    r" *(?:'(?:[^'\x00-\x1f]|'')*'|[TF]|[-+]?(?:\d+\.?\d*|\.\d+)(?:[EeDd][-+]?\d+)?)? *(?:/[^\x00-\x1f]*)?$"
)


def _lenient(header: fits.Header, path) -> fits.Header:
    """``header`` without the cards whose value cannot be parsed (a malformed number, a stray
    control byte), each dropped with a warning naming the file and the card: one bad card must
    not cost the frame, let alone the night (astropy raises only when the value is used)."""
    bad = []
    for i, card in enumerate(header.cards):
        # the card as read (``card.image`` would verify and "fix" it first, 20× slower)
        image = getattr(card, "_image", None) or ""
        if image[8:10] != "= " or _VALUE.match(image, 10):
            continue  # commentary cards, and values of plain syntax
        try:
            card.value  # noqa: B018 - astropy parses a card's value only when asked
            card.verify("exception")
        except Exception as exc:  # VerifyError, ValueError: whatever the card holds
            bad.append((i, card.keyword, exc))
    for i, keyword, exc in reversed(bad):
        log.warning(
            "%s: header card %s is unparsable and ignored (%s)", path, keyword, str(exc).splitlines()[0]
        )
        del header[i]
    return header


def read_header(path: str | os.PathLike) -> fits.Header:
    """Header of the image HDU of a FITS or XISF file, without reading pixel data.

    Raises :class:`FrameError` naming the file when it is not a readable image.
    """
    path = Path(path)
    try:
        if _is_raw(path):
            return _read_raw(path, pixels=False)[1]
        if _is_xisf(path):
            from xisf import XISF

            meta = XISF(str(path)).get_images_metadata()[0]
            header = _xisf_header(meta)
            width, height, channels = meta["geometry"]
            header["NAXIS"] = 2 if channels == 1 else 3
            header["NAXIS1"], header["NAXIS2"] = width, height
            if channels > 1:
                header["NAXIS3"] = channels
            return header
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            primary = _primary_image_header(path)
            if primary is not None:
                header = _lenient(primary, path)
                _check_size(path, header)
                return header
            with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
                hdu = _image_hdu(hdul)
                header = _lenient(hdu.header.copy(), path)
                if isinstance(hdu, fits.CompImageHDU):  # its size says nothing of the image's
                    header["NAXIS1"], header["NAXIS2"] = hdu.shape[-1], hdu.shape[-2]
                else:
                    _check_size(path, header)
                return header
    except FrameError as exc:
        raise FrameError(f"{path}: {exc}") from None
    except Exception as exc:  # astropy/xisf raise many types for broken files
        raise FrameError(f"{path}: not a readable FITS/XISF image ({exc})") from None


def _primary_image_header(path: Path) -> fits.Header | None:
    """The primary header of a FITS file whose image it holds, parsed from its bytes; None when
    the image is elsewhere (NAXIS 0: an extension, tile-compressed) or the file is not plain
    FITS, for :func:`astropy.io.fits.open` to read or to explain. Without an HDU list a header
    costs a third as much, and a thousand frames are scanned at every run's start."""
    try:
        offset, cards = _primary_layout(path)
    except (FrameError, OSError):
        return None
    if cards.get("SIMPLE") != "T" or cards.get("NAXIS") not in ("2", "3"):
        return None
    with open(path, "rb") as f:
        return fits.Header.fromstring(f.read(offset).decode("ascii", "replace"))


def _check_size(path: Path, header: fits.Header) -> None:
    """Detect truncated uncompressed FITS files from the header alone (a tile-compressed
    image is checked by reading it)."""
    bitpix = abs(int(header.get("BITPIX", 16)))
    npix = 1
    for i in range(1, int(header.get("NAXIS", 0)) + 1):
        npix *= int(header.get(f"NAXIS{i}", 0))
    _require_size(path, npix * bitpix // 8)


def _require_size(path: Path, expected: int) -> None:
    size = path.stat().st_size
    if expected and size < expected:
        raise FrameError(f"file is truncated ({size} bytes, image needs at least {expected})")


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, fits.Header, float]:
    """Read pixel data as float32 ADU.

    Returns ``(data, header, scale)`` where ``scale`` is the factor applied to reach ADU (1 for
    integer data or float data already in ADU, 65535 for normalised [0, 1] data).
    """
    path = Path(path)
    plain = False
    try:
        if _is_raw(path):
            data, header = _read_raw(path, pixels=True)
        elif path.suffix.lower() in (".tif", ".tiff"):  # a user's edit (edits/): 8/16-bit or float
            import tifffile

            raw = tifffile.imread(path)
            header = fits.Header()
            data = raw if raw.ndim == 2 else np.moveaxis(raw, -1, 0)
            if raw.dtype == np.uint8:
                data = data.astype(np.float32) * np.float32(ADU_FULL_SCALE / 255)
        elif _is_xisf(path):
            from xisf import XISF

            x = XISF(str(path))
            meta = x.get_images_metadata()[0]
            raw = x.read_image(0)  # (ny, nx, channels), channels last
            header = _xisf_header(meta)
            data = np.moveaxis(raw, -1, 0)
            data = data[0] if data.shape[0] == 1 else data
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                primary = _primary_image_header(path)
                if primary is not None:
                    header, plain = _lenient(primary, path), True
                else:
                    with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
                        hdu = _image_hdu(hdul)
                        header = _lenient(hdu.header.copy(), path)
                        data = hdu.data
            if plain:  # uncompressed primary image: one read and one conversion (astropy: 3 passes)
                rows = FitsRows(path)
                data = (
                    rows[0 : rows.shape[-2]]
                    if len(rows.shape) == 2
                    else np.stack([rows[c, 0 : rows.shape[-2]] for c in range(rows.shape[0])])
                )
    except FrameError as exc:
        raise FrameError(f"{path}: {exc}") from None
    except Exception as exc:
        raise FrameError(f"{path}: not a readable FITS/XISF image ({exc})") from None
    if data is None or data.ndim not in (2, 3) or (data.ndim == 3 and data.shape[0] not in (1, 3)):
        raise FrameError(f"{path}: unsupported image shape {getattr(data, 'shape', None)}")
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    is_float = np.issubdtype(data.dtype, np.floating) if not plain else rows.bitpix < 0
    if data.dtype != np.float32 or not data.flags.writeable:
        data = np.array(data, dtype=np.float32)  # a writable copy (XISF/FITS buffers may be read-only)
    scale = 1.0
    if is_float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN frames
            hi, lo = float(np.nanmax(data)), float(np.nanmin(data))
        if np.isfinite(hi) and hi <= 1.0 and lo >= -0.01:
            scale = ADU_FULL_SCALE
            data *= np.float32(scale)
    return data, header, scale


@functools.cache
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's files are 0600; outputs follow the umask
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# celestial WCS cards (TAN and SIP distortion, as astrometry.net writes them)
WCS_PREFIXES = (
    "CTYPE",
    "CRPIX",
    "CRVAL",
    "CDELT",
    "CD1_",
    "CD2_",
    "PC1_",
    "PC2_",
    "CUNIT",
    "CROTA",
    "A_",
    "B_",
    "AP_",
    "BP_",
)
WCS_SCALARS = ("EQUINOX", "RADESYS", "LONPOLE", "LATPOLE", "WCSAXES")


# what a stack keeps of its reference frame's header (besides the WCS, copy_wcs)
STACK_KEYWORDS = (
    "OBJECT",
    "INSTRUME",
    "TELESCOP",
    "FOCALLEN",
    "XPIXSZ",
    "XBINNING",
    "YBINNING",
    "GAIN",
    "OFFSET",
)


def _is_wcs(keyword: str) -> bool:
    return keyword.startswith(WCS_PREFIXES) or keyword in WCS_SCALARS


def copy_wcs(src: fits.Header, dst: fits.Header) -> fits.Header:
    """Replace ``dst``'s WCS cards by ``src``'s (none if ``src`` has none); returns ``dst``.

    Registered frames take the reference's WCS: after warping they share its pixel grid.
    """
    for key in {c.keyword for c in dst.cards if _is_wcs(c.keyword)}:
        dst.remove(key, remove_all=True)
    for card in src.cards:
        if _is_wcs(card.keyword):
            dst[card.keyword] = (card.value, card.comment)
    return dst


def add_history(header: fits.Header, options: list[str]) -> fits.Header:
    """AutoIntegrate-style HISTORY: version, where the run's record is, then each non-default
    option. No processing date: identical runs write identical files."""
    from . import __version__

    header["HISTORY"] = f"astroflow {__version__}"
    header["HISTORY"] = "Provenance: <target>/provenance/ (config, inputs, versions)"
    if options:
        header["HISTORY"] = "Processing options:"
        for line in options:
            header["HISTORY"] = line[:70]
    else:
        header["HISTORY"] = "Using default processing options"
    return header


def _output_header(data_header: fits.Header, header: fits.Header | None) -> fits.Header:
    """``data_header`` (structural cards of the new data) plus the observation cards of ``header``.

    Structural cards of ``header`` (BITPIX, NAXISn, BZERO, BSCALE, tile compression) are dropped:
    they follow the new data. A repeated keyword keeps its last value; HISTORY and COMMENT
    cards are all kept. Built in one go: card-by-card assignment costs milliseconds per frame.
    """
    if header is None:
        return data_header
    present = set(data_header.keys())
    kept: dict = {}
    notes = []
    for card in header.cards:
        key = card.keyword
        if key in ("", "SIMPLE", "EXTEND", "BZERO", "BSCALE", "BITPIX") or key.startswith(
            ("NAXIS", "ZNAXIS")
        ):
            continue
        if key in ("HISTORY", "COMMENT"):
            notes.append(card)
        elif key.startswith("Z") and key[1:].isupper() and header.get("ZIMAGE"):
            continue
        elif key in present:
            data_header[key] = (card.value, card.comment)
        else:
            kept.pop(key, None)  # re-insert: a repeated keyword takes the last position too
            kept[key] = card
    return fits.Header(list(data_header.cards) + list(kept.values()) + notes)


def write_fits(
    path: str | os.PathLike,
    data: np.ndarray,
    header: fits.Header | None = None,
    extensions: dict[str, np.ndarray] | None = None,
):
    """Write ``data`` (float32 unless integer) as a primary-HDU FITS file, atomically.

    Only keywords that describe the observation are copied from ``header``; structural ones
    (BITPIX, NAXISn, BZERO, BSCALE) follow the new data. ``extensions`` adds named image HDUs
    (e.g. a master's defect map) after the primary one.
    """
    data = np.ascontiguousarray(data)
    if data.dtype == np.float32 and not extensions:  # the common case: by rows, no astropy copies
        with FitsWriter(path, data.shape, header) as w:
            w.write_rows(0, data)
        return
    hdu = fits.PrimaryHDU(data=data, header=_output_header(fits.PrimaryHDU(data=data).header, header))
    hdul = fits.HDUList([hdu, *(fits.ImageHDU(v, name=k) for k, v in (extensions or {}).items())])
    with atomic_path(path) as tmp:
        hdul.writeto(tmp, overwrite=True, output_verify="silentfix")


def read_extension(path: str | os.PathLike, name: str) -> np.ndarray | None:
    """The data of the image extension ``name`` of a FITS file, or None when it has none."""
    with fits.open(path, memmap=False) as hdul:
        return np.array(hdul[name].data) if name in hdul else None


@functools.lru_cache(maxsize=8)
def _float32_cards(shape: tuple[int, ...]) -> fits.Header:
    """The structural cards of a float32 primary HDU of ``shape``, from astropy itself (once
    per shape: building an HDU costs ~1 ms, a tenth of a small frame's calibration)."""
    return fits.PrimaryHDU(data=np.empty(shape, np.float32)).header  # np.empty touches no memory


class FitsWriter:
    """Write a float32 primary-HDU FITS image row band by row band, atomically.

    ``with FitsWriter(path, (ny, nx) or (C, ny, nx), header) as w: w.write_rows(y0, rows)``;
    ``rows`` is ``(r, nx)`` or ``(C, r, nx)``. The file appears at ``path`` only when the block
    ends without an error, so memory stays at one band whatever the image size.
    """

    def __init__(self, path: str | os.PathLike, shape: tuple[int, ...], header: fits.Header | None = None):
        self.path, self.shape = Path(path), tuple(int(v) for v in shape)
        self._head = _output_header(_float32_cards(self.shape).copy(), header).tostring().encode("ascii")
        self._nbytes = 4 * int(np.prod(self.shape))

    def __enter__(self):
        self._atomic = atomic_path(self.path)
        self._tmp = self._atomic.__enter__()
        self._fd = os.open(self._tmp, os.O_WRONLY)
        os.pwrite(self._fd, self._head, 0)
        pad = -(len(self._head) + self._nbytes) % 2880
        os.ftruncate(self._fd, len(self._head) + self._nbytes + pad)  # data pad: zeros, as FITS wants
        return self

    def write_rows(self, y0: int, rows: np.ndarray) -> None:
        ny, nx = self.shape[-2:]
        planes = [rows] if len(self.shape) == 2 else list(rows)
        step = max(1, 2**22 // nx)  # ~16 MB of big-endian bytes at a time, not a copy of the image
        for c, plane in enumerate(planes):
            for r in range(0, plane.shape[0], step):
                block = np.asarray(plane[r : r + step], ">f4").tobytes()
                os.pwrite(self._fd, block, len(self._head) + 4 * (c * ny * nx + (y0 + r) * nx))

    def __exit__(self, *exc):
        os.close(self._fd)
        return self._atomic.__exit__(*exc)


def write_xisf(
    path: str | os.PathLike, data: np.ndarray, header: fits.Header | None = None, normalised: bool = False
):
    """Write float32 data as a [0, 1] XISF image (PixInsight's convention); ADU unless ``normalised``."""
    from xisf import XISF

    img = np.asarray(data, dtype=np.float32) / np.float32(1.0 if normalised else ADU_FULL_SCALE)
    img = img[..., None] if img.ndim == 2 else np.moveaxis(img, 0, -1)
    keywords = {}
    for card in (header or fits.Header()).cards:
        if card.keyword and not card.keyword.startswith(("NAXIS", "BITPIX", "SIMPLE", "BZERO")):
            keywords.setdefault(card.keyword, []).append({"value": str(card.value), "comment": card.comment})
    with atomic_path(path) as tmp, _xisf_clock(_creation_time(header)):
        XISF.write(str(tmp), np.ascontiguousarray(img), image_metadata={"FITSKeywords": keywords})


def write_8bit(path: str | os.PathLike, image: np.ndarray, params=()) -> None:
    """Write a [0, 1] image (2-D, or 3 planes R, G, B) as 8-bit PNG or JPEG (by the suffix);
    ``params`` are OpenCV's encoder flags."""
    import cv2

    img = np.clip(image, 0, 1)
    hwc = img if img.ndim == 2 else np.moveaxis(img, 0, -1)[..., ::-1]  # OpenCV wants BGR
    ok, buf = cv2.imencode(Path(path).suffix, np.round(hwc * 255).astype(np.uint8), list(params))
    if not ok:
        raise RuntimeError(f"could not encode {path}")
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(buf.tobytes())


def _creation_time(header: fits.Header | None):
    """The XISF:CreationTime to write: the observation date (DATE-OBS), else SOURCE_DATE_EPOCH or
    1970-01-01 (the reproducible-builds convention), never the clock: identical runs write
    identical files."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(str((header or {})["DATE-OBS"])).replace(tzinfo=UTC)
    except (KeyError, ValueError):
        return datetime.fromtimestamp(int(os.environ.get("SOURCE_DATE_EPOCH", 0)), UTC)


@contextmanager
def _xisf_clock(when):
    """The xisf package stamps files with ``datetime.now()``; make its clock read ``when``."""
    import xisf as module

    real = module.datetime

    class Fixed(real):
        @classmethod
        def now(cls, tz=None):
            return when.astimezone(tz) if tz else when.replace(tzinfo=None)

    module.datetime = Fixed
    try:
        yield
    finally:
        module.datetime = real


_LAYOUT_KEYS = ("SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "BZERO", "BSCALE")


def _primary_layout(path: Path) -> tuple[int, dict]:
    """``(data offset, structural cards)`` of a FITS file's primary header, read from its
    80-character cards: astropy's full header parse costs a millisecond per file, which a
    1000-frame integration pays for every frame."""
    cards: dict[str, str] = {}
    with open(path, "rb") as f:
        for block_no in range(1, 1000):
            block = f.read(2880)
            if len(block) < 2880:
                break
            for k in range(0, 2880, 80):
                card = block[k : k + 80].decode("ascii", "replace")
                key = card[:8].rstrip()
                if key == "END":
                    return 2880 * block_no, cards
                if key in _LAYOUT_KEYS and card[8:10] == "= ":
                    cards[key] = card[10:].split("/")[0].strip()
    raise FrameError(f"{path}: no END card in the primary header")


class FitsRows:
    """Rows of an uncompressed primary-HDU FITS image, read from disk only when sliced.

    ``rows[y0:y1]`` (mono) or ``rows[c, y0:y1]`` (colour) returns float32 ADU (BZERO/BSCALE
    applied) with one ``pread``; nothing is mapped or cached, so reading every band of every
    frame keeps the process's memory at one band (memory maps count read pages as resident).
    Integer data is ADU; float data is taken as ADU too (astroflow's own outputs): normalised
    [0, 1] float frames must go through :func:`read_image`, which :func:`open_rows` does.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.offset, cards = _primary_layout(self.path)
        try:
            if cards.get("SIMPLE") != "T" or int(cards["NAXIS"]) not in (2, 3):
                raise FrameError(f"{self.path}: no image in the primary HDU")
            naxis = int(cards["NAXIS"])
            self.shape = tuple(int(cards[f"NAXIS{i}"]) for i in range(naxis, 0, -1))
            self.bitpix = int(cards["BITPIX"])
            self.bzero = float(cards.get("BZERO", 0))
            self.bscale = float(cards.get("BSCALE", 1))
            self._dtype = np.dtype({8: "u1", 16: ">i2", 32: ">i4", -32: ">f4", -64: ">f8"}[self.bitpix])
        except (KeyError, ValueError) as exc:
            raise FrameError(f"{self.path}: unreadable primary header ({exc})") from None
        _require_size(self.path, self.offset + int(np.prod(self.shape)) * self._dtype.itemsize)

    def __getitem__(self, key):
        c, rows = (0, key) if len(self.shape) == 2 else key
        y0, y1, _ = rows.indices(self.shape[-2])
        out = np.empty((max(0, y1 - y0), self.shape[-1]), np.float32)
        self.read_into(out, y0, c)
        return out

    def read_into(self, out: np.ndarray, y0: int, channel: int = 0) -> None:
        """Fill ``out`` (float32, ``(rows, nx)`` or flat) with rows from ``y0`` of ``channel``:
        one read and one conversion pass, straight into the caller's buffer."""
        ny, nx = self.shape[-2:]
        start = (channel * ny * nx + y0 * nx) * self._dtype.itemsize
        flat = out.reshape(-1)
        # float32 data is read straight into the caller's buffer and byte-swapped there: one
        # pass over the memory, no intermediate copy of every band of every frame
        direct = self.bitpix == -32 and flat.dtype == np.float32
        buf = flat.view(np.uint8) if direct else np.empty(flat.size * self._dtype.itemsize, np.uint8)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            done = 0
            while done < buf.size:
                got = os.preadv(fd, [buf[done:]], self.offset + start + done)
                if got == 0:
                    raise FrameError(f"{self.path}: truncated at byte {self.offset + start + done}")
                done += got
        finally:
            os.close(fd)
        if not direct:
            np.copyto(flat, buf.view(self._dtype), casting="unsafe")
        elif sys.byteorder == "little":  # FITS is big-endian
            flat.byteswap(inplace=True)
        if self.bscale != 1:
            flat *= np.float32(self.bscale)
        if self.bzero:
            flat += np.float32(self.bzero)


def open_rows(path: str | os.PathLike):
    """Band-readable frame: :class:`FitsRows` for an uncompressed integer FITS image, else the
    whole frame read by :func:`read_image` (compressed FITS, XISF, normalised float data)."""
    if not _is_xisf(path):
        try:
            rows = FitsRows(path)
            if rows.bitpix > 0:
                return rows
        except (FrameError, KeyError, OSError):
            pass
    return read_image(path)[0]
