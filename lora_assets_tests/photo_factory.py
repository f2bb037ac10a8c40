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


# Web copies (issue 10): the edits reposts, image search results and meme pages make.


def variant_mirror(source: Path, target: Path, quality: int = 88) -> Path:
    """Flipped left-right (a repost 'so the bots don't match it') and re-saved."""
    return save_jpeg(_rgb(source).transpose(Image.Transpose.FLIP_LEFT_RIGHT), target, quality)


def variant_graded(
    source: Path,
    target: Path,
    contrast: float = 1.3,
    colour: float = 1.4,
    brightness: float = 1.08,
    quality: int = 90,
) -> Path:
    """A colour grade: contrast, saturation and brightness pushed (an 'Instagram filter')."""
    from PIL import ImageEnhance

    image = ImageEnhance.Contrast(_rgb(source)).enhance(contrast)
    image = ImageEnhance.Color(image).enhance(colour)
    image = ImageEnhance.Brightness(image).enhance(brightness)
    return save_jpeg(image, target, quality)


def variant_bw(source: Path, target: Path, mode: str = "L", contrast: float = 1.0, quality: int = 90) -> Path:
    """A black-and-white conversion saved as a one-channel (`mode` "L") or an RGB JPEG."""
    from PIL import ImageEnhance

    gray = ImageEnhance.Contrast(_rgb(source).convert("L")).enhance(contrast)
    return save_jpeg(gray if mode == "L" else gray.convert("RGB"), target, quality)


def _font(size: int):
    """Pillow's default font at `size` px (its bitmap font scaled up where FreeType is missing)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # pragma: no cover - Pillow < 10.1 or no FreeType
        return None


def _text_image(text: str, height: int, colour: tuple[int, ...], max_width: int) -> Image.Image:
    """`text` as an RGBA image about `height` px tall (no wider than `max_width`)."""
    from PIL import ImageDraw

    font = _font(height)
    probe = ImageDraw.Draw(Image.new("RGBA", (1, 1)))
    if font is None:  # pragma: no cover
        box = probe.textbbox((0, 0), text)
        small = Image.new("RGBA", (box[2] + 2, box[3] + 2), (0, 0, 0, 0))
        ImageDraw.Draw(small).text((1, 1), text, fill=colour)
        scale = height / small.height
        rendered = small.resize((round(small.width * scale), height), Image.Resampling.NEAREST)
    else:
        box = probe.textbbox((0, 0), text, font=font)
        rendered = Image.new("RGBA", (box[2] - box[0] + 2, box[3] - box[1] + 2), (0, 0, 0, 0))
        ImageDraw.Draw(rendered).text((1 - box[0], 1 - box[1]), text, fill=colour, font=font)
    if rendered.width > max_width:
        scale = max_width / rendered.width
        size = (max_width, max(1, round(rendered.height * scale)))
        rendered = rendered.resize(size, Image.Resampling.LANCZOS)
    return rendered


def variant_banner(
    source: Path,
    target: Path,
    text: str = "SHARE IF YOU LOVE NATURE",
    fraction: float = 0.11,
    top: bool = False,
    opacity: float = 1.0,
    bar: tuple[int, int, int] = (20, 20, 20),
    quality: int = 90,
) -> Path:
    """A text band over the top or bottom `fraction` of the frame (same canvas): a solid bar
    (`opacity` 1) or a semi-solid one, with white text on a dark bar, black on a light one."""
    image = _rgb(source).convert("RGBA")
    band = max(8, round(image.height * fraction))
    y0 = 0 if top else image.height - band
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    overlay.paste(Image.new("RGBA", (image.width, band), (*bar, round(255 * opacity))), (0, y0))
    ink = (255, 255, 255, 255) if sum(bar) < 3 * 128 else (0, 0, 0, 255)
    words = _text_image(text, round(band * 0.55), ink, round(image.width * 0.9))
    overlay.alpha_composite(words, ((image.width - words.width) // 2, y0 + (band - words.height) // 2))
    return save_jpeg(Image.alpha_composite(image, overlay).convert("RGB"), target, quality)


def variant_caption(
    source: Path,
    target: Path,
    text: str = "when the photo is just right",
    fraction: float = 0.14,
    top: bool = True,
    quality: int = 90,
) -> Path:
    """A meme-style caption: a white strip `fraction` of the photo's height with black text,
    added above (`top`) or below the photo (a taller canvas; the photo itself is untouched)."""
    image = _rgb(source)
    strip = max(8, round(image.height * fraction))
    canvas = Image.new("RGB", (image.width, image.height + strip), (255, 255, 255))
    canvas.paste(image, (0, strip if top else 0))
    words = _text_image(text, round(strip * 0.5), (0, 0, 0, 255), round(image.width * 0.92))
    y0 = 0 if top else image.height
    canvas.paste(words, ((image.width - words.width) // 2, y0 + (strip - words.height) // 2), words)
    return save_jpeg(canvas, target, quality)


def variant_watermark(
    source: Path,
    target: Path,
    text: str = "@photo.daily",
    area: float = 0.05,
    corner: str = "bottom-right",
    opacity: float = 0.55,
    colour: tuple[int, int, int] | None = None,
    quality: int = 90,
) -> Path:
    """A semi-transparent logo (a ring and a handle) in one corner, covering about `area` of
    the frame; white on a dark corner and near-black on a light one unless `colour` is given."""
    from PIL import ImageDraw

    image = _rgb(source).convert("RGBA")
    box_h = max(8, round((area * image.width * image.height / 3.0) ** 0.5))
    box_w = min(image.width - 4, 3 * box_h)
    margin = max(2, round(min(image.size) * 0.02))
    x = max(0, margin if "left" in corner else image.width - box_w - margin)
    y = max(0, margin if "top" in corner else image.height - box_h - margin)
    if colour is None:
        patch = image.crop((x, y, x + box_w, y + box_h)).convert("L")
        colour = (255, 255, 255) if np.asarray(patch).mean() < 140 else (25, 25, 25)
    logo = Image.new("RGBA", (box_w, box_h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(logo)
    alpha = round(255 * opacity)
    ring = max(1, box_h // 12)
    draw.ellipse((ring, ring, box_h - ring, box_h - ring), outline=(*colour, alpha), width=ring)
    draw.ellipse((box_h // 3, box_h // 3, box_h - box_h // 3, box_h - box_h // 3), fill=(*colour, alpha))
    words = _text_image(text, round(box_h * 0.4), (*colour, alpha), box_w - box_h - ring)
    logo.alpha_composite(words, (box_h + ring, (box_h - words.height) // 2))
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    overlay.alpha_composite(logo, (x, y))
    return save_jpeg(Image.alpha_composite(image, overlay).convert("RGB"), target, quality)


def variant_sharpened_upscale(
    source: Path, target: Path, factor: float = 1.8, percent: int = 140, quality: int = 90
) -> Path:
    """An 'enhanced' copy: enlarged `factor` times (bicubic), then an unsharp mask."""
    from PIL import ImageFilter

    image = _rgb(source)
    size = (round(image.width * factor), round(image.height * factor))
    big = image.resize(size, Image.Resampling.BICUBIC)
    return save_jpeg(
        big.filter(ImageFilter.UnsharpMask(radius=2, percent=percent, threshold=2)), target, quality
    )


def variant_denoised(source: Path, target: Path, size: int = 3, quality: int = 90) -> Path:
    """A 'noise-reduced' copy: a median filter of `size` (same pixel size, smoothed detail)."""
    from PIL import ImageFilter

    return save_jpeg(_rgb(source).filter(ImageFilter.MedianFilter(size)), target, quality)


def variant_crop_offset(
    source: Path,
    target: Path,
    fraction: float = 0.08,
    shift: tuple[float, float] = (0.5, 0.5),
    quality: int = 90,
) -> Path:
    """Trim `fraction` of the width and of the height, split between the two sides of each by
    `shift` (0: all from the right/bottom, 1: all from the left/top)."""
    image = _rgb(source)
    cut_x, cut_y = round(image.width * fraction), round(image.height * fraction)
    left, top = round(cut_x * shift[0]), round(cut_y * shift[1])
    box = (left, top, image.width - (cut_x - left), image.height - (cut_y - top))
    return save_jpeg(image.crop(box), target, quality)


def variant_webp(source: Path, target: Path, quality: int = 78) -> Path:
    """A lossy WebP copy (what image CDNs serve)."""
    _rgb(source).save(target, "WEBP", quality=quality, method=4)
    return target
