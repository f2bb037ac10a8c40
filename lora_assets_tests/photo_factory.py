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


def _rgb(source: Path | Image.Image) -> Image.Image:
    image = source if isinstance(source, Image.Image) else Image.open(source)
    return image.convert("RGB")


def save_jpeg(image: Image.Image, target: Path, quality: int = 90) -> Path:
    image.save(target, "JPEG", quality=quality)
    return target


def variant_reencode(source: Path, target: Path, quality: int = 30) -> Path:
    """The same pixels re-saved at a low JPEG quality."""
    return save_jpeg(_rgb(source), target, quality)


def variant_downscale(source: Path, target: Path, scale: float = 0.5, quality: int = 85) -> Path:
    image = _rgb(source)
    size = (max(8, round(image.width * scale)), max(8, round(image.height * scale)))
    return save_jpeg(image.resize(size, Image.Resampling.LANCZOS), target, quality)


def variant_thumbnail(source: Path, target: Path, side: int = 160) -> Path:
    image = _rgb(source)
    image.thumbnail((side, side), Image.Resampling.LANCZOS)
    return save_jpeg(image, target, 75)


def variant_upscale(source: Path, target: Path, factor: int = 3, quality: int = 95) -> Path:
    """A 'crummy upscale': downscale by `factor`, upscale back (bigger file, less detail)."""
    image = _rgb(source)
    small = image.resize(
        (max(8, image.width // factor), max(8, image.height // factor)), Image.Resampling.BICUBIC
    )
    return save_jpeg(small.resize(image.size, Image.Resampling.BICUBIC), target, quality)


def variant_enlarge(source: Path, target: Path, factor: float = 2.0) -> Path:
    """A 'web upscale': the whole photo enlarged (bicubic) and saved losslessly (a bigger file)."""
    image = _rgb(source)
    size = (round(image.width * factor), round(image.height * factor))
    image.resize(size, Image.Resampling.BICUBIC).save(target, "PNG")
    return target


def variant_crop(source: Path, target: Path, fraction: float = 0.04, quality: int = 90) -> Path:
    """Trim `fraction` of each side."""
    image = _rgb(source)
    dx, dy = round(image.width * fraction), round(image.height * fraction)
    return save_jpeg(image.crop((dx, dy, image.width - dx, image.height - dy)), target, quality)


def variant_blur(source: Path, target: Path, radius: float = 2.5, quality: int = 90) -> Path:
    from PIL import ImageFilter

    return save_jpeg(_rgb(source).filter(ImageFilter.GaussianBlur(radius)), target, quality)


def variant_lossless(source: Path, target: Path) -> Path:
    """The original's decoded pixels as PNG (a different file, identical content)."""
    Image.open(source).save(target, "PNG")
    return target


def variant_exposure(source: Path, target: Path, stops: float) -> Path:
    """The scene shot with a different exposure (gain applied in linear light)."""
    array = np.asarray(_rgb(source), dtype=np.float64) / 255.0
    linear = np.where(array <= 0.04045, array / 12.92, ((array + 0.055) / 1.055) ** 2.4) * (2.0**stops)
    linear = np.clip(linear, 0, 1)
    srgb = np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)
    return save_jpeg(Image.fromarray((srgb * 255 + 0.5).astype(np.uint8)), target, 92)


def variant_half(source: Path, target: Path, side: str, width: float = 0.45) -> Path:
    """A non-overlapping part of one photo: its left or right `width` fraction."""
    image = _rgb(source)
    cut = round(image.width * width)
    box = (0, 0, cut, image.height) if side == "left" else (image.width - cut, 0, image.width, image.height)
    return save_jpeg(image.crop(box), target, 92)
