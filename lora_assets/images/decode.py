"""Opening photos safely: header checks, EXIF orientation, fast reduced decodes, RGB conversion.

Every stage opens images through here, so a broken file fails the same way everywhere: as an
`ImageRejected` carrying a short reason category and a human detail naming the problem.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError
from pywuffs import ImageDecoderType, PixelFormat
from pywuffs.aux import ImageDecoder, ImageDecoderConfig

pillow_heif.register_heif_opener()  # HEIC/HEIF photos (phones) open like any other format

# Modes we can turn into 8-bit RGB faithfully. "F" (float) and exotic modes have no agreed scale.
SUPPORTED_MODES = frozenset(
    {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB",
     "I", "I;16", "I;16L", "I;16B", "I;16N"}
)  # fmt: skip
_SWAPPED_ORIENTATIONS = frozenset({5, 6, 7, 8})
_WUFFS_FORMATS = {"L": PixelFormat.Y, "RGB": PixelFormat.RGB, "RGBA": PixelFormat.RGBA_NONPREMUL}


class ImageRejected(Exception):
    """A file that cannot be used as a photo. `reason` is a short category for tables."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)  # both in args, so it survives pickling to and from workers
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


def open_checked(path: Path, max_pixels: int) -> Image.Image:
    """Open `path` lazily (header only), rejecting empty files, non-images, bombs and odd modes."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageRejected("unreadable", str(exc)) from exc
    if size == 0:
        raise ImageRejected("empty file", "the file has zero bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise ImageRejected("decompression bomb", str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise ImageRejected("not an image", "no image format recognises this file's content") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected("corrupt", f"cannot read the header: {exc}") from exc
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise ImageRejected(
            "decompression bomb",
            f"{width}x{height} = {width * height / 1e6:.0f} MP exceeds the limit of "
            f"{max_pixels / 1e6:.0f} MP ([ingest] max_pixels)",
        )
    if image.mode not in SUPPORTED_MODES:
        image.close()
        raise ImageRejected("unsupported mode", f"pixel mode {image.mode!r} cannot be converted to RGB")
    return image


def decode_fully(image: Image.Image) -> None:
    """Decode every pixel once, turning truncation and corruption into `ImageRejected`."""
    try:
        image.load()
    except OSError as exc:
        message = str(exc)
        reason = "truncated" if "truncated" in message or "premature end" in message.lower() else "corrupt"
        raise ImageRejected(reason, message) from exc
    except (SyntaxError, ValueError, EOFError) as exc:
        raise ImageRejected("corrupt", str(exc) or type(exc).__name__) from exc


def exif_orientation(image: Image.Image) -> int:
    """EXIF orientation 1-8 (1 when absent or unreadable).

    Pillow reads a PNG's EXIF, which may follow the pixels, by decoding it: that decode happens
    here through `decode_fully`, so that a broken PNG fails as `ImageRejected` rather than as
    'no orientation' (and a second load then passes with half its pixels missing)."""
    if image.format == "PNG" and "exif" not in image.info:
        decode_fully(image)
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # noqa: BLE001 - broken EXIF must not reject an otherwise good photo
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def oriented_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) as displayed, i.e. after applying the EXIF orientation."""
    width, height = image.size
    if exif_orientation(image) in _SWAPPED_ORIENTATIONS:
        return height, width
    return width, height


def draft_for(image: Image.Image, target: int) -> None:
    """Ask the JPEG decoder for a DCT-scaled decode (1/2, 1/4, 1/8) with both sides >= `target`.

    A 1/8 decode of a 24 MP JPEG costs a small fraction of a full one; other formats ignore this.
    """
    if image.format == "JPEG" and image.mode in ("RGB", "L", "CMYK", "YCbCr"):
        factor = draft_factor(*image.size, target)
        if factor >= 2:
            image.draft(image.mode, (image.width // factor, image.height // factor))


def draft_factor(width: int, height: int, target: int) -> int:
    """The DCT scaling (1, 2, 4 or 8) a JPEG of this size gets from `draft_for`: other formats
    are box-reduced by it, so that a PNG copy of a JPEG hashes from the same pixel grid."""
    scale = max(1, min(width, height) // max(target, 1))
    return next(factor for factor in (8, 4, 2, 1) if factor <= scale)


def to_rgb(image: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """8-bit RGB: 16-bit scaled (not clipped), alpha flattened on `background`, palettes expanded."""
    mode = image.mode
    if mode.startswith("I"):
        array = np.asarray(image, dtype=np.float64)
        if array.max(initial=0) > 255:
            array = array / 257.0
        image = Image.fromarray(np.clip(array + 0.5, 0, 255).astype(np.uint8), mode="L")
        mode = "L"
    if mode in ("P", "PA"):
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("LA", "La", "RGBA", "RGBa"):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, background)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return image if mode == "RGB" else image.convert("RGB")


def has_alpha(image: Image.Image) -> bool:
    """Whether the image carries transparency (an alpha band or a transparent palette entry)."""
    return image.mode in ("LA", "La", "RGBA", "RGBa", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )


@dataclass(frozen=True)
class Decoded:
    """An oriented RGB decode (possibly DCT-reduced) and what the file itself says."""

    image: Image.Image
    native_size: tuple[int, int]
    format: str | None
    quantization: dict[int, list[int]] | None


def decode_oriented(
    path: Path, max_pixels: int, draft_side: int | None = None, gray: bool = False, reduce: int = 1
) -> Decoded:
    """Open, apply EXIF orientation, and return RGB (or 8-bit grey with `gray`: JPEGs then decode
    straight to grey). Reduced decodes: `draft_side` keeps the short side >= that many pixels;
    `reduce` divides both sides by 1, 2, 4 or 8 (JPEG in the DCT, other formats after decoding)."""
    with open_checked(path, max_pixels) as image:
        fmt = image.format
        tables = dict(getattr(image, "quantization", None) or {}) if fmt == "JPEG" else None
        jpeg_draftable = fmt == "JPEG" and image.mode in ("RGB", "YCbCr", "L")
        pixels = png_by_wuffs(image, path)
        native = oriented_size(image if pixels is None else pixels)
        if pixels is None:
            if draft_side:
                draft_for(image, draft_side)
            elif jpeg_draftable and (gray or reduce > 1):
                size = (image.width // reduce, image.height // reduce)
                image.draft("L" if gray else image.mode, size)
            decode_fully(image)
            pixels = image
        # exif_transpose copies even an upright image: a 9 MP copy costs as much as hashing it.
        oriented = ImageOps.exif_transpose(pixels) if exif_orientation(pixels) != 1 else pixels
        if gray:
            converted = oriented if oriented.mode == "L" else to_rgb(oriented).convert("L")
        else:
            converted = to_rgb(oriented)
        if reduce > 1 and not jpeg_draftable:
            converted = converted.reduce(reduce)
    return Decoded(converted, native, fmt, tables)


def png_by_wuffs(image: Image.Image, path: Path) -> Image.Image | None:
    """An 8-bit L, RGB or RGBA PNG (not interlaced) decoded by Wuffs, 1.8x as fast as Pillow's
    decoder (a PNG's decode is most of what hashing it costs), with the same pixels and `info`.

    None for anything else, and for a file Wuffs refuses or whose chunks fail their CRC: Pillow
    then decodes it and names the problem. Also None when an eXIf chunk follows the pixels: only
    Pillow's full decode reads it."""
    if image.format != "PNG" or image.mode not in _WUFFS_FORMATS or image.info.get("interlace"):
        return None
    if len(image.tile) != 1 or image.tile[0].args != image.mode:  # 16-bit and packed samples
        return None
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if ("exif" not in image.info and b"eXIf" in data) or not _chunks_intact(data):
        return None
    config = ImageDecoderConfig()
    config.enabled_decoders = [ImageDecoderType.PNG]
    config.pixel_format = _WUFFS_FORMATS[image.mode]
    decoded = ImageDecoder(config).decode(data)
    if (
        decoded.error_message
        or decoded.pixbuf is None
        or decoded.pixbuf.shape[:2] != (image.height, image.width)
    ):
        return None
    pixels = Image.fromarray(decoded.pixbuf[:, :, 0] if image.mode == "L" else decoded.pixbuf)
    pixels.info.update(image.info)  # the EXIF orientation, as Pillow's decode would carry it
    return pixels


def _chunks_intact(data: bytes) -> bool:
    """Whether every chunk of a PNG matches its CRC: Wuffs does not check them, so a damaged file
    would decode to wrong pixels where Pillow rejects it."""
    offset = 8
    try:
        while offset + 12 <= len(data):
            (length,) = struct.unpack_from(">I", data, offset)
            end = offset + 8 + length
            (crc,) = struct.unpack_from(">I", data, end)
            if zlib.crc32(data[offset + 4 : end]) != crc:
                return False
            offset = end + 4
    except struct.error:  # a chunk runs past the end
        return False
    return offset == len(data)


def load_oriented_rgb(path: Path, max_pixels: int, draft_side: int | None = None) -> Image.Image:
    """Open, optionally DCT-reduce to about `draft_side` px, apply EXIF orientation, return RGB."""
    return decode_oriented(path, max_pixels, draft_side).image
