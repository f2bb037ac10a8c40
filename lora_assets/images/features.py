"""Per-image features for near-duplicate search, from one reduced decode (JPEG DCT scaling to ≈256 px).

- `phash` (primary) and `dhash` (secondary): 64-bit perceptual hashes, `imagehash`'s (pHash
  computed here, bit for bit, see `perceptual_hash`);
- `phash_center`: pHash of the central 84 %, which is what a copy trimmed by a few % a side
  hashes like, so crop candidates are found by the same popcount search;
- `phash_mirror`: pHash of the frame flipped left-right, so a mirrored repost is a candidate;
- `phash_strip` and `strip`: pHash of the frame without a plain caption strip along its top or
  bottom edge (a meme caption on a taller canvas), and that strip's share of the height;
- `grid`: a 32x32 colour layout (cell means), the score image viewers' "find duplicates" use;
- `thumb`: an RGB thumbnail (long side 128 px, aspect kept) for crop-aware verification.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image

from lora_assets.images.decode import decode_oriented, draft_factor
from lora_assets.images.jpeg_quality import estimate_jpeg_quality

HASH_DECODE_SIDE = 256
GRID_SIDE = 32
THUMB_SIDE = 128
CENTER_KEEP = 0.84
FEATURES_VERSION = 6
# A caption strip: at least 5 % of the height, rows of almost one flat colour.
STRIP_MIN, STRIP_MAX = 0.05, 0.35
STRIP_FLAT = 0.3  # rows with text on the background
STRIP_CLEAN = 0.97  # rows of background only


@dataclass(frozen=True)
class ImageFeatures:
    """Everything grouping needs about one image; small enough to keep thousands in memory."""

    width: int
    height: int
    format: str | None
    jpeg_quality: int | None
    phash: int
    dhash: int
    phash_center: int
    grid: np.ndarray
    thumb: np.ndarray
    phash_mirror: int = 0
    phash_strip: int = 0
    strip: tuple[float, float] = (0.0, 0.0)  # (top, bottom) caption strip, fractions of the height

    def to_bytes(self) -> bytes:
        """Compact serialisation for the per-image cache."""
        buffer = io.BytesIO()
        np.savez(
            buffer,
            meta=np.array([self.width, self.height, -1 if self.jpeg_quality is None else self.jpeg_quality]),
            format=np.array(self.format or ""),
            hashes=np.array(
                [self.phash, self.dhash, self.phash_center, self.phash_mirror, self.phash_strip],
                dtype=np.uint64,
            ),
            strip=np.array(self.strip),
            grid=self.grid,
            thumb=self.thumb,
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ImageFeatures:
        with np.load(io.BytesIO(data)) as stored:
            width, height, quality = (int(v) for v in stored["meta"])
            phash, dhash, center, mirror, strip = (int(v) for v in stored["hashes"])
            top, bottom = (float(v) for v in stored["strip"])
            fmt = str(stored["format"]) or None
            return cls(
                width,
                height,
                fmt,
                None if quality < 0 else quality,
                phash,
                dhash,
                center,
                stored["grid"],
                stored["thumb"],
                mirror,
                strip,
                (top, bottom),
            )


def hash_to_int(value: imagehash.ImageHash) -> int:
    """An imagehash 64-bit hash as a Python int (bit order of `hash.flatten()`)."""
    return _bits_to_int(value.hash.flatten())


def _bits_to_int(bits: np.ndarray) -> int:
    """Booleans, first one most significant, as an int."""
    return int("".join("1" if bit else "0" for bit in bits), 2)


def _dct_rows(size: int, keep: int) -> np.ndarray:
    """The first `keep` rows of SciPy's unnormalised `size`-point DCT-II as a matrix."""
    k = np.arange(keep)[:, None]
    n = np.arange(size)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * n + 1) / (2 * size))


PHASH_SIDE, PHASH_BITS_SIDE = 32, 8
_PHASH_DCT = _dct_rows(PHASH_SIDE, PHASH_BITS_SIDE)


def perceptual_hash(image: Image.Image) -> int:
    """`imagehash.phash(image)` as an int, with its DCT as two small matrix products: SciPy's FFT,
    which imagehash imports for it, costs each worker 0.2-0.35 s to import for 32-point transforms.
    The low frequencies are rounded to 1e-6 so that a flat picture (all of them 0 but for float
    noise) hashes the same everywhere instead of by the noise's signs."""
    small = image.convert("L").resize((PHASH_SIDE, PHASH_SIDE), Image.Resampling.LANCZOS)
    low = np.round(_PHASH_DCT @ np.asarray(small, dtype=np.float64) @ _PHASH_DCT.T, 6)
    return _bits_to_int((low > np.median(low)).ravel())


def features_of_image(
    image: Image.Image, width: int, height: int, fmt: str | None = None, jpeg_quality: int | None = None
) -> ImageFeatures:
    """Features of an oriented RGB image (usually a reduced decode of a `width` x `height` photo)."""
    cx = round(image.width * (1 - CENTER_KEEP) / 2)
    cy = round(image.height * (1 - CENTER_KEEP) / 2)
    center = image.crop((cx, cy, image.width - cx, image.height - cy))
    grid = np.asarray(image.resize((GRID_SIDE, GRID_SIDE), Image.Resampling.BOX), dtype=np.uint8)
    thumb = image.copy()
    thumb.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BOX)
    phash = perceptual_hash(image)
    top, bottom = caption_strip(np.asarray(image.convert("L"), dtype=np.float32))
    if top or bottom:
        rows = image.height
        body = image.crop((0, round(top * rows), image.width, rows - round(bottom * rows)))
        phash_strip = perceptual_hash(body)
    else:
        phash_strip = phash
    return ImageFeatures(
        width=width,
        height=height,
        format=fmt,
        jpeg_quality=jpeg_quality,
        phash=phash,
        dhash=hash_to_int(imagehash.dhash(image)),
        phash_center=perceptual_hash(center),
        grid=grid,
        thumb=np.asarray(thumb, dtype=np.uint8),
        phash_mirror=perceptual_hash(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
        phash_strip=phash_strip,
        strip=(top, bottom),
    )


def caption_strip(gray: np.ndarray) -> tuple[float, float]:
    """(top, bottom) shares of the height taken by a plain caption strip: a run of rows from the
    edge that are mostly one flat background colour (text on it is allowed), ending at the photo.

    Only a strip of STRIP_MIN..STRIP_MAX counts, so a dark sky or a studio backdrop is not cut."""
    height = gray.shape[0]
    if height < 40:
        return 0.0, 0.0

    def run(rows: np.ndarray) -> float:
        background = float(np.median(rows[0]))
        flat = (np.abs(rows[: int(STRIP_MAX * height) + 1] - background) < 12).mean(axis=1)
        if flat[0] < STRIP_CLEAN:
            return 0.0
        # Text rows may break the background; the strip ends at its last clean row.
        broken = np.flatnonzero(flat < STRIP_FLAT)
        length = int(broken[0]) if len(broken) else len(flat)
        clean = np.flatnonzero(flat[:length] >= STRIP_CLEAN)
        share = (int(clean[-1]) + 1) / height if len(clean) else 0.0
        return share if STRIP_MIN <= share <= STRIP_MAX else 0.0

    return run(gray), run(gray[::-1])


def compute_features(
    path: Path, max_pixels: int, keep_native: Callable[[Image.Image], None] | None = None
) -> ImageFeatures:
    """Decode `path` reduced to about 256 px (EXIF orientation applied) and compute its features.

    A format the JPEG decoder cannot scale is decoded in full: `keep_native` is then handed that
    oriented RGB decode, so that the detail stage need not decode it again."""
    decoded = decode_oriented(path, max_pixels, draft_side=HASH_DECODE_SIDE)
    image = decoded.image
    if image.size == decoded.native_size:  # not DCT-scaled (a PNG, WebP...): box-reduce alike
        if keep_native is not None and decoded.format != "JPEG":  # a small JPEG decodes to grey itself
            keep_native(image)
        dct = draft_factor(*image.size, HASH_DECODE_SIDE)
        image = image.reduce(dct) if dct > 1 else image
    factor = max(image.size) // HASH_DECODE_SIDE
    if factor > 1:  # the hashes work at 32 px; a box reduction to ~256 px first is cheaper
        image = image.reduce(factor)
    quality = estimate_jpeg_quality(decoded.quantization)
    return features_of_image(image, *decoded.native_size, decoded.format, quality)
