"""Decode one image file to 8-bit RGB, whatever its mode, with errors that name it.

Two steps, so that a warm cache never decodes pixels:

- :func:`probe` reads only the header: the displayed size (EXIF orientation
  applied), and rejects empty, unreadable and decompression-bomb files.
- :func:`load_rgb` decodes the pixels: alpha is composited on a background
  colour, 16-bit grey is scaled (not clipped) to 8 bits, palette/CMYK/grey become
  RGB, and the EXIF orientation from the same header is applied, so the result
  always has the size :func:`probe` reported.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DataError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
"""Suffixes (lower case) the dataset reads; other files in the folder are ignored."""

DEFAULT_PIXEL_LIMIT = 89_478_485
"""Pillow's own default ``MAX_IMAGE_PIXELS`` (about 9459 x 9459)."""

MAX_PIXEL_LIMIT = 2 * DEFAULT_PIXEL_LIMIT
"""Above this Pillow itself refuses to open a file (DecompressionBombError)."""

EXIF_ORIENTATION = 0x0112

_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
"""EXIF orientation -> the transpose that shows the image upright (1 = as stored)."""

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")


@dataclass(frozen=True)
class ImageInfo:
    """Header facts: ``width`` x ``height`` as displayed (after EXIF orientation)."""

    width: int
    height: int
    orientation: int
    mode: str


def probe(path: str | Path, pixel_limit: int = DEFAULT_PIXEL_LIMIT) -> ImageInfo:
    """The displayed size of ``path`` from its header alone (no pixel decode).

    Raises :class:`DataError` for an empty file, a file Pillow cannot identify,
    or one with more than ``pixel_limit`` pixels (a decompression bomb).
    """
    path = Path(path)
    with _open(path, pixel_limit) as image:
        width, height = image.size
        orientation = _orientation(image, path)
        mode = image.mode
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return ImageInfo(width, height, orientation, mode)


def load_rgb(path: str | Path, background: tuple[int, int, int] = (255, 255, 255), pixel_limit: int = DEFAULT_PIXEL_LIMIT) -> Image.Image:
    """Decode ``path`` to an upright 8-bit RGB image of the size :func:`probe` gives.

    ``background`` (0-255 RGB) shows through transparent pixels:
    ``out = alpha * pixel + (1 - alpha) * background``. Raises
    :class:`DataError` naming the file for truncated or corrupt data.
    """
    path = Path(path)
    with _open(path, pixel_limit) as image:
        orientation = _orientation(image, path)
        try:
            image.load()
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise DataError(path, f"is truncated or corrupt ({e})", "re-export or re-download the image, or remove it from the folder") from None
        rgb = to_rgb(image, background)
    if orientation in _TRANSPOSE:
        rgb = rgb.transpose(_TRANSPOSE[orientation])
    return rgb


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Any Pillow mode -> ``RGB``.

    16-bit grey (``I;16*``, and ``I`` as Pillow opens 16-bit PNGs) is scaled by
    255/65535; alpha (including palette/grey transparency) is composited on
    ``background``; CMYK, palette, grey and the rest use Pillow's conversion.
    """
    if image.mode in _SIXTEEN_BIT:
        values = np.asarray(image, dtype=np.float64)
        grey = np.clip(np.rint(values * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if image.mode in _ALPHA or "transparency" in image.info:
        rgba = image.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(base, rgba).convert("RGB")
    if image.mode == "RGB":
        return image.copy()
    return image.convert("RGB")


def _open(path: Path, pixel_limit: int) -> Image.Image:
    if not 1 <= pixel_limit <= MAX_PIXEL_LIMIT:
        raise DataError(path, f"pixel_limit = {pixel_limit} is outside [1, {MAX_PIXEL_LIMIT}]", "choose a limit Pillow can honour")
    try:
        size = path.stat().st_size
    except OSError as e:
        raise DataError(path, f"cannot be read ({e.strerror})", "check that the file exists and is readable") from None
    if size == 0:
        raise DataError(path, "is empty (0 bytes)", "re-export the image or remove it from the folder")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError as e:
        raise DataError(path, f"is larger than Pillow's decompression-bomb limit ({e})", "downscale the image") from None
    except UnidentifiedImageError:
        raise DataError(path, "is not an image Pillow can read (not PNG, JPEG or WebP data)", "convert it to PNG or JPEG, or remove it from the folder") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(path, f"cannot be opened as an image ({e})", "re-export the image or remove it from the folder") from None
    width, height = image.size
    if width * height > pixel_limit:
        image.close()
        raise DataError(path, f"is {width}x{height} = {width * height:,} pixels, above the decompression-bomb limit of {pixel_limit:,}", "downscale the image, or raise pixel_limit if you trust the file")
    if width < 1 or height < 1:
        image.close()
        raise DataError(path, f"has no pixels ({width}x{height})", "re-export the image or remove it from the folder")
    return image


def _orientation(image: Image.Image, path: Path) -> int:
    """EXIF orientation 1-8 from the header's EXIF block (1 when absent or broken).

    Reads ``info["exif"]`` only, never ``getexif()``, which decodes a whole PNG
    to look for a late EXIF chunk; probe and load therefore always agree.
    """
    raw = image.info.get("exif")
    if not raw:
        return 1
    exif = Image.Exif()
    try:
        exif.load(raw)
        value = int(exif.get(EXIF_ORIENTATION, 1))
    except (SyntaxError, ValueError, TypeError, OSError, KeyError) as e:
        logger.warning("%s: unreadable EXIF block (%s); using the image as stored", path, e)
        return 1
    return value if 1 <= value <= 8 else 1
