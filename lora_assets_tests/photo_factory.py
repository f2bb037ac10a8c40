"""Files a real photo folder contains: good photos in awkward encodings and broken ones.

Everything is made from the bundled real photos, so the pixels are photographic."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def save_truncated_jpeg(source: Path, target: Path, keep: float = 0.5) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * keep)])
    return target


def save_cmyk_jpeg(source: Path, target: Path) -> Path:
    Image.open(source).convert("CMYK").save(target, "JPEG", quality=92)
    return target


def save_png16(source: Path, target: Path) -> Path:
    """A 16-bit grayscale PNG (full 0-65535 range, so naive conversion would clip)."""
    gray = np.asarray(Image.open(source).convert("L"), dtype=np.uint16) * 257
    Image.fromarray(gray.astype(np.uint16)).save(target, "PNG")
    return target


def save_rotated_jpeg(source: Path, target: Path, orientation: int = 6) -> Path:
    """Stored landscape pixels with an EXIF orientation that displays them rotated."""
    image = Image.open(source).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(target, "JPEG", quality=90, exif=exif.tobytes())
    return target


def save_float_tiff(source: Path, target: Path) -> Path:
    """A 32-bit float TIFF: a mode with no agreed 8-bit scale (rejected as unsupported)."""
    Image.open(source).convert("F").save(target, "TIFF")
    return target


def save_bomb_png(target: Path, side: int = 12_000) -> Path:
    """A tiny file that decodes to side*side pixels."""
    Image.new("1", (side, side)).save(target, "PNG")
    return target


def save_resaved(source: Path, target: Path, scale: float = 1.0, quality: int = 75) -> Path:
    image = Image.open(source).convert("RGB")
    if scale != 1.0:
        image = image.resize(
            (round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS
        )
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    target.write_bytes(buffer.getvalue())
    return target
