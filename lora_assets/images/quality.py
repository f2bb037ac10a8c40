"""Per-image quality measures that become caption tags: what the LoRA should *not* learn.

Each measure is computed on the training copy; blur is judged relative to the subject's own
median (a soft portrait series is not all "blurry"), the others against fixed bars.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from lora_assets.images.detail import sharpness
from lora_assets.settings import FilterSettings

COMMON_SIDE = 768
NOISE_SIDE = 1024
QUALITY_VERSION = 1
BLOCKY = 1.8  # a q30 re-save measures 1.6-2.9, a q90+ photo 1.0-1.4
_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)


@dataclass(frozen=True)
class QualityMeasures:
    sharpness: float  # Laplacian variance / grey variance at a 768 px common scale
    colourfulness: float  # Hasler & Suesstrunk; below ~3 reads as black and white
    noise_sigma: float  # Immerkaer's estimate in the flattest half of a 1024 px crop, 8-bit units
    blockiness: float  # JPEG grid steps / other steps; 1.0 = none
    jpeg_quality: int | None
    effective_mp: float

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


def measure_quality(image: Image.Image, jpeg_quality: int | None, effective_mp: float) -> QualityMeasures:
    """Measure one training copy (8-bit RGB)."""
    small = image.copy()
    small.thumbnail((COMMON_SIDE, COMMON_SIDE), Image.Resampling.LANCZOS)
    gray_small = np.asarray(small.convert("L"), dtype=np.float64)
    contrast = float(gray_small.var()) + 1.0
    gray = np.asarray(image.convert("L"), dtype=np.float64)
    return QualityMeasures(
        sharpness=sharpness(gray_small) / contrast,
        colourfulness=_colourfulness(np.asarray(small, dtype=np.float64)),
        noise_sigma=_noise_sigma(_centre(gray, NOISE_SIDE)),
        blockiness=_blockiness(gray),
        jpeg_quality=jpeg_quality,
        effective_mp=effective_mp,
    )


def quality_flags(measures: Sequence[QualityMeasures], settings: FilterSettings) -> list[list[str]]:
    """Flag names per image: blurry, jpeg_artifacts, low_resolution, monochrome, noisy."""
    median_sharpness = float(np.median([m.sharpness for m in measures])) if measures else 0.0
    flags = []
    for m in measures:
        found = []
        if median_sharpness > 0 and m.sharpness < settings.blur_ratio * median_sharpness:
            found.append("blurry")
        if (
            m.jpeg_quality is not None and m.jpeg_quality < settings.artifact_quality
        ) or m.blockiness > BLOCKY:
            found.append("jpeg_artifacts")
        if m.effective_mp < settings.low_resolution_mp:
            found.append("low_resolution")
        if m.colourfulness < 3.0:
            found.append("monochrome")
        if m.noise_sigma > settings.noise_sigma:
            found.append("noisy")
        flags.append(found)
    return flags


def _centre(gray: np.ndarray, side: int) -> np.ndarray:
    height, width = gray.shape
    top, left = max(0, (height - side) // 2), max(0, (width - side) // 2)
    return gray[top : top + side, left : left + side]


def _colourfulness(rgb: np.ndarray) -> float:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def _noise_sigma(gray: np.ndarray) -> float:
    """Immerkaer (1996) over the flattest half of the image (texture is not noise)."""
    if gray.shape[0] < 8 or gray.shape[1] < 8:
        return 0.0
    g = gray
    response = sum(
        _IMMERKAER[i, j] * g[i : g.shape[0] - 2 + i, j : g.shape[1] - 2 + j]
        for i in range(3)
        for j in range(3)
    )
    gy, gx = np.gradient(g[1:-1, 1:-1])
    gradient = np.hypot(gx, gy)
    flat = gradient <= np.percentile(gradient, 50)
    return float(np.sqrt(np.pi / 2.0) / 6.0 * np.abs(response[flat]).mean())


def _blockiness(gray: np.ndarray) -> float:
    """Mean column step at the strongest phase of the 8-pixel grid over the mean elsewhere."""
    if gray.shape[1] < 32:
        return 1.0
    steps = np.abs(np.diff(gray, axis=1)).mean(axis=0)
    per_phase = np.array([steps[p::8].mean() for p in range(8)])
    strongest = int(np.argmax(per_phase))
    others = np.delete(per_phase, strongest).mean()
    return float(per_phase[strongest] / max(others, 1e-6))
