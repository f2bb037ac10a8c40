"""Training-ready copies: oriented, sRGB, 8-bit RGB, no larger than `max_side`, never upscaled.

Lossy sources become high-quality JPEGs with full-resolution chroma (4:4:4); lossless sources
(PNG, TIFF, BMP) become PNGs. The bytes depend only on the source and the settings, so a
copy can be cached by (sha256, settings) and the dataset zip is reproducible.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageCms, ImageOps

from lora_assets.images.decode import decode_fully, exif_orientation, has_alpha, open_checked, to_rgb

COPY_VERSION = 2
LOSSLESS_FORMATS = frozenset({"PNG", "TIFF", "BMP"})
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
# LittleCMS stamps a new profile with the time it was made (header bytes 24-35): a fixed date
# makes the embedded profile, hence every copy and the zip, the same bytes on every machine.
_PROFILE_DATE = slice(24, 36)


def _undated(profile: bytes) -> bytes:
    return (
        profile[: _PROFILE_DATE.start]
        + bytes(_PROFILE_DATE.stop - _PROFILE_DATE.start)
        + profile[_PROFILE_DATE.stop :]
    )


_SRGB_BYTES = _undated(_SRGB.tobytes())


@dataclass(frozen=True)
class TrainingCopy:
    """The encoded copy and what was done to make it."""

    data: bytes
    extension: str
    width: int
    height: int
    notes: list[str] = field(default_factory=list)


def copy_name(relative_path: str, sha256: str, extension: str) -> str:
    """A flat, unique, readable file name: `more/IMG 1.JPG` -> `more__IMG-1-<sha8>.jpg`."""
    stem = relative_path.rsplit(".", 1)[0].replace("/", "__")
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-.") or "image"
    return f"{stem[:80]}-{sha256[:8]}{extension}"


def make_training_copy(source: Path, max_pixels: int, max_side: int, jpeg_quality: int) -> TrainingCopy:
    """Decode `source` and encode its training copy (see module docstring)."""
    notes: list[str] = []
    with open_checked(source, max_pixels) as image:
        decode_fully(image)
        fmt = image.format
        profile = image.info.get("icc_profile")
        alpha = has_alpha(image)
        if exif_orientation(image) != 1:
            notes.append("EXIF orientation applied")
        rgb = _to_srgb(ImageOps.exif_transpose(image), profile, notes)
    if alpha:
        notes.append("transparency flattened on white")
    if max(rgb.size) > max_side:
        before = rgb.size
        rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=3.0)
        notes.append(f"downscaled from {before[0]}x{before[1]}")
    buffer = io.BytesIO()
    if fmt in LOSSLESS_FORMATS:
        rgb.save(buffer, "PNG", icc_profile=_SRGB_BYTES, compress_level=6)
        extension = ".png"
    else:
        rgb.save(buffer, "JPEG", quality=jpeg_quality, subsampling=0, icc_profile=_SRGB_BYTES)
        extension = ".jpg"
    return TrainingCopy(buffer.getvalue(), extension, rgb.width, rgb.height, notes)


def _to_srgb(image: Image.Image, profile: bytes | None, notes: list[str]) -> Image.Image:
    """8-bit sRGB RGB: colour-managed from an embedded ICC profile when it is not sRGB already."""
    if profile:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
            name = ImageCms.getProfileDescription(source).strip()
        except (OSError, ImageCms.PyCMSError):
            notes.append("unreadable ICC profile ignored (assumed sRGB)")
            return to_rgb(image)
        if "srgb" not in name.lower() and image.mode in ("RGB", "CMYK", "L"):
            converted = ImageCms.profileToProfile(
                image,
                source,
                _SRGB,
                renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
                outputMode="RGB",
                flags=ImageCms.Flags.BLACKPOINTCOMPENSATION,
            )
            if converted is not None:
                notes.append(f"converted from {name} to sRGB")
                return converted
    if image.mode == "CMYK":
        notes.append("CMYK without a profile: approximate conversion to sRGB")
    return to_rgb(image)
